"""``qpod tui`` in a real terminal (tmux) against real podman, acting on real redirected commands:
a ``qpod exec sleep`` interrupted from the running list (``x``, Enter) ends within seconds, its
process gone from the container and its record saying SIGINT; the stop confirmation of a
container names the command running in it, and that command's record says who stopped it."""

import os
import signal
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, container_processes, podman_available, run_qpod, wait_until
from tmux_driver import Tmux

from qpod_engine.config.containers import container_name
from qpod_engine.log import cmdlog

pytestmark = [pytest.mark.podman, pytest.mark.skipif(not podman_available(), reason="podman is not installed")]
DEADLINE = 180.0  # a guard against a hang on a loaded 2-core machine, never a measure


def start_command(root: str, *argv: str) -> subprocess.Popen[bytes]:
    """``qpod exec ARGV`` in the repository, as a user starts it (SIGINT not ignored)."""
    return subprocess.Popen(
        [sys.executable, "-m", "qpod_engine.cli", "exec", "--", *argv],
        cwd=root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def record_of(argv: list[str]) -> dict | None:
    """The complete record of the command ``argv`` (None while it runs)."""
    done = [r for r in cmdlog.recent() if r.get("argv") == argv and r.get("status") is not None]
    return done[-1] if done else None


def running_in_container(root: str, word: str) -> bool:
    return any(word in cmd for _state, cmd in container_processes(root))


def test_interrupt_a_running_command_and_stop_a_busy_container_from_the_dashboard(bound_repo, qpod_home):
    root = os.path.realpath(bound_repo)
    assert run_qpod("exec", "true", cwd=root).returncode == 0  # the container runs
    name = container_name("bb", root)
    env = {
        "QPOD_CONFIG_DIR": os.environ["QPOD_CONFIG_DIR"],
        "QPOD_STATE_DIR": os.environ["QPOD_STATE_DIR"],
        "TERM": "xterm-256color",
        "PYTHONPATH": str(REPO_ROOT),
    }
    sleeper = start_command(root, "sleep", "611")
    tui = Tmux(f"{sys.executable} -m qpod_engine.cli tui --view log", env=env, width=180, height=45, cwd=root)
    stopped: subprocess.Popen[bytes] | None = None
    try:
        tui.wait_for("1 running", timeout=DEADLINE)
        tui.wait_for("sleep 611", timeout=DEADLINE)
        wait_until(lambda: running_in_container(root, "sleep 611"), "sleep 611 in the container", DEADLINE)
        # x on the running command: the picker, SIGINT first; Enter sends it
        tui.send("x")
        screen = tui.wait_for("Send a signal to sleep 611", timeout=DEADLINE)
        assert "INT" in screen and "KILL" in screen and "USR2" in screen
        tui.send("Enter")
        # the client ends as its command did: killed by the same signal
        assert sleeper.wait(timeout=DEADLINE) == -signal.SIGINT, sleeper.stderr.read() if sleeper.stderr else ""
        rec = wait_until(lambda: record_of(["sleep", "611"]), "the record of sleep 611", DEADLINE)
        assert rec["status"] == 130
        # its record, the newest (the probe of the container above ended before it), opened
        wait_until(lambda: "1 running" not in tui.screen(), tui.screen, DEADLINE, 0.1)
        tui.send("End")
        tui.send("Enter")
        tui.wait_for("130 (SIGINT)", timeout=DEADLINE)
        tui.send("Escape")
        assert not running_in_container(root, "sleep 611")

        # the stop confirmation names what runs in the container; its record says who stopped it
        stopped = start_command(root, "sleep", "622")
        tui.wait_for("sleep 622", timeout=DEADLINE)
        wait_until(lambda: running_in_container(root, "sleep 622"), "sleep 622 in the container", DEADLINE)
        tui.send("3")
        tui.wait_for(name, timeout=DEADLINE)
        tui.send("s")
        screen = tui.wait_for(f"Stop container {name}?", timeout=DEADLINE)
        wait_until(lambda: "sleep 622" in tui.screen(), tui.screen, DEADLINE, 0.1)
        assert root in tui.screen() or "…" in tui.screen()
        tui.send("y")
        assert stopped.wait(timeout=DEADLINE) == -signal.SIGTERM, stopped.stderr.read() if stopped.stderr else ""
        rec = wait_until(lambda: record_of(["sleep", "622"]), "the record of sleep 622", DEADLINE)
        assert rec["status"] == 143 and rec.get("ended") == "was stopped by qpod tui", rec
        tui.send("q")
        tui.wait_dead(DEADLINE)
    finally:
        tui.kill()
        for p in (sleeper, stopped):
            if p is not None:
                p.kill()
                p.wait()


def test_a_command_typed_in_a_qpod_shell_is_interrupted_through_its_in_place_client(bound_repo, qpod_home):
    """A shell's fork child (bash forks; dash's vfork child execs the client) runs the client in
    place: its executable and command line stay the shell's, its name is qpod-client. The
    dashboard's check still knows it for the command's client, and SIGINT ends the command's
    group as Ctrl-C would."""
    from qpod_engine.log import signals

    root = os.path.realpath(bound_repo)
    script = os.path.join(root, "long.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\nsleep 613\necho not-reached\n")
    os.chmod(script, 0o755)
    assert run_qpod("exec", "true", cwd=root).returncode == 0  # the container runs: the fast path
    shell = subprocess.Popen(
        [sys.executable, "-I", "-m", "qpod_engine.cli.shell", "--shell", "/bin/bash", "-c", "./long.sh; echo after=$?"],
        cwd=root, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        wait_until(lambda: running_in_container(root, "sleep 613"), "the script in the container", DEADLINE)
        start = wait_until(
            lambda: next((r for r in cmdlog.recent() if r.get("argv") == ["./long.sh"] and cmdlog.is_start(r)), None),
            "the script's start record", DEADLINE,
        )  # fmt: skip
        with open(f"/proc/{start['pid']}/comm") as f:
            assert f.read().strip() == "qpod-client"
        assert "qpod-client" not in os.readlink(f"/proc/{start['pid']}/exe")  # run in place: the shell's
        said = signals.send(start, "INT")
        assert "its process group" in said, said
        out, err = shell.communicate(timeout=DEADLINE)
    finally:
        if shell.poll() is None:
            shell.kill()
    assert out == "after=130\n", (out, err)
    wait_until(lambda: not running_in_container(root, "sleep 613"), "the script's group gone", DEADLINE)
    assert (record_of(["./long.sh"]) or {}).get("status") == 130
