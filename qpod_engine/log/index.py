"""Every record of the command log addressed by number, without holding the records.

``LogIndex`` keeps byte offsets of the complete records of ``commands.log.N`` ...
``commands.log`` (8 bytes each), so a viewer can show 100,000 records while holding only the
few it draws. Start records (``cmdlog.is_start``) are not numbered: they are held apart, in
``Running``, until their complete record arrives, and ``LogIndex.running()`` lists those whose
launcher is still alive: what is building now.
"""

import bisect
import functools
import os
import re
import threading
import time
from array import array
from collections.abc import Callable
from typing import Any

from qpod_engine.base import paths
from qpod_engine.log import cmdlog


def _start_record(buf: bytes, at: int = 0, end: int | None = None) -> dict[str, Any] | None:
    """The start record on the raw log line ``buf[at:end]``, or None when it is not one. A byte
    search first, without copying the line: most lines are not."""
    end = len(buf) if end is None else end
    if buf.find(b'"status":null', at, end) < 0 and buf.find(b'"status": null', at, end) < 0:
        return None
    rec = cmdlog.parse_line(buf[at:end])
    return rec if rec is not None and cmdlog.is_start(rec) else None


_ID = re.compile(rb'"id":\s*"([0-9A-Za-z_.-]{1,64})"')


class Running:
    """Start records whose complete record has not been seen, by id. A complete record is
    recognised by its id with a byte search (only while some start is pending); a start whose
    launcher died is dropped the first time ``live`` sees it (it became ``lost``: its end record
    can no longer come, ``qpod log`` shows it as lost)."""

    def __init__(self) -> None:
        self._pending: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def started(self, rec: dict[str, Any]) -> None:
        with self._lock:
            self._pending[rec["id"]] = rec

    def line(self, buf: bytes, at: int, end: int) -> None:
        """A complete record's raw line: the start it ends (if any) is no longer running."""
        if not self._pending:
            return
        m = _ID.search(buf, at, end)
        if m is None:
            return
        rid = m.group(1).decode()
        if rid in self._pending:
            rec = cmdlog.parse_line(buf[at:end])  # the id's bytes could be inside argv: confirm
            if rec is not None and rec.get("id") == rid:
                with self._lock:
                    self._pending.pop(rid, None)

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()

    def live(self, alive: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
        """The commands running now, longest-running first, each with ``state`` "running" and
        ``started`` (epoch seconds)."""
        alive = alive or (lambda rec: cmdlog.start_state(rec) == "running")
        with self._lock:
            pending = list(self._pending.items())
        out, dead = [], []
        for rid, rec in pending:
            if alive(rec):
                out.append({**rec, "state": "running", "started": cmdlog.record_epoch(rec) or time.time()})
            else:
                dead.append(rid)
        if dead:
            with self._lock:
                for rid in dead:
                    self._pending.pop(rid, None)
        return sorted(out, key=lambda r: r["started"])


class _Segment:
    """One log file, held open (so rotation cannot pull it away) with its records' offsets.
    Start records are not numbered: they go to ``running`` (see ``Running``)."""

    __slots__ = ("fd", "ino", "starts", "end", "running")

    def __init__(self, fd: int, running: Running) -> None:
        self.fd = fd
        self.running = running
        self.ino = os.fstat(self.fd).st_ino
        self.starts = array("q")
        self.end = 0  # offset just past the last complete line

    def scan_new(self) -> int:
        """Index the complete lines appended since the last call; returns how many."""
        before = len(self.starts)
        pos = self.end
        while True:
            chunk = os.pread(self.fd, LogIndex.CHUNK, pos)
            if not chunk:
                break
            at = 0
            while (nl := chunk.find(b"\n", at)) >= 0:
                if nl > at:  # skip empty lines
                    self._add(chunk, at, nl, pos + at)
                at = nl + 1
            if at == 0:  # no complete line in a whole chunk: a record longer than CHUNK
                if len(chunk) < LogIndex.CHUNK:
                    break
                self._scan_long_line(pos)
                pos = self.end
                continue
            pos += at
            self.end = pos
        return len(self.starts) - before

    def _add(self, buf: bytes, at: int, end: int, offset: int) -> None:
        """The line ``buf[at:end]``, at ``offset`` in the file: numbered, or held as running."""
        rec = _start_record(buf, at, end)
        if rec is not None:
            self.running.started(rec)
        else:
            self.starts.append(offset)
            self.running.line(buf, at, end)

    def _scan_long_line(self, pos: int) -> None:
        offset = pos
        while chunk := os.pread(self.fd, LogIndex.CHUNK, offset):
            nl = chunk.find(b"\n")
            if nl >= 0:
                self.end = offset + nl + 1
                line = os.pread(self.fd, self.end - pos, pos)
                self._add(line, 0, len(line) - 1, pos)
                return
            offset += len(chunk)

    def line(self, i: int) -> bytes:
        start = self.starts[i]
        stop = self.starts[i + 1] if i + 1 < len(self.starts) else self.end
        block = os.pread(self.fd, stop - start, start)
        return block[: block.find(b"\n")] if b"\n" in block else block  # lines not indexed may follow

    def lines(self, lo: int, hi: int) -> list[bytes]:
        """Records lo..hi-1 in one read (the caller keeps the span small)."""
        start = self.starts[lo]
        stop = self.starts[hi] if hi < len(self.starts) else self.end
        block = os.pread(self.fd, stop - start, start)
        out = []
        for i in range(lo, hi):
            at = self.starts[i] - start
            nl = block.find(b"\n", at)
            out.append(block[at:nl] if nl >= 0 else block[at:])
        return out

    def close(self) -> None:
        os.close(self.fd)


class LogIndex:
    """Every record of the command log (``commands.log.N`` ... ``commands.log``), oldest first,
    addressed by number. ``refresh`` indexes what was appended or rotated in; ``record`` reads
    and parses one record (cached); ``scan`` lists the records a ``cmdlog.Filter`` keeps;
    ``running`` lists the commands that started and have not ended.

    Memory: 8 bytes per record plus a small cache of parsed records, whatever the log's size.
    """

    CHUNK = 1 << 20
    BLOCK = 4 << 20  # bytes parsed at a time when filtering

    def __init__(self, log: str | None = None) -> None:
        self.log = log or paths.log_file()
        self._segments: list[_Segment] = []
        self._bases: list[int] = []  # global number of each segment's first record
        self._count = 0
        self._lock = threading.Lock()
        self._running = Running()
        self.record = functools.lru_cache(maxsize=1024)(self._read_record)  # a few screens' worth

    def __len__(self) -> int:
        return self._count

    def refresh(self) -> tuple[int, bool]:
        """(records added, reset): reset means numbering restarted (the log was truncated or
        replaced under us) and every number the caller holds is void."""
        with self._lock:
            reset = self._check_truncated()
            before = self._count
            last = self._segments[-1] if self._segments else None
            # the files rotated in since (several, if the log rotated more than once), oldest first
            newer = cmdlog.open_newer(self.log, last.fd if last is not None else None)
            if last is not None:
                last.scan_new()  # finish the file we had (rotated: complete now)
            for fd in newer:
                self._add_segment(fd)
            self._count = sum(len(s.starts) for s in self._segments)
            return self._count - before, reset

    def _add_segment(self, fd: int) -> None:
        seg = _Segment(fd, self._running)
        seg.scan_new()
        self._bases.append(sum(len(s.starts) for s in self._segments))
        self._segments.append(seg)

    def _check_truncated(self) -> bool:
        for seg in self._segments:
            if os.fstat(seg.fd).st_size < seg.end:
                self._close()
                return True
        return False

    def _close(self) -> None:
        for seg in self._segments:
            seg.close()
        self._segments, self._bases, self._count = [], [], 0
        self.record.cache_clear()
        self._running.clear()

    def close(self) -> None:
        with self._lock:
            self._close()

    def running(self, alive: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
        """Commands started and not ended whose launcher lives (cheap: a /proc read each; it
        does not wait for a ``refresh`` in progress). ``alive`` replaces the launcher check."""
        return self._running.live(alive)

    def _locate(self, i: int) -> tuple[_Segment, int]:
        k = bisect.bisect_right(self._bases, i) - 1
        return self._segments[k], i - self._bases[k]

    def _read_record(self, i: int) -> dict[str, Any] | None:
        with self._lock:
            seg, j = self._locate(i)
            line = seg.line(j)
        return cmdlog.parse_line(line)

    def scan(
        self, flt: cmdlog.Filter, start: int = 0, stop: int | None = None, cancelled: Callable[[], bool] = lambda: False
    ) -> "array[int]":  # quoted: array is not subscriptable at run time before 3.12
        """Numbers of the records in ``[start, stop)`` that ``flt`` keeps (empty when cancelled)."""
        stop = len(self) if stop is None else stop
        keep = array("q")
        exact, folded = _needles(flt)
        for k, seg in enumerate(list(self._segments)):
            base = self._bases[k]
            lo, hi = max(start - base, 0), min(stop - base, len(seg.starts))
            while lo < hi:
                if cancelled():
                    return array("q")
                span = _span(seg, lo, hi, self.BLOCK)
                for n, line in enumerate(seg.lines(lo, lo + span), base + lo):
                    if exact and not all(nd in line for nd in exact):
                        continue  # cheap byte tests first: most records fail them
                    if folded:
                        low = line.lower()
                        if not all(nd in low for nd in folded):
                            continue
                    rec = cmdlog.parse_line(line)
                    if rec is not None and flt.match(rec):
                        keep.append(n)
                lo += span
        return keep


def _span(seg: _Segment, lo: int, hi: int, max_bytes: int) -> int:
    """How many records from ``lo`` fit in ``max_bytes`` (at least one)."""
    limit = seg.starts[lo] + max_bytes
    j = bisect.bisect_right(seg.starts, limit, lo, hi)
    return max(1, j - lo - 1) if j < hi else hi - lo


def _needles(flt: cmdlog.Filter) -> tuple[list[bytes], list[bytes]]:
    """Byte strings a matching record's raw line must contain (exactly, and case-folded), where
    that is sure: plain ASCII without quotes or backslashes (JSON escapes those); text is cut at
    spaces because argv words are separate JSON strings."""

    def plain(value: str) -> bool:
        return value.isascii() and not re.search(r'["\\\x00-\x1f]', value)

    exact = [v.rstrip("/").encode() for v in (flt.repo, flt.env) if v and plain(v)]
    folded = [w.lower().encode() for w in (flt.text or "").split() if plain(w)]
    return exact, folded
