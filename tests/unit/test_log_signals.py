"""qpod_engine/log/signals.py: a signal reaches a running command's client only when the
record's pid is still that client; SIGKILL writes the end record the client no longer can.

The client here is a copy of ``sleep`` named qpod-client (what the check looks at: the
executable's name, its start time, its command line ending with the record's argv); that the
real client forwards the signal to the command's group in its container is checked with real
podman in tests/e2e/test_tui_act_on_running_commands.py."""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import wait_until

from qpod_engine.base.errors import QpodError
from qpod_engine.log import cmdlog, signals

DEADLINE = 60.0


def stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}+00:00"


@pytest.fixture
def fake_client(tmp_path: Path):
    exe = tmp_path / "qpod-client"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", exe)
    started: list[subprocess.Popen[bytes]] = []

    def start(*, ignore_int: bool = False) -> subprocess.Popen[bytes]:
        def pre() -> None:
            if ignore_int:
                signal.signal(signal.SIGINT, signal.SIG_IGN)

        p = subprocess.Popen([str(exe), "600"], preexec_fn=pre)
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()
        p.wait()


def start_record(pid: int, when: float | None = None, argv: list[str] | None = None) -> dict:
    return {
        "id": f"t{pid:x}",
        "time": stamp(time.time() if when is None else when),
        "repo": "/src/a",
        "env": "e",
        "container": "qpod-e-a",
        "cwd": "/src/a",
        "argv": argv or ["600"],
        "pid": pid,
        "status": None,
    }


def test_a_signal_goes_to_the_client_of_the_record(qpod_home, fake_client):
    p = fake_client()
    said = signals.send(start_record(p.pid), "TERM")
    assert "SIGTERM" in said and "qpod-e-a" in said
    assert p.wait(timeout=DEADLINE) == -signal.SIGTERM


def test_sigint_is_sent_as_the_terminal_sends_it(qpod_home, fake_client):
    """Not as kill(2) would (the client gives those to the command's own process only): the
    process sees a signal whose origin is not kill's."""
    p = fake_client()
    said = signals.send(start_record(p.pid), "INT")
    assert "its process group" in said
    assert p.wait(timeout=DEADLINE) == -signal.SIGINT


def test_sigkill_writes_the_end_record(qpod_home, fake_client):
    p = fake_client()
    rec = start_record(p.pid, when=time.time() - 1)
    cmdlog.append(rec)
    said = signals.send(rec, "KILL")
    assert "killed" in said
    assert p.wait(timeout=DEADLINE) == -signal.SIGKILL
    merged = [r for r in cmdlog.recent() if r.get("id") == rec["id"]]
    assert len(merged) == 1
    assert merged[0]["status"] == 137 and "SIGKILL from qpod tui" in merged[0]["ended"]
    assert merged[0]["duration"] >= 0.5 and "started" not in merged[0]


def test_a_process_that_is_not_a_qpod_client_is_never_signalled(qpod_home):
    p = subprocess.Popen(["sleep", "600"])
    try:
        with pytest.raises(QpodError, match="no longer its qpod client"):
            signals.send(start_record(p.pid), "KILL")
        assert p.poll() is None
    finally:
        p.kill()
        p.wait()


def test_a_pid_taken_by_a_newer_process_is_never_signalled(qpod_home, fake_client):
    p = fake_client()
    with pytest.raises(QpodError, match="started after the command"):
        signals.send(start_record(p.pid, when=time.time() - 120), "TERM")
    with pytest.raises(QpodError, match="runs another command"):
        signals.send(start_record(p.pid, argv=["make", "all"]), "TERM")
    assert p.poll() is None


def test_an_ended_command_and_an_ignored_signal_are_said(qpod_home, fake_client):
    p = fake_client(ignore_int=True)
    wait_until(lambda: signals._ignored(p.pid, signal.SIGINT), "SIGINT ignored by the child", DEADLINE)
    with pytest.raises(QpodError, match="ignores SIGINT"):
        signals.send(start_record(p.pid), "INT")
    assert p.poll() is None
    p.kill()
    p.wait()
    with pytest.raises(QpodError, match="ended"):
        signals.send(start_record(p.pid), "TERM")
    with pytest.raises(QpodError, match="unknown signal"):
        signals.send(start_record(os.getpid()), "STOP")
    with pytest.raises(QpodError, match="not a running command"):
        signals.send({**start_record(os.getpid()), "status": 0}, "TERM")


def test_signal_names_of_statuses():
    assert signals.signal_name(130) == "SIGINT"
    assert signals.signal_name(143) == "SIGTERM"
    assert signals.signal_name(2) is None and signals.signal_name(None) is None and signals.signal_name(True) is None
