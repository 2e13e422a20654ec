"""Atomic file writes: a temp file in the same directory, then rename, so readers see the old
file or the new one, never half of either. Stdlib only (the launcher writes through this)."""

import os


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


def write_atomic(path: str, text: str, durable: bool = False) -> None:
    """Replace ``path`` with ``text``. A symlink is followed (the link stays a link); the
    replaced file's permission bits are kept and a new file follows the umask. ``durable``
    fsyncs first (human-owned config); state files skip it. Raises OSError; nothing is
    left behind on failure."""
    import tempfile

    path = os.path.realpath(path)
    d = os.path.dirname(path)
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())
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
