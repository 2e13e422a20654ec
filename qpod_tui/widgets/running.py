"""What is building now: the commands that started and have not ended, above the command log,
in the log's own columns, their elapsed time ticking each second.

The rows come from ``LogIndex.running()`` (start records whose complete record has not come and
whose launcher lives); a command that ends leaves this panel and becomes the log's newest row.
One of them is highlighted (the one ``x`` signals); with focus here the arrows move it and Enter
opens its start record.
"""

from typing import Any, ClassVar

from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import Static

from .log_table import DURATION_W, STATUS_W, TIME_W, _fit, ago, column_widths


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
    when = ago(rec.get("time") or "", now)
    line = Text(no_wrap=True, overflow="ellipsis", end="")
    line.append(_fit(f"{when:>{TIME_W}}", TIME_W) + " ", style="dim")
    line.append(_fit(f"{'run':>{STATUS_W - 1}}", STATUS_W - 1) + " ", style="bold")
    line.append(_fit(f"{elapsed(now - rec['started']):>{DURATION_W - 1}}", DURATION_W - 1) + " ", style="bold")
    line.append(_fit(str(rec.get("env") or "-"), env_w) + " ")
    line.append(_fit(str(rec.get("repo") or "-"), repo_w, left=True) + " ")
    line.append(_fit(" ".join(rec.get("argv") or []), cmd_w))
    return line


def title_suffix(count: int) -> str:
    """What the log's tab title gains: `` · 2 running`` (nothing when none runs)."""
    return f" · {count} running" if count else ""


class RunningPanel(Static, can_focus=True):
    """Hidden when nothing runs; drawn at the log table's width so the columns line up."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor_up", "Up", show=False, tooltip="Previous row", id="nav.up"),
        Binding("down,j", "cursor_down", "Down", show=False, tooltip="Next row", id="nav.down"),
        Binding("enter", "open", "Open", tooltip="Open the running command's record", id="running.open"),
    ]

    class Opened(Message):
        """Enter on a running command: its start record."""

        def __init__(self, record: dict[str, Any]) -> None:
            super().__init__()
            self.record = record

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("", **kwargs)
        self.records: list[dict[str, Any]] = []
        self.now = 0.0
        self.cursor = 0
        self._cursor_id: object = None  # the highlighted command's id: it stays highlighted as others come and go
        self.display = False

    def show(self, records: list[dict[str, Any]], now: float) -> None:
        self.records, self.now = records, now
        ids = [r.get("id") for r in records]
        if self._cursor_id in ids:
            self.cursor = ids.index(self._cursor_id)
        self.cursor = max(0, min(self.cursor, len(records) - 1))
        self._cursor_id = ids[self.cursor] if records else None
        if not records and self.has_focus:
            self.screen.focus_next()  # (hidden now: focus goes on to the table)
        self.display = bool(records)
        self.refresh(layout=True)

    @property
    def current(self) -> dict[str, Any] | None:
        """The highlighted running command's start record."""
        return self.records[self.cursor] if 0 <= self.cursor < len(self.records) else None

    def _move(self, to: int) -> None:
        if self.records:
            self.cursor = max(0, min(to, len(self.records) - 1))
            self._cursor_id = self.records[self.cursor].get("id")
            self.refresh()

    def action_cursor_up(self) -> None:
        self._move(self.cursor - 1)

    def action_cursor_down(self) -> None:
        self._move(self.cursor + 1)

    def action_open(self) -> None:
        if self.current is not None:
            self.post_message(self.Opened(self.current))

    def on_click(self, event: Any) -> None:
        self._move(int(self.scroll_offset.y) + event.y)

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

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
            line = running_line(rec, self.now, width)
            if i == self.cursor and len(self.records) > 1 or i == self.cursor and self.has_focus:
                # the one x signals: reversed with focus here, underlined otherwise
                line.stylize(Style(reverse=True) if self.has_focus else Style(underline=True))
            text.append_text(line)
        return text

    def on_resize(self) -> None:
        self.refresh()
