"""What qpod does not control (argv, repository paths, branch and image names, podman's errors)
is shown literally. In text output control characters are escaped (ESC as
``\\x1b``, a newline as ``\\n``), so a logged argv cannot set the terminal title, clear the
screen or fake a log line; in the TUI nothing is parsed as markup (``[/bold]`` in a path
crashed ``qpod tui`` at start, ``[link=...]`` made a link). Real terminals (tmux), real podman."""

import json
import os
import shlex
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import REPO_ROOT, podman_available, remove_containers_of, run_qpod, wait_until
from tmux_driver import Tmux

from qpod_engine.base.textsafe import visible
from qpod_engine.log import cmdlog

TITLE = "\x1b]0;pwned\x07"
CLEAR = "\x1b[2J"
FAKE = "a\n2026-01-01T00:00:00        0      0.01s  fake  /fake  rm -rf ~"
MARKUP = "[/bold]"
LINK = "x[link=https://evil.example]click"
HOSTILE_ARGV = ["true", TITLE, CLEAR, FAKE, MARKUP, LINK, "\u202eevil", "caf\u00e9 \u4e2d"]
DEADLINE = 180  # seconds: a loaded 2-core machine is slow, never this slow


def test_visible_escapes_like_repr_and_keeps_printable_text() -> None:
    assert visible(TITLE) == "\\x1b]0;pwned\\x07"
    assert visible("a\nb\tc\r") == "a\\nb\\tc\\r"
    assert visible("\u202eevil \x7f \x9b") == "\\u202eevil \\x7f \\x9b"
    assert visible("caf\u00e9 \u4e2d [b]") == "caf\u00e9 \u4e2d [b]"
    assert visible("/src/\udcffname") == "/src/\\xffname"  # an undecodable byte of a path
    assert visible("l1\nl2\x1b", keep_newlines=True) == "l1\nl2\\x1b"


def pane_title(tmux: Tmux) -> str:
    return subprocess.run(
        ["tmux", "display-message", "-p", "-t", tmux.name, "#{pane_title}"], capture_output=True, text=True
    ).stdout.strip()


def _qpod_env() -> dict[str, str]:
    return {
        "QPOD_CONFIG_DIR": os.environ["QPOD_CONFIG_DIR"],
        "QPOD_STATE_DIR": os.environ["QPOD_STATE_DIR"],
        "TERM": "xterm-256color",
        "PYTHONPATH": str(REPO_ROOT),
    }


def test_the_terminal_check_is_real(tmp_path: Path) -> None:
    """The control: the same bytes printed raw do set the pane title."""
    tmux = Tmux(f"{sys.executable} -c " + shlex.quote(f"import sys; sys.stdout.write({TITLE!r})"), width=100, height=20)
    try:
        tmux.wait_dead(DEADLINE)
        assert pane_title(tmux) == "pwned"
    finally:
        tmux.kill()


def test_qpod_log_prints_hostile_argv_literally(qpod_home: Path) -> None:
    cmdlog.append(
        {
            "time": "2026-01-01T00:00:00.000+00:00",
            "repo": "/src/r" + CLEAR,
            "env": "e" + TITLE,
            "cwd": "/src/r",
            "argv": HOSTILE_ARGV,
            "status": 0,
            "duration": 0.01,
        }
    )
    r = run_qpod("log")
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout and "\u202e" not in r.stdout
    assert r.stdout.count("\n") == 1  # one record, one line: no fake line
    assert "\\x1b]0;pwned\\x07" in r.stdout and "\\x1b[2J" in r.stdout and "a\\n2026" in r.stdout
    assert MARKUP in r.stdout and LINK in r.stdout  # brackets are not markup in a terminal
    raw = run_qpod("log", "--json").stdout
    assert json.loads(raw)["argv"] == HOSTILE_ARGV  # --json is exact (JSON escapes control characters)
    assert "\x1b" not in raw

    tmux = Tmux(f"{sys.executable} -m qpod_engine.cli log", env=_qpod_env(), width=200, height=20)
    try:
        tmux.wait_dead(DEADLINE)
        screen = tmux.screen()
        assert pane_title(tmux) != "pwned"
        assert "\\x1b]0;pwned\\x07" in screen and "fake  /fake  rm" in screen
        assert sum(ln.startswith("2026-01-01T00:00:00") for ln in screen.splitlines()) == 1  # no fake line
    finally:
        tmux.kill()


def test_status_repos_which_show_a_hostile_path_literally(qpod_home: Path, make_repo: Callable[..., Path]) -> None:
    # (a tab or a newline cannot be bound: the preload's rules could not claim it, see below)
    root = make_repo("r" + CLEAR + MARKUP + "|fake")
    assert run_qpod("env", "add", "e", "--image", "localhost/x:1").returncode == 0
    r = run_qpod("init", "e", "--branch", "x" + TITLE, cwd=root)
    assert r.returncode == 0, r.stderr
    for args in (
        ["init", "e"],
        ["status"],
        ["repos", "--no-podman"],
        ["which", "make"],
        ["which", "ls"],
        ["unbind", "--branch", "nope" + TITLE],
    ):
        r = run_qpod(*args, cwd=root)
        out = r.stdout + r.stderr
        assert "\x1b" not in out and "\x07" not in out, (args, out)
        assert "\\x1b[2J[/bold]|fake" in out or args[0] == "which", (args, out)
    assert run_qpod("repos", "--no-podman").stdout.count("\n") == 2  # header and one row
    # a newline in the path: refused in one line, the path shown literally
    odd = make_repo("n" + CLEAR + "\nfake")
    r = run_qpod("init", "e", cwd=odd)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "\x1b" not in r.stderr
    assert "\\x1b[2J\\nfake: qpod cannot watch a path with a tab or a newline" in r.stderr


@pytest.fixture
def hostile_bound_repo(qpod_home: Path, make_repo: Callable[..., Path], busybox_image: str):
    """A bound repository whose path holds markup and an escape sequence; its container runs and
    the log holds a record of a command with hostile arguments."""
    root = make_repo("bad" + MARKUP + "x[link=https://evil.example]y" + CLEAR + uuid.uuid4().hex[:4])
    assert run_qpod("env", "add", "bb", "--image", busybox_image).returncode == 0
    assert run_qpod("init", "bb", cwd=root).returncode == 0
    r = run_qpod("exec", *HOSTILE_ARGV, cwd=root)
    assert r.returncode == 0, r.stderr
    yield os.path.realpath(root)
    remove_containers_of(os.path.realpath(root))


@pytest.mark.podman
@pytest.mark.skipif(not podman_available(), reason="podman is not installed")
def test_ps_and_log_of_a_real_redirected_command(hostile_bound_repo: str) -> None:
    root = hostile_bound_repo
    for args in (["ps"], ["log"], ["status"], ["repos"]):
        r = run_qpod(*args, cwd=root)
        assert r.returncode == 0, (args, r.stderr)
        assert "\x1b" not in r.stdout and "\x07" not in r.stdout, (args, r.stdout)
    ps = run_qpod("ps").stdout
    assert visible(root) in ps and ps.count("\n") >= 2
    rec = json.loads(run_qpod("log", "--json").stdout.splitlines()[-1])
    assert rec["argv"] == HOSTILE_ARGV and rec["repo"] == root


@pytest.mark.podman
@pytest.mark.skipif(not podman_available(), reason="podman is not installed")
def test_qpod_tui_with_hostile_names_in_a_real_terminal(hostile_bound_repo: str) -> None:
    """The views start (a container of a repository named with markup crashed the app), the
    log row and the record show the argv escaped, ``c`` copies it without crashing, and the
    terminal's title is never set."""
    root = hostile_bound_repo
    env = {**_qpod_env(), "COLUMNS": "220", "LINES": "50"}
    tui = Tmux(f"{sys.executable} -m qpod_engine.cli tui --view containers", env=env, width=220, height=50, cwd=root)
    try:
        screen = tui.wait_for("running", timeout=DEADLINE)
        assert "bad[/bold]x[link=https:/evil.example]y\\x1b[2J" in screen, screen  # the path, literally
        tui.send("1")
        tui.wait_for("Branch rules", timeout=DEADLINE)
        tui.send("4")
        screen = tui.wait_for("pwned", timeout=DEADLINE)
        assert "\\x1b]0;pwned\\x07" in screen
        tui.send("c")
        tui.wait_for("copied:", timeout=DEADLINE)
        tui.send("Enter")
        screen = tui.wait_for("Command record", timeout=DEADLINE)
        assert "x[link=https://evil.example]click" in screen and "\\u202eevil" in screen
        tui.send("Escape")
        # and only then q: right after Escape it would be Alt+q
        wait_until(lambda: "Command record" not in tui.screen(), tui.screen, DEADLINE)
        assert not tui.dead(), tui.screen()
        assert pane_title(tui) != "pwned"
        tui.send("q")
        tui.wait_dead(DEADLINE)
        assert "Traceback" not in tui.screen()
    finally:
        tui.kill()
