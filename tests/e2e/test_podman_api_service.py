"""The podman API service qpod starts on demand: its socket is podman's own answer (cached), and
there is one service per socket whoever starts it, with nothing left behind (real podman)."""

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO_ROOT, podman_available, wait_until

from qpod_engine.podman import service

pytestmark = [pytest.mark.podman, pytest.mark.skipif(not podman_available(), reason="podman is not installed")]


def services_on(path: str) -> list[int]:
    """Pids of 'podman system service ... unix://PATH' processes (not zombies)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{entry}/stat").read_bytes().rpartition(b")")[2].split()[0]
        except (OSError, IndexError):
            continue
        if b"service" in argv and f"unix://{path}".encode() in argv and state != b"Z":
            found.append(int(entry))
    return found


@pytest.fixture
def own_socket(tmp_path: Path, qpod_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A socket path of this test's own (QPOD_PODMAN_SOCKET); its services are ended afterwards."""
    path = str(tmp_path / "run" / "podman.sock")
    monkeypatch.setenv("QPOD_PODMAN_SOCKET", path)
    yield path
    for pid in services_on(path):
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not services_on(path), "the test's services to end")


def test_socket_path_is_podmans_answer_and_cached(
    qpod_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("QPOD_PODMAN_SOCKET", raising=False)
    podman_says = subprocess.run(
        ["podman", "info", "--format", "{{.Host.RemoteSocket.Path}}"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert service.socket_path() == podman_says
    cache = qpod_home / "state" / "podman-socket"
    assert cache.read_text() == f"{service.resolution_key()}\n{podman_says}\n"
    assert cache.stat().st_mode & 0o777 == 0o600
    # the launcher's hot path: answered from the cache, podman is not run again
    monkeypatch.setenv("PATH", str(tmp_path))
    assert service.socket_path() == podman_says
    # a cache written under another key (another XDG_RUNTIME_DIR, uid, ...) is not believed
    cache.write_text("v1 uid=4242 xdg=/elsewhere run_user=0 tmp= home=/x\n/elsewhere/podman.sock\n")
    with pytest.raises(service.QpodError, match="podman is not installed"):
        service.socket_path()


def test_concurrent_starters_share_one_service(own_socket: str) -> None:
    code = "from qpod_engine.podman import service; print(service.ensure_service(120))"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for _ in range(6)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, outs
    assert {o for o, _ in outs} == {f"unix://{own_socket}\n"}
    assert len(services_on(own_socket)) == 1
    assert service.answers(own_socket)
    # the lock file beside the socket names the one that runs
    assert int(Path(service.lock_path(own_socket)).read_text()) == services_on(own_socket)[0]


def test_a_stuck_service_is_replaced_not_doubled(own_socket: str) -> None:
    service.ensure_service(120)
    (stuck,) = services_on(own_socket)
    # alive and recorded in the lock file, but not answering on the socket (a connect to a stopped
    # service would still succeed from the listen backlog: its socket file goes too)
    os.kill(stuck, signal.SIGSTOP)
    os.unlink(own_socket)
    try:
        assert not service.answers(own_socket)
        url = service.ensure_service(120, timeout=20)
        assert url == f"unix://{own_socket}"
        wait_until(lambda: stuck not in services_on(own_socket), "the stuck service to be stopped")
        assert len(services_on(own_socket)) == 1 and service.answers(own_socket)
    finally:
        if stuck in services_on(own_socket):
            os.kill(stuck, signal.SIGKILL)


def test_service_that_cannot_start_is_one_line_and_leaves_nothing(
    tmp_path: Path, qpod_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    path = str(blocker / "podman.sock")  # its directory cannot exist
    monkeypatch.setenv("QPOD_PODMAN_SOCKET", path)
    with pytest.raises(service.QpodError) as info:
        service.ensure_service(60, timeout=20)
    message = str(info.value)
    assert message.startswith(f"cannot start the podman API service: {blocker}: ") and "\n" not in message
    assert services_on(path) == []
