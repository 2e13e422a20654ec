"""``qpod log``: the command log, filtered and followed."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse


def _fmt_record(r: dict[str, Any]) -> str:
    """One line per record; every field escaped (argv and paths are not ours: an escape
    sequence in them must not reach the terminal, a newline must not fake a line)."""
    from qpod_engine.base.textsafe import visible

    state = r.get("state")
    status: Any = r.get("status")
    if state == "running":
        from qpod_engine.log.cmdlog import record_epoch

        started = record_epoch(r)
        status, took = "running", f"{max(0.0, time.time() - started):.2f}s" if started else "-"
    elif state == "lost":
        status, took = "lost", "-"
    else:
        took = f"{r['duration']:.2f}s" if r.get("duration") is not None else "-"
    argv = " ".join(visible(a) for a in r.get("argv") or [])
    ended = f"  (its container {visible(r['ended'])})" if r.get("ended") else ""
    return (
        f"{visible((r.get('time') or '?')[:19])}  {'?' if status is None else status:>7}  {took:>9}  "
        f"{visible(r.get('env') or '-')}  {visible(r.get('repo') or '-')}  {argv}{ended}"
    )


def cmd_log(a: argparse.Namespace) -> int:
    from qpod_engine.log import cmdlog

    flt = cmdlog.Filter(repo=os.path.abspath(a.repo) if a.repo else None, env=a.env, failed=a.failed)
    follower = cmdlog.Follower() if a.follow else None  # opened first: nothing slips between read and follow
    stats = cmdlog.Stats()
    for r in cmdlog.recent(a.n, flt, stats=stats):
        print(json.dumps(r) if a.json else _fmt_record(r), flush=True)
    if stats.message():
        print(f"qpod: {stats.message()}", file=sys.stderr, flush=True)
    if follower is not None:
        skipped = 0
        try:
            while True:
                for r in follower.poll():
                    if flt.match(r):
                        r = cmdlog.shown(r)
                        print(json.dumps(r) if a.json else _fmt_record(r), flush=True)
                if follower.stats.malformed != skipped:
                    print(
                        f"qpod: {follower.stats.malformed - skipped} malformed record(s) skipped",
                        file=sys.stderr,
                        flush=True,
                    )
                    skipped = follower.stats.malformed
                time.sleep(0.2)
        except KeyboardInterrupt:
            return 0
    return 0


def add_parsers(sub: Any) -> None:
    """The ``logs`` commands on the parser."""

    lg = sub.add_parser("log", help="the log of redirected commands")
    lg.add_argument("-f", "--follow", action="store_true")
    lg.add_argument("-n", type=int, default=20, metavar="N")
    lg.add_argument("--repo", metavar="PATH")
    lg.add_argument("--env", metavar="NAME")
    lg.add_argument("--failed", action="store_true")
    lg.add_argument("--json", action="store_true")
    lg.set_defaults(func=cmd_log)
