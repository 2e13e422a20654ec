"""What the command groups share: JSON and table output (cells shown literally), the engine, the cwd."""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qpod_engine.api import Engine


def out_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


def table(rows: list[list[str]], headers: list[str]) -> None:
    """Aligned columns; cells escaped (paths, image names and podman's labels are not ours)."""
    from qpod_engine.base.textsafe import cell_width, ljust, visible

    cells = [[visible(c) for c in row] for row in [headers, *rows]]
    widths = [max(cell_width(x) for x in col) for col in zip(*cells, strict=False)]
    for row in cells:
        print("  ".join(ljust(c, w) for c, w in zip(row, widths, strict=False)).rstrip())


def engine() -> Engine:
    """The engine facade the TUI uses too (imported here: ``qpod exec`` must not pay for it)."""
    from qpod_engine.api import Engine

    return Engine()


def uptime_text(started: float | None) -> str:
    from qpod_engine.api import uptime

    return uptime(started, time.time())


def current_dir() -> str:
    """The physical cwd: bindings hold real paths and the preload library routes on getcwd(),
    so a symlinked checkout must route here exactly as it does there."""
    return os.getcwd()


def repo_root(start: str) -> str:
    from qpod_engine.base import gitinfo

    return gitinfo.discover_root(os.path.abspath(start))
