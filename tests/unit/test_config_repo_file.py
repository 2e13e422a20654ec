"""A repository declares its own environment in .qpod.yaml (an image, or a Containerfile built by
podman), used once the user allows its content, switched by a checkout with no qpod command in
between: the file's validation, the allow gate and its precedence, without podman (real git).
The same with real podman and real builds: tests/e2e/test_repository_file_environments.py."""

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from conftest import git, run_qpod

from qpod_engine.config import repo_file as repo_env
from qpod_engine.config import snapshot
from qpod_engine.routing.policy import decide


def commit(root: Path, files: dict[str, str], message: str) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", message, cwd=root)


def test_errors_in_the_repository_file_name_file_and_line(qpod_home: Path, make_repo: Callable[..., Path]) -> None:
    root = make_repo(
        "bad",
        {
            "README": "x\n",
            "ci/Containerfile": "FROM scratch\n",
            ".qpod.yaml": "commands: [make]\nimage: a\nbuild: ci/Containerfile\n",
        },
    )
    r = run_qpod("allow", cwd=root, input="")
    assert r.returncode == 2
    assert f"{root}/.qpod.yaml:3: give 'image' or 'build', not both" in r.stdout
    assert "not allowed: fix the problems above first" in r.stderr

    (root / ".qpod.yaml").write_text("image: a\nmounts: [relative:/x]\ncolour: blue\n")
    r = run_qpod("allow", cwd=root, input="")
    assert r.returncode == 2
    assert f"{root}/.qpod.yaml:3: unknown key 'colour'" in r.stdout
    assert f"{root}/.qpod.yaml:2: mount 'relative:/x': host path must be absolute" in r.stdout

    (root / ".qpod.yaml").write_text(
        "# a recipe that leaves the repository\nbuild:\n  containerfile: ../../etc/passwd\n"
    )
    r = run_qpod("allow", cwd=root, input="")
    assert r.returncode == 2 and f"{root}/.qpod.yaml:3: 'build: containerfile'" in r.stdout
    assert "leads outside the repository" in r.stdout
    assert not Path(os.environ["QPOD_CONFIG_DIR"], "allowed.json").exists()


def test_a_file_that_is_a_link_to_a_fifo_is_refused_not_waited_for(
    qpod_home: Path, make_repo: Callable[..., Path], tmp_path: Path
) -> None:
    root = make_repo("fifo")
    os.mkfifo(tmp_path / "pipe")
    (root / ".qpod.yaml").symlink_to(tmp_path / "pipe")
    r = run_qpod("allow", cwd=root, timeout=30)
    assert r.returncode == 2
    assert r.stderr == f"qpod: {root}/.qpod.yaml: cannot read: a symbolic link (qpod reads only a regular file)\n"


def test_a_file_asking_for_the_host_is_shown_literally_before_it_is_allowed(
    qpod_home: Path, make_repo: Callable[..., Path]
) -> None:
    evil = (
        "image: localhost/qpod-busybox:latest\n"
        "mounts: ['/:/host']\n"
        'cap_add: ["SYS_ADMIN\\e]0;pwned\\a"]\n'
        "run_as: root\n"
        "podman_options: {privileged: true}\n"
        "host: build-farm\n"
    )
    root = make_repo("evil", {"README": "x\n", ".qpod.yaml": evil})
    r = run_qpod("allow", cwd=root, input="")  # not a terminal: nothing is asked, nothing recorded
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "! mount of a host path outside the repository: /:/host" in r.stdout
    assert "! capabilities: SYS_ADMIN\\x1b]0;pwned\\x07" in r.stdout and "\x1b" not in r.stdout
    assert "! run_as: root" in r.stdout and '! podman options: {"privileged": true}' in r.stdout
    assert "! host: build-farm (commands run on the machine of that podman connection" in r.stdout
    assert "qpod allow --yes" in r.stderr
    assert not Path(os.environ["QPOD_CONFIG_DIR"], "allowed.json").exists()
    assert run_qpod("which", "make", cwd=root).stdout.startswith("host: not in a bound repository")
    assert "not allowed (review and use it with: qpod allow)" in run_qpod("status", cwd=root).stdout

    r = run_qpod("allow", "--yes", cwd=root)
    assert r.returncode == 0 and "! mount of a host path outside the repository: /:/host" in r.stdout
    record = Path(os.environ["QPOD_CONFIG_DIR"], "allowed.json")
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert list(json.loads(record.read_text())["allowed"]) == [str(root)]
    assert run_qpod("which", "make", cwd=root).stdout.startswith("container (.qpod.yaml)")


def test_an_explicit_binding_wins_and_init_without_env_takes_the_file(
    qpod_home: Path, make_repo: Callable[..., Path]
) -> None:
    root = make_repo("both", {"README": "x\n", ".qpod.yaml": "image: localhost/img:1\ncommands: [make, bazel]\n"})
    assert run_qpod("env", "add", "bb", "--image", "localhost/bb:1").returncode == 0
    assert run_qpod("init", "bb", cwd=root).returncode == 0
    r = run_qpod("allow", cwd=root)
    assert r.returncode == 0 and "explicit binding to environment 'bb' still wins" in r.stdout
    assert run_qpod("which", "bazel", cwd=root).stdout.startswith("host: 'bazel' is not routed by environment 'bb'")
    assert "bb (repository binding, wins over its .qpod.yaml)" in run_qpod("status", cwd=root).stdout

    r = run_qpod("init", cwd=root)  # no ENV: the file, shown, allowed and bound in one step
    assert r.returncode == 0 and "image: localhost/img:1" in r.stdout, r.stderr
    assert run_qpod("which", "bazel", cwd=root).stdout.startswith(
        "container (.qpod.yaml): 'bazel' is a command of the repository file .qpod.yaml"
    )
    assert "environment:  repository file .qpod.yaml (allowed)" in run_qpod("status", cwd=root).stdout

    r = run_qpod("deny", cwd=root)
    assert r.returncode == 0 and "its commands run on the host" in r.stdout
    assert run_qpod("which", "make", cwd=root).stdout.startswith("host: not in a bound repository")


def test_a_branch_rule_wins_on_its_branches_and_the_file_applies_on_the_others(
    qpod_home: Path, make_repo: Callable[..., Path]
) -> None:
    root = make_repo("rules", {".qpod.yaml": "image: localhost/img:1\n"})
    assert run_qpod("env", "add", "old", "--image", "localhost/old:1").returncode == 0
    assert run_qpod("init", "old", "--branch", "release/*", cwd=root).returncode == 0
    r = run_qpod("allow", cwd=root)
    assert r.returncode == 0 and "uses its .qpod.yaml" in r.stdout, r.stdout
    assert run_qpod("which", "make", cwd=root).stdout.startswith("container (.qpod.yaml)")
    git("checkout", "-q", "-b", "release/2018.3", cwd=root)
    assert run_qpod("which", "make", cwd=root).stdout.startswith("container (old)")
    assert (
        "old (branch 'release/2018.3' matches rule 'release/*', wins over its .qpod.yaml)"
        in run_qpod("status", cwd=root).stdout
    )


def test_a_checkout_switches_the_environment_with_no_qpod_command_between(
    qpod_home: Path, make_repo: Callable[..., Path]
) -> None:
    root = make_repo("switch", {"README": "x\n", ".qpod.yaml": "image: localhost/one:1\ncommands: [make]\n"})
    git("checkout", "-q", "-b", "other", cwd=root)
    commit(root, {".qpod.yaml": "image: localhost/two:2\ncommands: [make, waf]\n"}, "two")
    git("checkout", "-q", "-b", "none", cwd=root)
    git("rm", "-q", ".qpod.yaml", cwd=root)
    git("commit", "-q", "-m", "no file", cwd=root)
    for branch in ("master", "other"):
        git("checkout", "-q", branch, cwd=root)
        assert run_qpod("allow", cwd=root).returncode == 0

    def where(cmd: str) -> tuple[str, str | None, str | None]:
        snap = snapshot.load()  # what the launcher does: recompiled when a watched file changed
        d = decide(f"/usr/bin/{cmd}", [cmd], str(root), snapshot.targets(snap))
        env = (
            snapshot.environment_entry(snap, d.target.environment, d.target.root)
            if d.target and d.target.environment
            else None
        )
        return d.where, env and env.get("image"), d.target.why if d.target else None

    assert where("make")[:2] == ("container", "localhost/two:2") and where("waf")[0] == "container"
    git("checkout", "-q", "master", cwd=root)
    assert where("make")[:2] == ("container", "localhost/one:1") and where("waf")[0] == "host"
    git("checkout", "-q", "none", cwd=root)
    assert where("make") == ("host", None, "no .qpod.yaml in the checked-out tree")
    git("checkout", "-q", "other", cwd=root)
    assert where("make")[:2] == ("container", "localhost/two:2")
    (root / ".qpod.yaml").write_text("image: localhost/two:2\ncommands: [make, waf, ls]\n")  # an edit: gated
    assert where("make") == ("container", None, "repository file .qpod.yaml (changed, not allowed: run qpod allow)")
    assert run_qpod("which", "make", cwd=root).stdout == (
        "container (.qpod.yaml): 'make' is a command of the repository file .qpod.yaml; it would fail (exit 125): "
        f"{root}/.qpod.yaml: changed since you allowed it; review and allow it with 'qpod allow' in {root} "
        "(or 'qpod deny')\n"
    )
    assert where("ls")[0] == "host"  # an unallowed file's own list routes nothing
    assert repo_env.waiting(snapshot.load()) == [
        (str(root), repo_env.gate_message(str(root / ".qpod.yaml"), str(root), changed=True))
    ]


def test_a_missing_containerfile_fails_in_one_line_and_its_return_is_seen(
    qpod_home: Path, make_repo: Callable[..., Path]
) -> None:
    root = make_repo("recipe", {".qpod.yaml": "build: ci/Containerfile\n", "ci/Containerfile": "FROM scratch\n"})
    assert run_qpod("allow", cwd=root).returncode == 0
    (root / "ci" / "Containerfile").unlink()
    r = run_qpod("exec", "true", cwd=root)
    assert (r.returncode, r.stderr) == (
        125,
        f"qpod: {root}/.qpod.yaml:1: 'build: containerfile': 'ci/Containerfile' is not a file in the repository\n",
    )
    git("checkout", "-q", "--", "ci/Containerfile", cwd=root)  # back: the next command sees it, no qpod between
    assert run_qpod("which", "make", cwd=root).stdout.startswith(
        "container (.qpod.yaml): 'make' is a command of the repository file .qpod.yaml"
    )
    assert "it would fail" not in run_qpod("which", "make", cwd=root).stdout


def test_the_gate_names_a_hostile_path_literally_in_one_line(qpod_home: Path, make_repo: Callable[..., Path]) -> None:
    root = make_repo("evil\x1b]0;title\x07-\u202erepo", {".qpod.yaml": "image: localhost/none:1\n"})
    assert run_qpod("allow", cwd=root).returncode == 0
    (root / ".qpod.yaml").write_text("image: localhost/none:2\n")
    r = run_qpod("exec", "true", cwd=root)
    shown = str(root).replace("\x1b", "\\x1b").replace("\x07", "\\x07").replace("\u202e", "\\u202e")
    assert r.returncode == 125 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(
        f"qpod: {shown}/.qpod.yaml: changed since you allowed it; review and allow it with 'qpod allow' in {shown}"
    )
    assert "\x1b" not in r.stderr and "\u202e" not in r.stderr


def test_init_without_env_needs_a_file_and_asks_at_a_terminal(qpod_home: Path, make_repo: Callable[..., Path]) -> None:
    import pty

    plain = make_repo("plain")
    r = run_qpod("init", cwd=plain)
    assert (
        r.returncode == 2
        and "no .qpod.yaml at the repository's root; bind an environment with: qpod init ENV" in r.stderr
    )

    root = make_repo("asks", {".qpod.yaml": "image: localhost/none:1\ncap_add: [SYS_PTRACE]\n"})
    for answer, status in (("n\n", 1), ("y\n", 0)):
        leader, follower = pty.openpty()
        try:
            os.write(leader, answer.encode())  # typed ahead: the terminal keeps it for the prompt
            p = subprocess.run(
                [sys.executable, "-m", "qpod_engine.cli", "init"],
                cwd=root,
                stdin=follower,
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            os.close(leader)
            os.close(follower)
        assert p.returncode == status, (p.stdout, p.stderr)
        assert "! capabilities: SYS_PTRACE" in p.stdout and "allow it? [y/N] " in p.stdout
        assert Path(os.environ["QPOD_CONFIG_DIR"], "allowed.json").exists() == (status == 0)
    assert run_qpod("which", "make", cwd=root).stdout.startswith("container (.qpod.yaml)")


def test_a_repository_file_cannot_build_for_another_host(qpod_home: Path, make_repo: Callable[..., Path]) -> None:
    root = make_repo(
        "farbuild", {"Containerfile": "FROM scratch\n", ".qpod.yaml": "host: build1\nbuild: Containerfile\n"}
    )
    r = run_qpod("allow", cwd=root, input="")
    assert r.returncode == 2 and "not allowed: fix the problems above first" in r.stderr, r.stderr
    assert (
        f"error: {root}/.qpod.yaml:2: 'build' with 'host' is not supported: build the image on that host and "
        "name it with 'image'"
    ) in r.stdout, r.stdout


def test_the_review_of_a_changed_file_shows_what_changed_since_the_version_allowed(
    qpod_home: Path, make_repo: Callable[..., Path]
) -> None:
    """A checkout that changes .qpod.yaml needs 'qpod allow' again: the review says what changed
    since the version allowed last (a diff, shown literally like the rest), not only the whole file."""
    root = make_repo("changing", {"README": "x\n", ".qpod.yaml": "image: localhost/img:1\ncommands: [make]\n"})
    r = run_qpod("allow", "--show", cwd=root)
    assert r.returncode == 0 and "changed since" not in r.stdout  # nothing allowed before: no diff
    assert run_qpod("allow", "--yes", cwd=root).returncode == 0
    commit(root, {".qpod.yaml": 'image: localhost/img:1\ncommands: [make]\nenv: {EVIL: "\\e]0;x\\a"}\n'}, "more")
    r = run_qpod("allow", "--show", cwd=root)
    assert r.returncode == 0, r.stderr
    assert "  changed since the version allowed " in r.stdout, r.stdout
    assert '  +env: {EVIL: "\\e]0;x\\a"}' in r.stdout and "\x1b" not in r.stdout, r.stdout
    assert "  -image" not in r.stdout and "   commands: [make]" in r.stdout  # context, unchanged
    assert run_qpod("allow", "--yes", cwd=root).returncode == 0
    assert "changed since" not in run_qpod("allow", "--show", cwd=root).stdout  # allowed as it is now
