#!/usr/bin/env python3
"""Regenerate screenshots/*.svg: every view of ``qpod tui`` and its dialogs, with the
deterministic demo data (qpod_tui.demo_engine), so the images change only when the UI does.

    python scripts/screenshots.py [--out screenshots]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qpod_tui.app import make_app  # noqa: E402
from qpod_tui.demo_engine import DemoEngine  # noqa: E402

SIZE = (130, 36)
# (file name, first view, keys pressed before the shot, size, commands running in the demo,
# the demo's trouble mode: a broken environment, a file waiting for an allow, a failed pull)
SHOTS: tuple[tuple[str, str, list[str], tuple[int, int], int, bool], ...] = (
    ("repositories", "repositories", ["down", "down"], SIZE, 0, False),
    ("environments", "environments", [], SIZE, 0, False),
    ("environment-form", "environments", ["e"], (130, 46), 0, False),
    ("containers", "containers", [], SIZE, 2, False),
    ("command-log", "log", ["up", "up", "up"], SIZE, 0, False),
    ("command-log-running", "log", [], SIZE, 3, False),
    ("command-log-record", "log", ["up", "enter"], SIZE, 0, False),
    ("bind", "repositories", ["b"], SIZE, 0, False),
    ("help", "repositories", ["question_mark"], (130, 60), 0, False),
    # the hard states
    ("repositories-in-trouble-80x24", "repositories", ["down", "down", "down"], (80, 24), 0, True),
    ("environment-broken-80x24", "environments", ["down"], (80, 24), 0, True),
    ("allow-review-80x24", "repositories", ["down", "down", "down", "A"], (80, 24), 0, True),
    ("pull-failed-80x24", "environments", ["p"], (80, 24), 0, True),
    ("signal-picker-80x24", "log", ["x"], (80, 24), 3, False),
    ("repositories-in-trouble-120x40", "repositories", ["down", "down", "down"], (120, 40), 0, True),
    ("environment-broken-120x40", "environments", ["down"], (120, 40), 0, True),
    ("allow-review-120x40", "repositories", ["down", "down", "down", "A"], (120, 40), 0, True),
    ("pull-failed-120x40", "environments", ["p"], (120, 40), 0, True),
    ("signal-picker-120x40", "log", ["x"], (120, 40), 3, False),
)


async def settle(pilot, timeout: float = 10.0) -> None:
    """Until no worker runs and their messages are handled."""
    deadline = time.monotonic() + timeout
    quiet = 0
    while quiet < 3 and time.monotonic() < deadline:
        await pilot.pause(0.02)
        busy = [w for w in pilot.app.workers if not w.is_finished]
        quiet = 0 if busy else quiet + 1


def shoot(
    out: Path, name: str, view: str, keys: list[str], size: tuple[int, int], running: int = 0, trouble: bool = False
) -> Path:
    with tempfile.TemporaryDirectory() as state:
        app = make_app(DemoEngine(state, running=running, trouble=trouble), view=view, watch=False)

        async def pilot_run(pilot) -> None:
            await settle(pilot)
            for key in keys:
                await pilot.press(key)
                await settle(pilot)
            await pilot.wait_for_scheduled_animations()
            app.exit(app.export_screenshot(title=f"qpod tui — {name}"))

        svg = app.run(headless=True, size=size, auto_pilot=pilot_run)
    path = out / f"{name}.svg"
    path.write_text(svg or "", encoding="utf-8")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, view, keys, size, running, trouble in SHOTS:
        print(shoot(args.out, name, view, keys, size, running, trouble))
    return 0


if __name__ == "__main__":
    sys.exit(main())
