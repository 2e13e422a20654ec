"""Helpers for driving the Textual app with Pilot in tests: the async twin of conftest.wait_until
(the app runs while a test waits, so the wait is ``pilot.pause``, never a sleep)."""

import time
from collections.abc import Callable
from typing import Any


async def wait_for(
    pilot: Any,
    cond: Callable[[], object],
    timeout: float = 180.0,
    what: str | Callable[[], str] = "condition",
    interval: float = 0.02,
) -> None:
    """Until ``cond()`` holds, the app running meanwhile. The timeout is a guard against a hang
    (real podman and ssh on a loaded 2-core machine are slow, never this slow), not a measure."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout:.0f} s: {what() if callable(what) else what}")
        await pilot.pause(interval)


async def settle(pilot: Any, timeout: float = 60.0) -> None:
    """Wait until every view is mounted (the first one's rows are drawn first, the others
    after), no worker (but the file watcher) runs and their messages are handled: three quiet
    looks in a row."""
    quiet = 0
    busy: list[object] = []

    def calm() -> bool:
        nonlocal quiet, busy
        busy = [w for w in pilot.app.workers if w.group != "watch" and not w.is_finished]
        if not getattr(pilot.app, "views_ready", True):
            busy.append("the views not mounted yet")
        quiet = 0 if busy else quiet + 1
        return quiet >= 3

    await pilot.pause(0.02)
    await wait_for(pilot, calm, timeout, lambda: f"workers still running: {busy}", interval=0.02)
