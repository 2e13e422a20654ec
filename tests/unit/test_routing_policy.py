"""The routing policy table: one pure function, the single source of truth."""

import pytest

from qpod_engine.config.snapshot import Target
from qpod_engine.routing.policy import decide

REPO = Target("/home/me/dev/mmsx", "centos7", ("make", "waf", "gdb"), "repository binding", "master")
INNER = Target("/home/me/dev/mmsx/vendor/lib", "lib-env", ("make",), "repository binding")
OFF = Target("/home/me/dev/other", None, (), "bound only for branches release/*; on branch 'master'")
TARGETS = [REPO, INNER, OFF]


@pytest.mark.parametrize(
    ("path", "argv", "cwd", "explicit", "where", "env", "reason"),
    [
        ("/usr/bin/make", ["make"], "/home/me/dev/mmsx", False, "container", "centos7", "'make' is a command"),
        ("/usr/bin/make", ["make", "-j4"], "/home/me/dev/mmsx/src/x", False, "container", "centos7", "command of"),
        ("/usr/bin/gdb", ["gdb", "./prog"], "/home/me/dev/mmsx", False, "container", "centos7", "command of"),
        ("/usr/bin/ls", ["ls"], "/home/me/dev/mmsx", False, "host", None, "'ls' is not routed"),
        ("/usr/bin/ls", ["ls"], "/home/me/dev/mmsx", True, "container", "centos7", "qpod exec"),
        (
            "/home/me/dev/mmsx/build/prog",
            ["./prog"],
            "/home/me/dev/mmsx/build",
            False,
            "container",
            "centos7",
            "program lives in bound repository",
        ),
        ("/home/me/dev/mmsx/tool", ["/home/me/dev/mmsx/tool"], "/tmp", False, "container", "centos7", "lives in"),
        ("/usr/bin/make", ["make"], "/home/me/dev/mmsx-other", False, "host", None, "not in a bound repository"),
        ("/usr/bin/make", ["make"], "/tmp", False, "host", None, "not in a bound repository"),
        ("/usr/bin/make", ["make"], "/home/me/dev/mmsx/vendor/lib/x", False, "container", "lib-env", "lib-env"),
        ("/usr/bin/gdb", ["gdb"], "/home/me/dev/mmsx/vendor/lib", False, "host", None, "'gdb' is not routed"),
        ("/usr/bin/make", ["make"], "/home/me/dev/other", False, "host", None, "bound only for branches"),
        ("/home/me/dev/other/prog", ["./prog"], "/home/me/dev/other", False, "host", None, "bound only"),
        ("/usr/bin/make", ["gmake-alias"], "/home/me/dev/mmsx", False, "container", "centos7", "'make'"),
    ],
)
def test_policy_table(
    path: str, argv: list[str], cwd: str, explicit: bool, where: str, env: str | None, reason: str
) -> None:
    d = decide(path, argv, cwd, TARGETS, explicit=explicit)
    assert d.where == where
    assert reason in d.reason
    if where == "container":
        assert d.target is not None and d.target.environment == env


def test_root_prefix_is_not_a_match() -> None:
    # /home/me/dev/mmsx2 is not inside /home/me/dev/mmsx
    assert decide("/usr/bin/make", ["make"], "/home/me/dev/mmsx2", [REPO]).where == "host"
