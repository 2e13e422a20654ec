"""Rootless podman's user namespace after a reboot or a killed session: found stale, repaired.

Rootless podman keeps its user namespace alive with a "pause" process, and remembers in its
runtime dir (``$XDG_RUNTIME_DIR/libpod/tmp``, or without a login session
``/tmp/podman-run-UID/libpod/tmp``) that it set itself up since boot. When that dir outlives
the processes, as /tmp on disk does across a reboot, or when a session's processes are all
killed, podman believes the warm containers qpod left running still run, finds neither their
conmon nor the pause process to join, and every podman command of that user fails ("invalid
internal status ... podman system migrate") until someone runs ``podman system migrate``.

qpod leaves warm containers running by design, so it meets this state first: before it runs
podman it looks (a stat and a kill(pid, 0) in the usual case) and, when the state is stale,
runs the documented repair once. The containers podman thought running are then "stopping",
which ``podman_backend.ensure_container`` replaces.

Stdlib only: ``service.podman_binary`` calls this on the launcher's path.
"""

from __future__ import annotations

import os

from qpod_engine.base import paths

TYPE_CHECKING = False  # typing is not imported on the launcher's path
if TYPE_CHECKING:
    from collections.abc import Mapping

MIGRATE_TIMEOUT = 120.0


def runtime_dir(env: Mapping[str, str] | None = None, uid: int | None = None) -> str:
    """podman's runtime dir for a rootless user (pkg/util GetRuntimeDir): XDG_RUNTIME_DIR, else
    /run/user/UID when it is the user's, else $TMPDIR (or /tmp)/podman-run-UID."""
    env = os.environ if env is None else env
    uid = os.getuid() if uid is None else uid
    if env.get("XDG_RUNTIME_DIR"):
        return env["XDG_RUNTIME_DIR"]
    if run_user_dir_usable(uid):
        return f"/run/user/{uid}"
    return os.path.join(env.get("TMPDIR") or "/tmp", f"podman-run-{uid}")


def run_user_dir_usable(uid: int) -> bool:
    """podman's test for /run/user/UID when XDG_RUNTIME_DIR is unset: the user's, rwx for them."""
    try:
        st = os.stat(f"/run/user/{uid}")
    except OSError:
        return False
    return st.st_uid == uid and st.st_mode & 0o700 == 0o700


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process now holds that pid: not our pause process
    return True


def _pause_alive(tmp_dir: str) -> bool:
    try:
        with open(os.path.join(tmp_dir, "pause.pid"), encoding="ascii") as f:
            pid = int(f.read().strip() or "0")
    except (OSError, ValueError):
        return False
    return pid > 0 and _alive(pid)


def _own_conmon_alive(uid: int) -> bool:
    """A conmon of this user runs: podman joins its namespace, no repair is needed."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True  # cannot tell: leave podman alone
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", encoding="utf-8", errors="replace") as f:
                head = f.read(1024)  # one read: name and uid of the same process
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in head.splitlines() if ":" in line)
        if fields.get("Name", "").strip() == "conmon" and fields.get("Uid", "").split()[:1] == [str(uid)]:
            return True
    return False


def is_stale(env: dict[str, str] | None = None) -> bool:
    """podman set itself up in this runtime dir, yet neither its pause process nor any conmon
    of this user is alive: the next podman command would fail."""
    if os.geteuid() == 0:
        return False  # root podman needs no user namespace
    tmp_dir = os.path.join(runtime_dir(env), "libpod", "tmp")
    if not os.path.exists(os.path.join(tmp_dir, "alive")):
        return False  # podman will set itself up afresh
    if _pause_alive(tmp_dir):
        return False
    return not _own_conmon_alive(os.getuid())


def repair_if_stale(podman: str, env: dict[str, str]) -> bool:
    """``podman system migrate`` when the state is stale (once: under a lock, looked at again
    inside it). True when it ran. A repair that fails is left to the podman command that
    follows, whose own error then tells the user what is wrong."""
    if not is_stale(env):
        return False
    import subprocess
    import time

    from qpod_engine.base.fileio import locked

    lock = os.path.join(paths.state_dir(), "podman-migrate.lock")
    try:
        with locked(lock, "repairing podman's user namespace", MIGRATE_TIMEOUT + 60):
            if not is_stale(env):
                return False  # another qpod repaired it while this one waited
            started = time.monotonic()
            try:
                proc = subprocess.run(
                    [podman, "system", "migrate"],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=MIGRATE_TIMEOUT,
                    cwd="/",
                )
                outcome = f"exit {proc.returncode}"
            except (OSError, subprocess.TimeoutExpired) as err:
                outcome = type(err).__name__
    except OSError:
        return False  # no lock to be had: the podman command that follows says what is wrong
    _note(
        f"podman's user namespace was gone (a reboot or a killed session) while its runtime dir "
        f"remained: ran 'podman system migrate' ({outcome}, {time.monotonic() - started:.1f} s)"
    )
    return True


def _note(line: str) -> None:
    """Kept beside the service's log: qpod doctor and a curious user find it there."""
    import time

    try:
        fd = os.open(
            os.path.join(paths.state_dir(), "podman-service.log"),
            os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
        )
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} qpod: {line}\n")
    except OSError:
        pass
