"""Helpers for driving the Textual app with Pilot in tests."""

import time


async def settle(pilot, timeout: float = 10.0) -> None:
    """Wait until every view is mounted (the first one's rows are drawn first, the others
    after), no worker (but the file watcher) runs and their messages are handled."""
    deadline = time.monotonic() + timeout
    quiet = 0
    while quiet < 3:
        await pilot.pause(0.02)
        busy = [w for w in pilot.app.workers if w.group != "watch" and not w.is_finished]
        if not getattr(pilot.app, "views_ready", True):
            busy.append("the views not mounted yet")
        quiet = 0 if busy else quiet + 1
        if time.monotonic() > deadline:
            raise AssertionError(f"workers still running: {busy}")


async def wait_for(pilot, cond, timeout: float = 180.0) -> None:
    """Until ``cond()`` holds, the app running meanwhile (real podman and ssh: a loaded 2-core
    machine is slow, never this slow)."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await pilot.pause(0.1)
