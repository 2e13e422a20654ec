"""The podman API service: where its socket is, and starting it on demand.

Stdlib only and tiny: the launcher checks the socket on every command (~0.1 ms) and runs
``podman --url`` against it, which skips the local podman start-up (~40 ms per command).
(``_socket`` rather than ``socket``, and subprocess imported only to start the service: the
launcher imports this module on every command.)
"""

import _socket
import os
import time

from . import paths
from .errors import EXIT_QPOD, QpodError

PODMAN_MISSING = "podman is not installed (apt-get install podman runc)"
DEFAULT_IDLE_SECONDS = 3600


def podman_binary() -> str:
    exe = paths.find_program("podman")
    if not exe:
        raise QpodError(PODMAN_MISSING, EXIT_QPOD)
    return exe


def podman_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment qpod runs podman with: the caller's, minus the preload library and
    qpod's own variables, plus QPOD_OFF=1 so that a preload library still loaded in this
    process leaves podman and its children alone."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("QPOD_")}
    if extra:
        env.update(extra)
    env["QPOD_OFF"] = "1"
    return env


def is_rootless() -> bool:
    return os.geteuid() != 0


def socket_path() -> str:
    """The API socket: ``$QPOD_PODMAN_SOCKET``, else podman's own default for root or the user."""
    if os.environ.get("QPOD_PODMAN_SOCKET"):
        return os.environ["QPOD_PODMAN_SOCKET"]
    if not is_rootless():
        return "/run/podman/podman.sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    return os.path.join(runtime, "podman", "podman.sock")


def answers(path: str) -> bool:
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def ensure_service(idle_seconds: int = DEFAULT_IDLE_SECONDS) -> str:
    """Start ``podman system service`` on the socket when nothing answers there (as a user
    would expect: no systemd unit needed). Returns the socket URL."""
    path = socket_path()
    if answers(path):
        return f"unix://{path}"
    import subprocess

    exe = podman_binary()
    log = os.path.join(paths.state_dir(), "podman-service.log")
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.makedirs(paths.state_dir(), exist_ok=True)
    except OSError as err:
        raise QpodError(f"cannot start the podman API service: {err.filename}: {err.strerror}", EXIT_QPOD) from None
    env = podman_env()
    with open(log, "ab") as out:
        subprocess.Popen(
            [exe, "system", "service", f"--time={idle_seconds}", f"unix://{path}"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, start_new_session=True,
            cwd="/",  # conmon inherits it: a deleted repository as cwd breaks every later container
        )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if answers(path):
            return f"unix://{path}"
        time.sleep(0.02)
    raise QpodError(f"podman API service did not come up on {path} (see {log})", EXIT_QPOD)
