"""A command whose container is stopped under it ends as its signal ends it natively (143 for
SIGTERM, not qpod's 125), with one line saying the container was stopped and by what, and its
log record says so too."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_qpod, wait_until

pytestmark = pytest.mark.podman


def start_long_command(root: Path) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        [sys.executable, "-I", "-m", "qpod_engine.cli", "exec", "sh", "-c", "echo started; sleep 300"],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert p.stdout is not None and p.stdout.readline() == "started\n"
    return p


def last_record(root: Path) -> dict:
    lines = run_qpod("log", "--json", "-n", "1").stdout.splitlines()
    return json.loads(lines[-1])


@pytest.mark.parametrize("how", ["qpod stop", "podman rm -f"])
def test_a_stopped_container_ends_its_command_as_its_signal_does(bound_repo: Path, how: str) -> None:
    p = start_long_command(bound_repo)
    try:
        if how == "qpod stop":
            assert run_qpod("stop", "bb").returncode == 0
            by = "was stopped by qpod stop"
        else:
            env = {**os.environ, "QPOD_OFF": "1"}
            ids = subprocess.run(["podman", "ps", "-q", "--filter", f"label=qpod.repo={bound_repo}"],
                                 capture_output=True, text=True, env=env).stdout.split()  # fmt: skip
            assert ids and subprocess.run(["podman", "rm", "-f", *ids], capture_output=True, env=env).returncode == 0
            by = "outside qpod"
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    # killed by the signal that stopped it, as natively (the client raises it on itself)
    assert p.returncode in (-signal.SIGTERM, -signal.SIGKILL), (p.returncode, err)
    assert len(err.strip().splitlines()) == 1 and by in err and "lost the agent" not in err, err
    rec = last_record(bound_repo)
    assert rec["status"] == 128 - p.returncode and by in rec["ended"], rec


def test_a_container_whose_processes_were_killed_behind_podman_is_made_again(bound_repo: Path) -> None:
    """A session killed with its containers' processes (or a machine restored from a snapshot)
    leaves podman believing they run; podman can then neither stop nor start them ("cannot
    start a container that has stopped"). The next command makes the container again (before:
    125 after a 15 s wait, and the container left 'Stopping'; the demo failed so on re-run)."""
    assert run_qpod("exec", "true", cwd=bound_repo).returncode == 0
    env = {**os.environ, "QPOD_OFF": "1"}
    name = subprocess.run(["podman", "ps", "--format", "{{.Names}}", "--filter", f"label=qpod.repo={bound_repo}"],
                          capture_output=True, text=True, env=env).stdout.split()  # fmt: skip
    assert len(name) == 1, name
    state = json.loads(subprocess.run(["podman", "inspect", name[0]], capture_output=True, text=True, env=env).stdout)
    old_id, pid, conmon = state[0]["Id"], state[0]["State"]["Pid"], state[0]["State"]["ConmonPid"]
    for p in (conmon, pid):
        os.kill(p, signal.SIGKILL)
    wait_until(lambda: not os.path.exists(f"/proc/{pid}") and not os.path.exists(f"/proc/{conmon}"),
               "the container's processes to end", timeout=120)  # fmt: skip
    r = run_qpod("exec", "sh", "-c", "echo again; exit 7", cwd=bound_repo, timeout=120)
    assert (r.returncode, r.stdout, r.stderr) == (7, "again\n", ""), r
    state = json.loads(subprocess.run(["podman", "inspect", name[0]], capture_output=True, text=True, env=env).stdout)
    assert state[0]["State"]["Status"] == "running" and state[0]["Id"] != old_id, state[0]["State"]
