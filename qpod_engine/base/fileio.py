"""Atomic file writes (a temp file in the same directory, then rename, so readers see the old
file or the new one, never half of either), qpod's private state directories, and the lock
that serialises read-modify-write of a file. Stdlib only (the launcher writes through this).

Modes: qpod's state (the state dir and everything qpod writes in it: rules, snapshot, facts,
log, locks) is private, dirs 0700 and files 0600 whatever the umask, because the rules and the
snapshot decide where the user's commands run and the log holds their command lines. Config
files are the user's: a new one follows the umask, a replaced one keeps its mode, but neither
is ever writable by group or others (an environment's ``env:`` runs code as the user: another
user able to write it could add LD_AUDIT). Directories qpod creates (``~/.config``,
``~/.local/state``, ...) are at most 0755 whatever the umask (make_dirs).

Trust: the state dir is used only when it is the user's own (effective uid) and closed to
group and others (check_private_dir): one that is not is an error naming it, never used and
never chmod'ed; one of ours left open (an older qpod, umask 000) is closed.
"""

import os

from qpod_engine.base import paths
from qpod_engine.base.ownership import check_private_dir

TYPE_CHECKING = False  # typing costs the launcher's hot path ~2 ms
if TYPE_CHECKING:
    from collections.abc import Callable


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


def make_dirs(d: str, mode: int = 0o755) -> str:
    """``os.makedirs(d, exist_ok=True)``, but every directory it creates (the intermediate
    ones too, which os.makedirs makes 0777 minus the umask) gets ``mode``, at most 0755, minus
    the umask: never writable by group or others. Existing ones are left as they are. Returns
    ``d``. Raises OSError."""
    missing = []
    p = os.path.abspath(d)
    while not os.path.isdir(p):
        missing.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    for p in reversed(missing):
        try:
            os.mkdir(p, mode & 0o755)  # mkdir applies the umask on top
        except FileExistsError:
            if not os.path.isdir(p):
                raise
    return d


def _state_root() -> str:
    return os.path.realpath(paths.state_dir_path())


def is_state(path: str) -> bool:
    """Whether ``path`` (resolved) is qpod's state (the state dir or inside it)."""
    root = _state_root()
    path = os.path.realpath(path)
    return path == root or path.startswith(root.rstrip("/") + "/")


def private_dir(d: str) -> str:
    """Create the state directory ``d`` and those between it and the state dir 0700 whatever
    the umask; one of them found open to others (an older qpod, umask 000) is closed, if it is
    ours; one of another user is an error (check_private_dir), never used. The state dir's own
    parents (e.g. ~/.local/state) are created 0755 at most (make_dirs). A ``d`` outside the
    state dir is only created (0700). Returns ``d``. Raises OSError, QpodError."""
    root = _state_root()
    real = os.path.realpath(d)
    if not (real == root or real.startswith(root.rstrip("/") + "/")):
        make_dirs(d, 0o700)
        return d
    make_dirs(os.path.dirname(root))
    chain = [root]
    for part in real[len(root) :].split("/"):
        if part:
            chain.append(os.path.join(chain[-1], part))
    for p in chain:
        try:
            os.mkdir(p, 0o700)  # mkdir applies the umask: at most 0700, never more
            continue
        except FileExistsError:
            pass
        check_private_dir(p, "qpod's state dir" if p == root else "qpod's state directory")
    return d


def private_fd(fd: int) -> None:
    """Make the open state file ``fd`` 0600 if it is open to others (created by an older qpod)."""
    st = os.fstat(fd)
    if st.st_mode & 0o077 and st.st_uid == os.geteuid():
        os.fchmod(fd, st.st_mode & 0o7700)


def lock_holder(fd: int) -> str:
    """Who holds the flock of the open lock file ``fd``: its pid (/proc/locks) and what it said
    it does (the line ``hold_lock`` writes into the file), as far as they can be known."""
    st = os.fstat(fd)
    # the kernel's "MAJ:MIN:INODE" (hex device numbers) of this file
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids: list[int] = []
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            for line in f:
                # "3: FLOCK  ADVISORY  WRITE 1234 00:1f:5678 0 EOF"; a blocked waiter's line has "->"
                parts = line.split()
                if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == where:
                    pids.append(int(parts[4]))
    except (OSError, ValueError):
        pass
    try:
        note = os.pread(fd, 512, 0).decode("utf-8", "replace").split("\n", 1)[0]
    except OSError:
        note = ""
    word, _, doing = note.partition(" ")
    said = int(word) if word.isdigit() else None
    if said is not None and (said in pids or not pids) and doing:
        return f"pid {said}, another qpod {doing}"
    return f"pid {pids[0]}" if pids else "another process"


def flock_wait(
    fd: int, path: str, timeout: float, say: "Callable[[str], None] | None" = None, shared: bool = False
) -> None:
    """``flock(fd, LOCK_EX)`` (``shared``: LOCK_SH), waiting at most ``timeout`` seconds: when
    the lock is taken, one line to ``say`` names ``path`` and its holder (None: a quiet wait,
    as parallel launches waiting for one container's start must be); at the deadline QpodError
    (exit 125) names them. Polls with LOCK_NB: a blocking flock cannot be given a deadline (an
    alarm signal is not an option in the dashboard's worker threads)."""
    import fcntl
    import time

    from qpod_engine.base.errors import EXIT_QPOD, QpodError

    op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    try:
        fcntl.flock(fd, op | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    if say is not None:
        say(f"qpod: waiting for {path} (held by {lock_holder(fd)}; at most {timeout:g} s)...")
    deadline = time.monotonic() + timeout
    pause = 0.02
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise QpodError(
                f"gave up waiting for {path} after {timeout:g} s: held by {lock_holder(fd)} "
                "(stop it, or wait for it to end and try again)",
                EXIT_QPOD,
            )
        time.sleep(min(pause, left))
        pause = min(pause * 2, 0.5)
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass


LOCK_WAIT = 120.0  # seconds a lock is waited for unless the caller says (a config edit, a log write)


class locked:  # noqa: N801 - used as a context manager, like open()
    """``with locked(path):`` an exclusive ``flock`` on ``path`` (created 0600 and kept: unlinking
    a lock file lets a third process lock a fresh inode while a second holds the old one),
    released on exit; for a read-modify-write of the file it guards: read again under the lock.
    Waited for at most ``timeout`` seconds, as ``flock_wait`` says (``say`` gets the waiting
    line; None: a quiet wait); ``what`` ("building image X") is written in the file for waiters."""

    def __init__(
        self, path: str, what: str = "", timeout: float = LOCK_WAIT, say: "Callable[[str], None] | None" = None
    ) -> None:
        self.path = path
        self.what = what
        self.timeout = timeout
        self.say = say
        self.fd = -1

    def __enter__(self) -> "locked":
        d = os.path.dirname(self.path)
        if is_state(d):
            private_dir(d)
        else:
            make_dirs(d)
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as err:
            from .errors import QpodError

            raise QpodError(f"{self.path}: cannot lock: {err.strerror or err}") from None
        try:
            private_fd(self.fd)
            flock_wait(self.fd, self.path, self.timeout, self.say)
            if self.what:
                os.ftruncate(self.fd, 0)
                os.pwrite(self.fd, f"{os.getpid()} {self.what}\n".encode(), 0)
        except BaseException:
            os.close(self.fd)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)  # releases the flock


def config_lock() -> locked:
    """The lock every read-modify-write of the config takes (see paths.config_lock_file): 20
    ``qpod init`` at once leave 20 bindings."""
    return locked(paths.config_lock_file(), "changing the config")


def write_atomic(path: str, text: str, durable: bool = False, mode: int | None = None) -> None:
    """Replace ``path`` with ``text``. A symlink is followed (the link stays a link). In the
    state dir the file is 0600 and its directories 0700 (see the module doc); elsewhere the
    replaced file's permission bits are kept and a new file follows the umask, both without
    write for group and others, and directories are created 0755 at most. ``durable``
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
        make_dirs(d)
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
                mode = os.stat(path).st_mode & 0o7777 & ~0o022
            except FileNotFoundError:
                mode = 0o666 & ~_umask() & ~0o022
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
