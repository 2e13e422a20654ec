"""qpod-shell: the user's shell in qpod mode. First its own behaviour (no podman needed), then a
real terminal (tmux) with bash, zsh and dash, a repository bound to the Debian 11 environment,
and commands typed as a person would."""

import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import container_processes, remove_containers_of, run_qpod, wait_until
from tmux_driver import Tmux

from qpod_engine.base import paths
from qpod_engine.routing import preload_lib

PKG_DIR = paths.PACKAGE_DIR  # what qpod-shell names: the installed qpod_engine package
needs_lib = pytest.mark.skipif(
    not preload_lib.library_path().is_file(), reason="qpod is not installed with its library (pip install -e .)"
)


def qpod_shell(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("QPOD_SHELL")}
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "qpod_engine.cli.shell", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ---- qpod-shell itself -------------------------------------------------------------------------


@needs_lib
@pytest.mark.parametrize("shell", ["/bin/bash", "/usr/bin/zsh", "/bin/dash"])
def test_qpod_shell_starts_the_shell_in_qpod_mode(qpod_home: Path, shell: str) -> None:
    if not os.path.exists(shell):
        pytest.skip(f"{shell} is not installed")
    r = qpod_shell(
        "-c",
        'echo "$QPOD_SHELL|$LD_PRELOAD|$QPOD_PRELOAD|$QPOD_RULES"; exit 3',
        env={"SHELL": shell, "ZDOTDIR": str(qpod_home)},
    )
    assert r.returncode == 3  # the shell's own status
    assert r.stderr == ""  # no banner with -c: scripts read qpod-shell's stderr (the tmux test sees it)
    state = os.environ["QPOD_STATE_DIR"]
    assert r.stdout.strip() == f"1|{preload_lib.preload_entry()}|{preload_lib.library_path()}|{state}/rules"
    assert (Path(state) / "rules").read_text().startswith("qpod-rules\t1\n")  # compiled at start
    # --shell wins over $SHELL
    r = qpod_shell("--shell", "dash", "-c", "echo $0", env={"SHELL": "/bin/bash"})
    dash = shutil.which("dash")
    assert r.stdout.strip() == dash and r.stderr == ""


@needs_lib
def test_nested_qpod_shell_loads_the_library_once(qpod_home: Path, tmp_path: Path) -> None:
    other = tmp_path / "libother.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(other), "-x", "c", "/dev/null"], check=True)
    inner = f"{sys.executable} -m qpod_engine.cli.shell -c 'echo \"$LD_PRELOAD\"'"
    r = qpod_shell("--shell", "/bin/bash", "-c", inner, env={"LD_PRELOAD": str(other)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{preload_lib.preload_entry()}:{other}"
    assert r.stderr == ""


@needs_lib
def test_unusable_rules_warn_once_and_everything_runs_on_the_host(
    tmp_path: Path, make_repo: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("QPOD_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("QPOD_STATE_DIR", str(blocker / "state"))  # cannot be created
    repo = make_repo("r", {"Makefile": "all:\n\t@echo host-make\n"})
    r = qpod_shell("--shell", "/bin/bash", "-c", "make -s; ls >/dev/null; make -s; true", cwd=repo)
    assert r.returncode == 0
    assert r.stdout.split() == ["host-make", "host-make"]
    warnings = [line for line in r.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "every command runs on the host" in warnings[0], r.stderr
    assert r.stderr.count("\n") == 1  # the warning, nothing per command (and no banner with -c)


def test_qpod_shell_reports_a_missing_shell(qpod_home: Path) -> None:
    r = qpod_shell("--shell", "/nonexistent/shell", "-c", "true")
    assert r.returncode == 125 and "shell not found" in r.stderr


# ---- a real terminal, a real container ---------------------------------------------------------


OLD_C = r"""
#include <stdio.h>
int main(void) {
    char v[64] = "?";
    FILE *f = fopen("/etc/debian_version", "r");
    if (f) { fscanf(f, "%63s", v); fclose(f); }
    printf("prog-runs-on-debian-%c%c\n", v[0], v[1] == '.' ? ' ' : v[1]);
    return 0;
}
"""
MAKEFILE = """\
prog: prog.c
\tgcc -O1 -o prog prog.c
long:
\t@echo long-started; sleep 37.25; echo long-finished
where:
\t@echo make-runs-on-debian-$$(cut -d. -f1 /etc/debian_version)
"""


@pytest.fixture
def bound_deb11(qpod_home: Path, make_repo: Callable[..., Path], debian11_image: str) -> Iterator[Path]:
    root = make_repo("legacy-" + uuid.uuid4().hex[:6], {"prog.c": OLD_C, "Makefile": MAKEFILE})
    assert run_qpod("env", "add", "deb11", "--image", debian11_image).returncode == 0
    r = run_qpod("init", "deb11", cwd=root)
    assert r.returncode == 0, r.stderr
    yield root
    remove_containers_of(str(root))


def _host_debian() -> str:
    return Path("/etc/debian_version").read_text().split(".")[0]


def _sleepers(root: Path) -> list[str]:
    """The long target's sleep, in the repository's container (the test's own processes)."""
    return [cmd for _, cmd in container_processes(root) if cmd == "sleep 37.25"]


class Session:
    """qpod-shell in tmux; each command is followed by a marker the shell computes, so the
    screen holds it only once the command finished (the typed line shows the formula)."""

    def __init__(self, tmux: Tmux) -> None:
        self.tmux, self.n = tmux, 0

    def run(self, command: str, timeout: float = 120) -> str:
        self.n += 1
        self.tmux.type(f'{command}; echo "DONE-$((1000+{self.n}))-$?"')
        screen = self.tmux.wait_for(f"DONE-{1000 + self.n}-", timeout)
        start = screen.rfind(f"DONE-$((1000+{self.n}))")
        return screen[start:]

    def status(self, out: str) -> int:
        m = re.search(rf"DONE-{1000 + self.n}-(\d+)", out)
        assert m, out
        return int(m.group(1))


@needs_lib
@pytest.mark.podman
@pytest.mark.demo
@pytest.mark.parametrize("shell", ["/bin/bash", "/usr/bin/zsh", "/bin/dash"])
def test_qpod_shell_in_a_terminal(bound_deb11: Path, tmp_path: Path, shell: str) -> None:
    if not os.path.exists(shell):
        pytest.skip(f"{shell} is not installed")
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    unbound = tmp_path / "unbound"
    unbound.mkdir()
    (unbound / "Makefile").write_text(MAKEFILE)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".zshrc").write_text("")  # no zsh first-run wizard
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "SHELL": shell,
        "TERM": "xterm",
        "LANG": "C.UTF-8",
        "ZDOTDIR": str(home),
        "ENV": "",
        "QPOD_CONFIG_DIR": os.environ["QPOD_CONFIG_DIR"],
        "QPOD_STATE_DIR": os.environ["QPOD_STATE_DIR"],
    }
    tmux = Tmux(f"{sys.executable} -m qpod_engine.cli.shell", env=env, cwd=str(tmp_path))
    try:
        tmux.wait_for(f"launching {shell} in qpod mode (using qpod in {PKG_DIR})")
        s = Session(tmux)
        assert "1" in s.run("echo qpod=$QPOD_SHELL")
        s.run(f"cd {bound_deb11}")
        # make builds in the container, with its gcc 10
        out = s.run("make", timeout=300)
        assert s.status(out) == 0 and "gcc -O1 -o prog prog.c" in out, out
        comment = subprocess.run(
            ["readelf", "-p", ".comment", str(bound_deb11 / "prog")], capture_output=True, text=True
        ).stdout
        assert "GCC: (Debian 10." in comment, comment
        # a program of the repository runs in the container too
        out = s.run("./prog")
        assert "prog-runs-on-debian-11" in out and s.status(out) == 0
        # ls and cat are the host's
        out = s.run("ls prog.c && cat /etc/debian_version | cut -d. -f1")
        assert f"\n{_host_debian()}" in out and s.status(out) == 0
        # a missing command: the shell's usual message and 127
        out = s.run("qpod-no-such-command")
        assert "not found" in out and s.status(out) == 127
        # a clean environment is still redirected
        out = s.run("env -i PATH=/usr/bin:/bin make -s where")
        assert "make-runs-on-debian-11" in out and s.status(out) == 0
        # Ctrl-C during a long make stops it, in the container
        tmux.type("make -s long")
        tmux.wait_for("long-started", 120)
        wait_until(lambda: _sleepers(bound_deb11), "the sleep in the container", 20)
        tmux.send("C-c")
        wait_until(lambda: not _sleepers(bound_deb11), "the command to end after Ctrl-C", 20)
        # make's own message: "Interrupt", or, now and then, "wait: No child processes.  Stop."
        # (make 4.3 under any 'podman exec -t' does that on Ctrl-C: seen without qpod too)
        tmux.wait_for_any(("Interrupt", "No child processes"))
        out = s.run("true")
        assert "long-finished" not in tmux.screen()
        # make in an unbound directory runs on the host
        s.run(f"cd {unbound}")
        out = s.run("make -s where")
        assert f"make-runs-on-debian-{_host_debian()}" in out and s.status(out) == 0
        # the log has the redirected commands, and only those
        log = [x for x in run_qpod("log", "--json").stdout.splitlines() if "/proc/[0-9]" not in x]
        assert len(log) == 4, log  # make, ./prog, env -i make, make long (not the test's looks in the container)
        tmux.type("exit")
        tmux.wait_dead(20)
        assert "cannot be preloaded" not in tmux.screen()
    finally:
        tmux.kill()  # what still runs in the container goes with it (bound_deb11 removes it)
