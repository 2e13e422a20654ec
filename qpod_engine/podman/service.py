"""The podman API service: where its socket is, and starting it on demand.

Stdlib only and tiny: the launcher checks the socket on every command (~0.1 ms) and runs
``podman --url`` against it, which skips the local podman start-up (~40 ms per command).
(``_socket`` rather than ``socket``, and subprocess imported only to start the service: the
launcher imports this module on every command.)

Where the socket is comes from podman itself (``podman info``: root ``/run/podman``, a user
``$XDG_RUNTIME_DIR/podman``, or without a login session podman's own fallback such as
``/tmp/podman-run-UID/podman``), asked once and cached in the state dir under a key of what
podman's answer depends on. One service per socket, whoever starts it: starters take a lock
file beside the socket and the first one's service is the one everybody uses.
"""

from __future__ import annotations

import _socket
import os
import time

from qpod_engine.base import paths
from qpod_engine.base.errors import EXIT_QPOD, QpodError
from qpod_engine.podman.userns import run_user_dir_usable

TYPE_CHECKING = False  # typing is not imported on the launcher's path
if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable

PODMAN_MISSING = "podman is not installed (apt-get install podman runc)"
DEFAULT_IDLE_SECONDS = 3600
START_TIMEOUT = 30.0  # a loaded 2-core machine can take seconds to start podman
CACHE_NAME = "podman-socket"


def podman_binary() -> str:
    """The podman qpod runs, once its rootless user namespace is known to be usable (repaired
    if a reboot or a killed session left it stale: see podman_userns)."""
    from qpod_engine.podman.userns import repair_if_stale

    exe = paths.find_program("podman")
    if not exe:
        raise QpodError(PODMAN_MISSING, EXIT_QPOD)
    repair_if_stale(exe, podman_env())
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


def resolution_key() -> str:
    """Everything podman's socket path depends on (pkg/util SocketPath/GetRuntimeDir): root or
    not, the uid, XDG_RUNTIME_DIR, whether /run/user/UID is usable, TMPDIR and HOME."""
    if not is_rootless():
        return "v1 root"
    uid = os.getuid()
    env = os.environ
    return (
        f"v1 uid={uid} xdg={env.get('XDG_RUNTIME_DIR', '')} run_user={int(run_user_dir_usable(uid))}"
        f" tmp={env.get('TMPDIR', '')} home={env.get('HOME', '')}"
    )


def _cache_file() -> str:
    return os.path.join(paths.state_dir(), CACHE_NAME)


def _read_cache(key: str) -> str | None:
    """The cached socket path; None when absent, unreadable, for another key, or not a file of
    ours closed to others (the socket qpod talks to is where containers are made: nobody else
    may choose it)."""
    from qpod_engine.base.errors import QpodError
    from qpod_engine.base.ownership import check_private_fd

    cache = _cache_file()
    try:
        with open(cache, encoding="utf-8") as f:
            check_private_fd(f.fileno(), cache)
            cached_key, _, path = f.read().partition("\n")
    except (OSError, ValueError, QpodError):
        return None
    path = path.strip()
    return path if cached_key == key and path.startswith("/") else None


def _write_cache(key: str, path: str) -> None:
    """Best effort: an unwritable state dir only means asking podman again next time."""
    from qpod_engine.base.fileio import private_dir

    target = _cache_file()
    tmp = f"{target}.{os.getpid()}.tmp"
    try:
        private_dir(os.path.dirname(target))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"{key}\n{path}\n")
        os.replace(tmp, target)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def ask_podman_socket() -> str:
    """``podman info --format {{.Host.RemoteSocket.Path}}``: podman's own answer, uncached."""
    import subprocess

    try:
        proc = subprocess.run(
            [podman_binary(), "info", "--format", "{{.Host.RemoteSocket.Path}}"],
            capture_output=True,
            text=True,
            env=podman_env(),
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
    except subprocess.TimeoutExpired:
        raise QpodError("cannot find the podman API socket: podman info took over 120 s", EXIT_QPOD) from None
    except OSError as err:
        raise QpodError(f"cannot find the podman API socket: cannot run podman: {err.strerror}", EXIT_QPOD) from None
    path = proc.stdout.strip()
    if proc.returncode != 0 or not path.startswith("/"):
        lines = [x.strip() for x in proc.stderr.splitlines() if x.strip() and "level=warning" not in x]
        why = lines[-1] if lines else f"exit {proc.returncode}, no socket path"
        raise QpodError(f"cannot find the podman API socket: podman info failed: {why} (qpod doctor)", EXIT_QPOD)
    return path


def socket_path() -> str:
    """The API socket: ``$QPOD_PODMAN_SOCKET``, else podman's own answer (cached: the launcher
    calls this on every command, and asking podman costs ~0.25 s)."""
    if os.environ.get("QPOD_PODMAN_SOCKET"):
        return os.environ["QPOD_PODMAN_SOCKET"]
    key = resolution_key()
    path = _read_cache(key)
    if path is None:
        path = ask_podman_socket()
        _write_cache(key, path)
    return path


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


def lock_path(socket: str) -> str:
    """The starters' lock: beside the socket, so every qpod (any config or state dir) of this
    podman instance shares it."""
    return socket + ".qpod-lock"


def ensure_service(idle_seconds: int = DEFAULT_IDLE_SECONDS, timeout: float = START_TIMEOUT) -> str:
    """Start ``podman system service`` on the socket when nothing answers there (as a user
    would expect: no systemd unit needed). Returns the socket URL."""
    path = socket_path()
    if answers(path):
        return f"unix://{path}"
    _start_service(path, idle_seconds, timeout)
    return f"unix://{path}"


def _cannot(err: OSError) -> QpodError:
    return QpodError(f"cannot start the podman API service: {err.filename}: {err.strerror}", EXIT_QPOD)


def _start_service(path: str, idle_seconds: int, timeout: float) -> None:
    from qpod_engine.base.fileio import flock_wait, make_dirs, private_dir

    deadline = time.monotonic() + timeout
    try:
        make_dirs(os.path.dirname(path), 0o700)
        private_dir(paths.state_dir())
        fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise _cannot(err) from None
    try:
        # quiet while it waits (parallel launches of make -j all wait for one start); the
        # give-up line names the lock and its holder
        flock_wait(fd, lock_path(path), timeout, say=lambda _line: None)
        if answers(path):  # whoever held the lock started it
            return
        previous = _recorded_service(fd, path)
        patience = min(deadline, time.monotonic() + timeout / 2)
        if previous is not None and _wait_answer(path, lambda: None if _is_service(previous, path) else 1, patience):
            return  # started by a qpod that died before it answered; it answers now
        if previous is not None:
            _stop(previous)  # stuck: one service per socket, never two
        # Two tries: the first podman to run in a fresh runtime dir (after a reboot, or /tmp
        # cleaned) resets that dir, and a service started then finds no directory to bind in.
        for attempt in (1, 2):
            try:
                make_dirs(os.path.dirname(path), 0o700)
            except OSError as err:
                raise _cannot(err) from None
            proc = _spawn(path, idle_seconds)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{proc.pid}\n".encode(), 0)
            if _wait_answer(path, proc.poll, deadline):
                return
            exited = proc.poll() is not None
            _stop(proc.pid)  # no orphan: a service that never answered is not left behind
            proc.poll()
            if not exited or attempt == 2 or time.monotonic() > deadline:
                log = os.path.join(paths.state_dir(), "podman-service.log")
                raise QpodError(
                    f"podman API service {'exited' if exited else 'did not answer'} on {path} "
                    f"(within {timeout:.0f} s; see {log})",
                    EXIT_QPOD,
                )
    finally:
        os.close(fd)


def _spawn(path: str, idle_seconds: int) -> subprocess.Popen[bytes]:
    import subprocess

    from qpod_engine.base.fileio import private_fd

    exe = podman_binary()
    log = os.path.join(paths.state_dir(), "podman-service.log")
    try:
        # a state file: 0600 whatever the umask (podman's messages name the user's paths), and
        # one an older qpod left open is closed
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "ab") as out:
            private_fd(fd)
            proc = subprocess.Popen(
                [exe, "system", "service", f"--time={idle_seconds}", f"unix://{path}"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=podman_env(),
                start_new_session=True,
                cwd="/",  # conmon inherits it: a deleted repository as cwd breaks every later container
            )
    except OSError as err:
        raise _cannot(err) from None
    return proc


def _recorded_service(fd: int, path: str) -> int | None:
    """The pid the last starter wrote in the lock file, if that process is still this socket's service."""
    try:
        pid = int(os.pread(fd, 32, 0).decode().strip() or "0")
    except (OSError, ValueError):
        return None
    return pid if pid > 0 and _is_service(pid, path) else None


def _is_service(pid: int, path: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state != b"Z" and b"service" in argv and f"unix://{path}".encode() in argv


def _wait_answer(path: str, poll: Callable[[], int | None], deadline: float) -> bool:
    """Until the socket answers (True), the service exits (``poll`` not None) or the deadline."""
    while time.monotonic() < deadline:
        if answers(path):
            return True
        if poll() is not None:
            return answers(path)
        time.sleep(0.02)
    return answers(path)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _stop(pid: int) -> None:
    import signal

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        end = time.monotonic() + 5.0
        while time.monotonic() < end:
            _reap(pid)
            if _gone(pid):
                return
            time.sleep(0.05)


def _gone(pid: int) -> bool:
    """Exited (a zombie counts: it serves nothing)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] == b"Z"
    except (OSError, IndexError):
        return True
