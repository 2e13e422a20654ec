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
# (file name, first view, keys pressed before the shot, size, commands running in the demo)
SHOTS = (
    ("repositories", "repositories", ["down", "down"], SIZE, 0),
    ("environments", "environments", [], SIZE, 0),
    ("environment-form", "environments", ["e"], (130, 46), 0),
    ("containers", "containers", [], SIZE, 2),
    ("command-log", "log", ["up", "up", "up"], SIZE, 0),
    ("command-log-running", "log", [], SIZE, 3),
    ("command-log-record", "log", ["up", "enter"], SIZE, 0),
    ("bind", "repositories", ["b"], SIZE, 0),
    ("help", "repositories", ["question_mark"], (130, 60), 0),
)


async def settle(pilot, timeout: float = 10.0) -> None:
    """Until no worker runs and their messages are handled."""
    deadline = time.monotonic() + timeout
    quiet = 0
    while quiet < 3 and time.monotonic() < deadline:
        await pilot.pause(0.02)
        busy = [w for w in pilot.app.workers if not w.is_finished]
        quiet = 0 if busy else quiet + 1


def shoot(out: Path, name: str, view: str, keys: list[str], size: tuple[int, int], running: int = 0) -> Path:
    with tempfile.TemporaryDirectory() as state:
        app = make_app(DemoEngine(state, running=running), view=view, watch=False)

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
    for name, view, keys, size, running in SHOTS:
        print(shoot(args.out, name, view, keys, size, running))
    return 0


if __name__ == "__main__":
    sys.exit(main())
