"""What is building now: the commands that started and have not ended, above the command log,
in the log's own columns, their elapsed time ticking each second.

The rows come from ``LogIndex.running()`` (start records whose complete record has not come and
whose launcher lives); a command that ends leaves this panel and becomes the log's newest row.
"""

from typing import Any

from rich.text import Text
from textual.widgets import Static

from .log_table import DURATION_W, STATUS_W, TIME_W, _fit, column_widths


def elapsed(seconds: float) -> str:
    """``4.2s``, ``1m05s``, ``2h03m``: short enough for the log's Took column."""
    s = max(0.0, seconds)
    if s < 60:
        return f"{s:.1f}s"
    whole = int(s)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def running_line(rec: dict[str, Any], now: float, width: int) -> Text:
    """One running command in the log's columns: start time, "run", elapsed, env, repo, argv
    (every field from the log: escaped, cut to its column in terminal cells)."""
    env_w, repo_w, cmd_w = column_widths(width)
    when = (rec.get("time") or "")[:19].replace("T", " ")
    line = Text(no_wrap=True, overflow="ellipsis", end="")
    line.append(_fit(when, TIME_W) + " ", style="dim")
    line.append(_fit(f"{'run':>{STATUS_W - 1}}", STATUS_W - 1) + " ", style="bold")
    line.append(_fit(f"{elapsed(now - rec['started']):>{DURATION_W - 1}}", DURATION_W - 1) + " ", style="bold")
    line.append(_fit(str(rec.get("env") or "-"), env_w) + " ")
    line.append(_fit(str(rec.get("repo") or "-"), repo_w, left=True) + " ")
    line.append(_fit(" ".join(rec.get("argv") or []), cmd_w))
    return line


def title_suffix(count: int) -> str:
    """What the log's tab title gains: `` · 2 running`` (nothing when none runs)."""
    return f" · {count} running" if count else ""


class RunningPanel(Static):
    """Hidden when nothing runs; drawn at the log table's width so the columns line up."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("", **kwargs)
        self.records: list[dict[str, Any]] = []
        self.now = 0.0
        self.display = False

    def show(self, records: list[dict[str, Any]], now: float) -> None:
        self.records, self.now = records, now
        self.display = bool(records)
        self.refresh(layout=True)

    def render(self) -> Text:
        from .log_table import LogTable

        try:
            width = self.screen.query_one(LogTable).width_cells
        except Exception:  # noqa: BLE001 - not mounted with a log table (tests of the panel alone)
            width = 0
        width = max(20, width or self.size.width)
        text = Text(end="")
        for i, rec in enumerate(self.records):
            if i:
                text.append("\n")
            text.append_text(running_line(rec, self.now, width))
        return text

    def on_resize(self) -> None:
        self.refresh()
