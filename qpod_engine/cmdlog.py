"""The command log: one JSON line per command run through the launcher.

Many shells append at once: each record is written with a single ``write`` on an O_APPEND
descriptor while holding an exclusive ``flock`` on a side lock file, which also serialises
rotation (the log is renamed to ``.1`` ... ``.N`` past a size bound), so no record is lost
or torn. Stdlib only: the launcher writes a record after every command.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator

from . import paths
from .gitinfo import is_within

# typing is imported for type checkers only: the launcher's hot path imports this module
# and ``import typing`` costs ~2 ms a command
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

FIELDS = ("time", "repo", "branch", "env", "container", "cwd", "argv", "reason", "status", "duration")


def append(record: dict[str, Any], max_bytes: int = 20 * 1024 * 1024, keep: int = 3,
           log: str | None = None) -> None:
    log = log or paths.log_file()
    line = (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
    os.makedirs(os.path.dirname(log), exist_ok=True)
    lock_fd = os.open(log + ".lock", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        try:
            if os.stat(log).st_size + len(line) > max_bytes:
                _rotate(log, keep)
        except FileNotFoundError:
            pass
        fd = os.open(log, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
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
    nums = sorted((int(n[len(base) + 1:]) for n in names
                   if n.startswith(base + ".") and n[len(base) + 1:].isdigit()), reverse=True)
    rotated = [f"{log}.{i}" for i in nums]
    return [*rotated, log] if os.path.exists(log) else rotated


def parse_line(line: bytes | str) -> dict[str, Any] | None:
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


def read(log: str | None = None) -> Iterator[dict[str, Any]]:
    """Every record, oldest first."""
    for f in files(log):
        try:
            with open(f, "rb") as fh:
                for line in fh:
                    rec = parse_line(line)
                    if rec is not None:
                        yield rec
        except FileNotFoundError:  # rotated away while we read
            continue


class Filter:
    """Which records to show (all conditions must hold)."""

    def __init__(self, repo: str | None = None, env: str | None = None, failed: bool = False,
                 text: str | None = None) -> None:
        self.repo, self.env, self.failed, self.text = repo, env, failed, text

    def match(self, rec: dict[str, Any]) -> bool:
        if self.repo:
            repo, want = rec.get("repo") or "", self.repo.rstrip("/") or "/"
            if not (is_within(repo, want) or is_within(want, repo)):  # /src/app is not /src/app2
                return False
        if self.env and rec.get("env") != self.env:
            return False
        if self.failed and rec.get("status") == 0:
            return False
        if self.text:
            hay = " ".join([" ".join(rec.get("argv") or []), rec.get("repo") or "", rec.get("env") or "",
                            rec.get("cwd") or ""]).lower()
            if self.text.lower() not in hay:
                return False
        return True


class Follower:
    """Yields records appended after it was created (or from the start), across rotations."""

    def __init__(self, log: str | None = None, from_start: bool = False) -> None:
        self.log = log or paths.log_file()
        self._fh = None
        self._ino = None
        self._buf = b""
        self._open(seek_end=not from_start)

    def _open(self, seek_end: bool) -> None:
        try:
            fh = open(self.log, "rb")  # noqa: SIM115 - kept open across polls
        except FileNotFoundError:
            self._fh, self._ino = None, None
            return
        if seek_end:
            fh.seek(0, os.SEEK_END)
        self._fh, self._ino = fh, os.fstat(fh.fileno()).st_ino

    def poll(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self._fh is not None:
            out += self._drain()
        try:
            ino = os.stat(self.log).st_ino
        except FileNotFoundError:
            ino = None
        if ino is not None and ino != self._ino:  # rotated (or created): read the new file whole
            if self._fh is not None:
                out += self._drain()
                self._fh.close()
            self._open(seek_end=False)
            out += self._drain()
        return out

    def _drain(self) -> list[dict[str, Any]]:
        assert self._fh is not None
        self._buf += self._fh.read()
        *lines, self._buf = self._buf.split(b"\n")
        return [r for r in (parse_line(ln) for ln in lines if ln) if r is not None]

    def follow(self, interval: float = 0.2) -> Iterator[dict[str, Any]]:
        while True:
            yield from self.poll()
            time.sleep(interval)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
