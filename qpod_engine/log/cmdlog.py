"""The command log: one JSON line per record, written by the launcher for every redirected
command.

Writing: many shells append at once. Each record is written with a single ``write`` on an
O_APPEND descriptor while holding an exclusive ``flock`` on a side lock file, which also
serialises rotation (the log is renamed to ``.1`` ... ``.N`` past a size bound), so no record
is lost or torn. The log and its lock are 0600 in a 0700 dir: command lines are private.

Records: a command that ends writes one complete record (``time``, ``repo``, ``branch``,
``env``, ``container``, ``cwd``, ``argv``, ``path``, ``reason``, ``status`` an int,
``duration`` in seconds). A launcher may also write a *start* record when the command begins:
every usual field plus ``"id"`` (a hex string), ``"pid"`` (the launcher's pid) and
``"status": null``; the complete record written at the end carries the same ``id`` and
supersedes it. A record without ``id`` (older logs) is complete as it is. A start record whose
complete record never came is ``running`` while its launcher lives, else ``lost``.

Reading never fails on a bad record: a line that is not JSON, not an object, or has a field of
the wrong type (``"time": 5``, ``"duration": "slow"``, a duration of 1e308) is skipped and
counted (``Stats.malformed``).

Stdlib only: the launcher imports this module for ``append`` on every command.
"""

from __future__ import annotations

import json
import os
import time

from qpod_engine.base import fileio, paths
from qpod_engine.base.errors import QpodError
from qpod_engine.base.gitinfo import is_within

# typing and collections.abc are imported for type checkers only: the launcher's hot path
# imports this module and ``import typing`` costs ~2 ms a command
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any


LOCK_WAIT = 60.0  # a writer holds the lock for one append (or a rotation): far less than this


def append(record: dict[str, Any], max_bytes: int = 20 * 1024 * 1024, keep: int = 3, log: str | None = None) -> None:
    """Append ``record`` (rotating first when the log would pass ``max_bytes``, keeping
    ``keep`` rotated files). Raises OSError."""
    log = log or paths.log_file()
    line = (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
    fileio.private_dir(os.path.dirname(log))
    lock_fd = os.open(log + ".lock", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fileio.private_fd(lock_fd)
        fileio.flock_wait(lock_fd, log + ".lock", LOCK_WAIT)
        try:
            if os.stat(log).st_size + len(line) > max_bytes:
                _rotate(log, keep)
        except FileNotFoundError:
            pass
        fd = os.open(log, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fileio.private_fd(fd)  # a log made by an older qpod may be 0644
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # a record cut short earlier (disk full) must not swallow this one
            view = memoryview(line)
            while view:  # a short write (disk full, signal) must not leave half a record silently
                n = os.write(fd, view)
                view = view[n:]
        finally:
            os.close(fd)
    finally:
        os.close(lock_fd)  # releases the flock


def _rotate(log: str, keep: int) -> None:
    for i in range(keep - 1, 0, -1):
        if os.path.exists(f"{log}.{i}"):
            os.replace(f"{log}.{i}", f"{log}.{i + 1}")
    os.replace(log, f"{log}.1")


def files(log: str | None = None) -> list[str]:
    """The log's files, oldest first."""
    log = log or paths.log_file()
    base = os.path.basename(log)
    try:
        names = os.listdir(os.path.dirname(log))
    except OSError:
        return []
    nums = sorted(
        (int(n[len(base) + 1 :]) for n in names if n.startswith(base + ".") and n[len(base) + 1 :].isdigit()),
        reverse=True,
    )
    rotated = [f"{log}.{i}" for i in nums]
    return [*rotated, log] if os.path.exists(log) else rotated


class _shared_lock:  # noqa: N801 - a context manager
    """The writers' lock, shared: no rotation happens while it is held. Best effort: without
    a lock file (no writer yet) or without the right to open it, readers go on unlocked."""

    def __init__(self, log: str) -> None:
        self.path = log + ".lock"
        self.fd = -1

    def __enter__(self) -> None:
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            fileio.flock_wait(self.fd, self.path, LOCK_WAIT, shared=True)
        except (OSError, QpodError):
            if self.fd >= 0:
                os.close(self.fd)
            self.fd = -1

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)


def open_newer(log: str, fd: int | None) -> list[int]:
    """Descriptors (read-only, oldest first) of the log's files newer than the one open as
    ``fd`` (every file when ``fd`` is None); the last one is the current log. Taken under
    the writers' lock, so a rotation cannot shift the names between listing and opening, and
    two rotations between calls lose nothing: the caller holds its file open, so it is found
    by inode whatever its name is now."""
    out: list[int] = []
    with _shared_lock(log):
        names = files(log)
        if fd is not None:
            mine = os.fstat(fd)
            stats: list[os.stat_result | None] = []
            for n in names:
                try:
                    stats.append(os.stat(n))
                except FileNotFoundError:
                    stats.append(None)
            at = next(
                (
                    i
                    for i, st in enumerate(stats)
                    if st is not None and (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)
                ),
                None,
            )
            if at is not None:
                names = names[at + 1 :]
            else:  # rotated out of ``keep`` (or deleted by hand): the files written after it
                names = [
                    n
                    for n, st in zip(names, stats, strict=True)
                    if st is not None and st.st_mtime_ns >= mine.st_mtime_ns
                ]
        for n in names:
            try:
                out.append(os.open(n, os.O_RDONLY | os.O_CLOEXEC))
            except FileNotFoundError:
                continue
    return out


# --- records --------------------------------------------------------------------------------


class Stats:
    """What a reader skipped."""

    def __init__(self) -> None:
        self.malformed = 0

    def message(self) -> str | None:
        """``N malformed records skipped``, or None."""
        if not self.malformed:
            return None
        return f"{self.malformed} malformed record{'s' if self.malformed != 1 else ''} skipped"


_TEXT_FIELDS = ("time", "repo", "branch", "env", "container", "cwd", "path", "reason", "id", "state")
MAX_DURATION = 1e9  # seconds (31 years): anything beyond is not a duration


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def valid(rec: object) -> bool:
    """Whether ``rec`` is a record every reader can show: a JSON object whose known fields,
    where present and not null, have their type (unknown fields are free)."""
    if not isinstance(rec, dict):
        return False
    for key in _TEXT_FIELDS:
        v = rec.get(key)
        if v is not None and not isinstance(v, str):
            return False
    argv = rec.get("argv")
    if argv is not None and not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
        return False
    for key in ("status", "pid"):
        v = rec.get(key)
        if v is not None and not _is_int(v):
            return False
    d = rec.get("duration")
    if d is not None:
        if not (_is_int(d) or isinstance(d, float)) or not -MAX_DURATION < d < MAX_DURATION:
            return False  # NaN fails the comparison too
    return True


def parse_line(line: bytes | str) -> dict[str, Any] | None:
    """The record on ``line``, or None when it is malformed (see ``valid``)."""
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return rec if valid(rec) else None


def is_start(rec: dict[str, Any]) -> bool:
    """A start record: its command had not ended when it was written."""
    return rec.get("id") is not None and rec.get("status") is None


def record_epoch(rec: dict[str, Any]) -> float | None:
    """The record's ``time`` as epoch seconds (None when absent or unreadable)."""
    when = rec.get("time")
    if not when:
        return None
    from datetime import UTC, datetime

    try:
        dt = datetime.fromisoformat(when)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


_boot_time: float | None = None


def _btime() -> float | None:
    global _boot_time
    if _boot_time is None:
        try:
            with open("/proc/stat", "rb") as f:
                for line in f:
                    if line.startswith(b"btime "):
                        _boot_time = float(line.split()[1])
                        break
        except (OSError, ValueError):
            return None
    return _boot_time


def pid_alive(pid: int, since: float | None = None) -> bool:
    """Whether process ``pid`` lives and is the one that was running at epoch ``since``: one
    read of /proc/PID/stat (no separate existence check for it to vanish after); a zombie is
    dead, and a process started after ``since`` is another one that reused the pid."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:  # gone (ENOENT, ESRCH while reading) or not ours to see
        return False
    try:
        fields = data[data.rindex(b")") + 2 :].split()  # the command name may hold spaces and ')'
        if fields[0] in (b"Z", b"X"):
            return False
        if since is not None and (boot := _btime()) is not None:
            started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
            if started > since + 5:  # slack: btime is whole seconds and clocks get adjusted
                return False
    except (ValueError, IndexError):
        return False
    return True


def start_state(rec: dict[str, Any]) -> str:
    """``running`` or ``lost`` for a start record whose complete record was not seen."""
    pid = rec.get("pid")
    if pid is None:
        return "lost"
    return "running" if pid_alive(pid, record_epoch(rec)) else "lost"


def shown(rec: dict[str, Any]) -> dict[str, Any]:
    """``rec`` as readers show it: a start record gains ``state`` (running or lost)."""
    if is_start(rec):
        return {**rec, "state": start_state(rec)}
    return rec


def read(log: str | None = None, stats: Stats | None = None) -> Iterator[dict[str, Any]]:
    """Every well-formed record as written (start records and their complete records both),
    oldest first; malformed ones are counted in ``stats``."""
    stats = stats if stats is not None else Stats()
    for fd in open_newer(log or paths.log_file(), None):
        try:
            with os.fdopen(fd, "rb") as fh:
                for line in fh:
                    if not line.strip():
                        continue
                    rec = parse_line(line)
                    if rec is None:
                        stats.malformed += 1
                    else:
                        yield rec
        except OSError:
            continue


def recent(
    n: int | None = None, flt: Filter | None = None, log: str | None = None, stats: Stats | None = None
) -> list[dict[str, Any]]:
    """The last ``n`` records (all when None) that ``flt`` keeps, merged: a complete record
    supersedes its start record, a start record without one is shown with its ``state``.
    Oldest first; complete records stand where they were written, unfinished commands where
    they started. Streams the log: memory is O(n)."""
    out: list[list[Any]] = []  # boxes [record]; a superseded start's box is emptied
    first = 0  # out[:first] were dropped (a list with a moving start: O(1) popleft)
    live = 0
    starts: dict[str, list[Any]] = {}  # id -> box of a start record still in ``out``
    for rec in read(log, stats):
        rid = rec.get("id")
        if rid is not None:
            if is_start(rec):
                if flt is None or flt.match(rec):
                    box = [rec]
                    starts[rid] = box
                    out.append(box)
                    live += 1
            else:
                superseded = starts.pop(rid, None)
                if superseded is not None:
                    superseded[0] = None
                    live -= 1
        if not is_start(rec) and (flt is None or flt.match(rec)):
            out.append([rec])
            live += 1
        while n is not None and live > n:
            box = out[first]
            first += 1
            if box[0] is not None:
                live -= 1
                if is_start(box[0]):
                    starts.pop(box[0]["id"], None)
        if first > 4096 and first * 2 > len(out):
            del out[:first]
            first = 0
    return [shown(box[0]) for box in out[first:] if box[0] is not None]


class Filter:
    """Which records to show (all conditions must hold). ``failed``: ended with a non-zero
    status (a command still running, or lost, has not failed)."""

    def __init__(
        self, repo: str | None = None, env: str | None = None, failed: bool = False, text: str | None = None
    ) -> None:
        self.repo, self.env, self.failed, self.text = repo, env, failed, text

    def match(self, rec: dict[str, Any]) -> bool:
        if self.repo:
            repo, want = rec.get("repo") or "", self.repo.rstrip("/") or "/"
            if not (is_within(repo, want) or is_within(want, repo)):  # /src/app is not /src/app2
                return False
        if self.env and rec.get("env") != self.env:
            return False
        if self.failed:
            status = rec.get("status")
            if status is None or status == 0:
                return False
        if self.text:
            hay = " ".join(
                [" ".join(rec.get("argv") or []), rec.get("repo") or "", rec.get("env") or "", rec.get("cwd") or ""]
            ).lower()
            if self.text.lower() not in hay:
                return False
        return True


class Follower:
    """Yields records appended after it was created (or from the start), across rotations:
    the file being read is held open, and each poll reads it to its end, then every file
    rotated in after it, in order (see ``open_newer``), so none is missed even when the log
    rotates several times between polls. Malformed records are counted in ``stats``."""

    def __init__(self, log: str | None = None, from_start: bool = False) -> None:
        self.log = log or paths.log_file()
        self.stats = Stats()
        self._fd: int | None = None
        self._pos = 0
        self._buf = b""
        if not from_start:
            fds = open_newer(self.log, None)
            for fd in fds[:-1]:
                os.close(fd)
            if fds:  # the newest file, from its end
                self._fd = fds[-1]
                self._pos = os.fstat(self._fd).st_size

    def poll(self) -> list[dict[str, Any]]:
        newer = open_newer(self.log, self._fd)
        out: list[dict[str, Any]] = []
        if self._fd is not None:
            out += self._drain(finished=bool(newer))  # rotated away when newer files exist: complete
        for i, fd in enumerate(newer):
            if self._fd is not None:
                os.close(self._fd)
            self._fd, self._pos, self._buf = fd, 0, b""
            out += self._drain(finished=i < len(newer) - 1)
        return out

    def _drain(self, finished: bool) -> list[dict[str, Any]]:
        assert self._fd is not None
        if os.fstat(self._fd).st_size < self._pos:  # truncated by hand: start over
            self._pos, self._buf = 0, b""
        while chunk := os.pread(self._fd, 1 << 20, self._pos):
            self._pos += len(chunk)
            self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        if finished and self._buf.strip():  # a record cut short at the end of a rotated file
            lines.append(self._buf)
            self._buf = b""
        out = []
        for ln in lines:
            if not ln.strip():
                continue
            rec = parse_line(ln)
            if rec is None:
                self.stats.malformed += 1
            else:
                out.append(rec)
        return out

    def follow(self, interval: float = 0.2) -> Iterator[dict[str, Any]]:
        while True:
            yield from self.poll()
            time.sleep(interval)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
