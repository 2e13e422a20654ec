"""Atomic file writes (a temp file in the same directory, then rename, so readers see the old
file or the new one, never half of either), qpod's private state directories, and the lock
that serialises read-modify-write of a file. Stdlib only (the launcher writes through this).

Modes: qpod's state (the state dir and everything qpod writes in it: rules, snapshot, facts,
log, locks) is private, dirs 0700 and files 0600 whatever the umask, because the rules and the
snapshot decide where the user's commands run and the log holds their command lines. Config
files are the user's: a new one follows the umask, a replaced one keeps its mode.
"""

import os

from . import paths


def _umask() -> int:
    """The process umask, read without changing it (os.umask would race with other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _state_root() -> str:
    return os.path.realpath(paths.state_dir())


def is_state(path: str) -> bool:
    """Whether ``path`` (resolved) is qpod's state (the state dir or inside it)."""
    root = _state_root()
    path = os.path.realpath(path)
    return path == root or path.startswith(root.rstrip("/") + "/")


def private_dir(d: str) -> str:
    """Create the state directory ``d`` and those between it and the state dir 0700 whatever
    the umask; one of them found open to others (an older qpod, umask 000) is closed, if it is
    ours. The state dir's own parents (e.g. ~/.local/state) are created as usual. A ``d``
    outside the state dir is only created. Returns ``d``. Raises OSError."""
    root = _state_root()
    real = os.path.realpath(d)
    if not (real == root or real.startswith(root.rstrip("/") + "/")):
        os.makedirs(d, exist_ok=True)
        return d
    os.makedirs(os.path.dirname(root), exist_ok=True)
    chain = [root]
    for part in real[len(root):].split("/"):
        if part:
            chain.append(os.path.join(chain[-1], part))
    uid = os.geteuid()
    for p in chain:
        try:
            os.mkdir(p, 0o700)  # mkdir applies the umask: at most 0700, never more
            continue
        except FileExistsError:
            pass
        st = os.stat(p)
        if st.st_mode & 0o077 and st.st_uid == uid:
            os.chmod(p, st.st_mode & 0o7700)
    return d


def private_fd(fd: int) -> None:
    """Make the open state file ``fd`` 0600 if it is open to others (created by an older qpod)."""
    st = os.fstat(fd)
    if st.st_mode & 0o077 and st.st_uid == os.geteuid():
        os.fchmod(fd, st.st_mode & 0o7700)


class locked:  # noqa: N801 - used as a context manager, like open()
    """``with locked(path):`` an exclusive ``flock`` on ``path`` (created 0600, kept), released
    on exit; for a read-modify-write of the file it guards: read again under the lock."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> "locked":
        import fcntl

        d = os.path.dirname(self.path)
        if is_state(d):
            private_dir(d)
        else:
            os.makedirs(d, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            private_fd(self.fd)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(self.fd)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)  # releases the flock


def write_atomic(path: str, text: str, durable: bool = False, mode: int | None = None) -> None:
    """Replace ``path`` with ``text``. A symlink is followed (the link stays a link). In the
    state dir the file is 0600 and its directories 0700 (see the module doc); elsewhere the
    replaced file's permission bits are kept and a new file follows the umask. ``durable``
    fsyncs first (human-owned config); state files skip it. ``mode`` forces the file's mode
    (a private config file, e.g. the allow records). Raises OSError; nothing is left behind on
    failure."""
    import tempfile

    path = os.path.realpath(path)
    d = os.path.dirname(path)
    private = is_state(path)
    if private:
        private_dir(d)
    else:
        os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if mode is not None:
            pass
        elif private:
            mode = 0o600
        else:
            try:
                mode = os.stat(path).st_mode & 0o7777
            except FileNotFoundError:
                mode = 0o666 & ~_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
