"""A virtual table over the command log: it draws only the rows on screen, reading each record
from the ``LogIndex`` when drawn, so 100,000 records cost 8 bytes each and scrolling is O(height).

Follow mode keeps the newest record in view; scrolling up (keys, wheel, scrollbar) pauses it.
"""

import time
from collections.abc import Sequence
from typing import Any, ClassVar

from rich.cells import cell_len, get_character_cell_size, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.scrollbar import ScrollTo, ScrollUp
from textual.strip import Strip

from qpod_engine.api import LogIndex, visible

from .nav_table import NAV_BINDINGS

TIME_W, STATUS_W, DURATION_W = 10, 6, 9  # a compact, relative time column ("12m ago")


def ago(when: str, now: float) -> str:
    """A record's ``time`` as k9s shows ages: ``12s ago``, ``5m ago``, ``3h ago``, ``2d ago``;
    older than a week its date (UTC); as written when it cannot be read."""
    from datetime import UTC, datetime

    try:
        dt = datetime.fromisoformat(when)
    except ValueError:
        return when[:TIME_W]
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    s = max(0, int(now - dt.timestamp()))
    if s < 60:
        return f"{s}s ago"
    if s < 3600:
        return f"{s // 60}m ago"
    if s < 86400:
        return f"{s // 3600}h ago"
    if s < 7 * 86400:
        return f"{s // 86400}d ago"
    return dt.astimezone(UTC).strftime("%Y-%m-%d")


def _fit(text: str, width: int, left: bool = False) -> str:
    """``text`` (escaped: it comes from the log) padded or cut to exactly ``width`` terminal
    cells (a wide character takes two); ``left`` cuts the start (paths: the end is what matters)."""
    if width <= 0:
        return ""
    text = visible(text)
    if cell_len(text) <= width:
        return set_cell_size(text, width)
    if not left:
        return set_cell_size(text, width - 1) + "…"
    kept, cells = [], 0
    for ch in reversed(text):
        size = get_character_cell_size(ch)
        if cells + size > width - 1:
            break
        kept.append(ch)
        cells += size
    return set_cell_size("…" + "".join(reversed(kept)), width)


def column_widths(width: int) -> tuple[int, int, int]:
    """(environment, repository, command) widths for a table ``width`` cells wide."""
    rest = max(0, width - TIME_W - STATUS_W - DURATION_W - 4)
    env_w = min(22, max(8, rest // 5))
    repo_w = min(40, max(8, rest // 3))
    return env_w, repo_w, max(0, rest - env_w - repo_w)


def record_cells(rec: dict[str, Any] | None, width: int, now: float | None = None) -> list[tuple[str, str]]:
    """(text, role) per column: role picks the style (status ok/failed). ``now``: what the
    time column counts from (the clock when None)."""
    env_w, repo_w, cmd_w = column_widths(width)
    if rec is None:
        return [(_fit("(unreadable record)", width), "dim")]
    status = rec.get("status")  # a well-formed record (cmdlog.valid): types are known
    when = ago(rec.get("time") or "", time.time() if now is None else now)
    duration = rec.get("duration")
    took = f"{duration:.2f}s" if duration is not None else "-"
    return [
        (_fit(f"{when:>{TIME_W}}", TIME_W) + " ", "dim"),
        (
            _fit(f"{status if status is not None else '?':>{STATUS_W - 1}}", STATUS_W - 1) + " ",
            "ok" if status == 0 else "failed",
        ),
        (_fit(f"{took:>{DURATION_W - 1}}", DURATION_W - 1) + " ", ""),
        (_fit(str(rec.get("env") or "-"), env_w) + " ", ""),
        (_fit(str(rec.get("repo") or "-"), repo_w, left=True) + " ", ""),
        (_fit(" ".join(rec.get("argv") or []), cmd_w), ""),
    ]


def header_cells(width: int) -> str:
    env_w, repo_w, cmd_w = column_widths(width)
    return (
        _fit(f"{'When':>{TIME_W}}", TIME_W)
        + " "
        + f"{'Exit':>{STATUS_W - 1}} "
        + f"{'Took':>{DURATION_W - 1}} "
        + _fit("Environment", env_w)
        + " "
        + _fit("Repository", repo_w)
        + " "
        + _fit("Command", cmd_w)
    )


class LogTable(ScrollView, can_focus=True):
    """Rows are record numbers of a LogIndex (all of them, or those a filter kept)."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "logtable--header",
        "logtable--cursor",
        "logtable--ok",
        "logtable--failed",
        "logtable--dim",
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        *NAV_BINDINGS,  # the ids every table shares
        Binding("enter", "open", "Open", tooltip="Open the record in full", id="log.open"),
    ]

    follow: reactive[bool] = reactive(True)
    cursor: reactive[int] = reactive(0)

    class Opened(Message):
        """Enter on a row: ``number`` is the record's number in the LogIndex."""

        def __init__(self, number: int) -> None:
            super().__init__()
            self.number = number

    class FollowChanged(Message):
        def __init__(self, follow: bool) -> None:
            super().__init__()
            self.follow = follow

    AGES_EVERY = 10.0  # seconds between redraws of the ages ("5m ago") when nothing else redraws

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.index: LogIndex | None = None
        self.rows: Sequence[int] = range(0)
        self.now = 0.0  # what the ages count from: the engine's clock, read once a redraw

    def on_mount(self) -> None:
        self.set_interval(self.AGES_EVERY, self.refresh)

    def render_lines(self, crop: Any) -> list[Strip]:
        engine = getattr(self.app, "engine", None)
        self.now = engine.now() if engine is not None else time.time()
        return super().render_lines(crop)

    # --- data

    def set_rows(self, index: LogIndex, rows: Sequence[int]) -> None:
        """Show ``rows`` (record numbers, oldest first). Follow mode moves to the newest."""
        self.index, self.rows = index, rows
        self.virtual_size = Size(self.width_cells, len(rows) + 1)  # +1: the header line
        if self.follow:
            self.cursor = max(0, len(rows) - 1)
            self.call_after_refresh(self._to_last)  # the new virtual size takes effect on refresh
        else:
            self.cursor = min(self.cursor, max(0, len(rows) - 1))
        self.refresh()

    @property
    def current(self) -> int | None:
        """Record number under the cursor."""
        return self.rows[self.cursor] if 0 <= self.cursor < len(self.rows) else None

    # --- drawing

    @property
    def page(self) -> int:
        return max(1, self.size.height - 1)

    @property
    def width_cells(self) -> int:
        """The cells a row has: the table's width minus its scrollbar (rows cut by the
        scrollbar would lose their end without an ellipsis)."""
        return self.scrollable_content_region.width

    def render_line(self, y: int) -> Strip:
        width = self.width_cells
        if y == 0:
            style = self.rich_style + self.get_component_rich_style("logtable--header")
            return Strip([Segment(header_cells(width), style)]).crop_extend(0, width, style)
        row = int(self.scroll_offset.y) + y - 1
        base = self.rich_style
        if row >= len(self.rows) or self.index is None:
            return Strip.blank(width, base)
        rec = self.index.record(self.rows[row])
        cursor = row == self.cursor
        cursor_style = self.get_component_rich_style("logtable--cursor") if cursor else None
        segments = []
        for text, role in record_cells(rec, width, self.now):
            style = base + self.get_component_rich_style(f"logtable--{role}") if role else base
            if cursor_style is not None:  # the cursor's own colours: red on blue is unreadable
                style = base + cursor_style + Style(bold=role == "failed")
            segments.append(Segment(text, style))
        fill = base + cursor_style if cursor_style is not None else base
        return Strip(segments).crop_extend(0, width, fill)

    def on_resize(self, event: events.Resize) -> None:
        self.virtual_size = Size(self.width_cells, len(self.rows) + 1)
        if self.follow:  # shorter now (the running commands above it grew): the newest stays in view
            self.call_after_refresh(self._to_last)
        else:
            self.call_after_refresh(self._scroll_to_cursor)

    # --- cursor and scrolling

    def watch_cursor(self, old: int, new: int) -> None:
        self._scroll_to_cursor()
        self.refresh()

    def _scroll_to_cursor(self) -> None:
        top = int(self.scroll_offset.y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor >= top + self.page:
            self.scroll_to(y=self.cursor - self.page + 1, animate=False, immediate=True)

    def _to_last(self, tries: int = 20) -> None:
        self.cursor = max(0, len(self.rows) - 1)
        self.scroll_end(animate=False, immediate=True, x_axis=False)
        # before the table is laid out (its scrollbar, its new virtual size) a scroll is refused
        # or falls short: again after the next refresh, until the newest record is in view
        short = self.scroll_offset.y < self.max_scroll_y or self.max_scroll_y < len(self.rows) + 1 - self.size.height
        if self.follow and tries and short:
            self.call_after_refresh(self._to_last, tries - 1)

    def watch_follow(self, follow: bool) -> None:
        if follow:
            self._to_last()
        self.post_message(self.FollowChanged(follow))

    def _pause_follow(self) -> None:
        self.follow = False

    def action_cursor_up(self) -> None:
        self._pause_follow()
        self.cursor = max(0, self.cursor - 1)

    def action_cursor_down(self) -> None:
        self.cursor = min(max(0, len(self.rows) - 1), self.cursor + 1)

    def action_page_up(self) -> None:
        self._pause_follow()
        self.cursor = max(0, self.cursor - self.page)

    def action_page_down(self) -> None:
        self.cursor = min(max(0, len(self.rows) - 1), self.cursor + self.page)

    def action_first(self) -> None:
        self._pause_follow()
        self.cursor = 0

    def action_last(self) -> None:
        self.cursor = max(0, len(self.rows) - 1)

    def action_open(self) -> None:
        if self.current is not None:
            self.post_message(self.Opened(self.current))

    def _on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self._pause_follow()  # then ScrollView scrolls as usual

    def _on_scroll_up(self, event: ScrollUp) -> None:
        self._pause_follow()

    def _on_scroll_to(self, event: ScrollTo) -> None:
        if event.y is not None and event.y < self.scroll_offset.y:
            self._pause_follow()

    def on_click(self, event: events.Click) -> None:
        row = int(self.scroll_offset.y) + event.y - 1
        if 0 <= row < len(self.rows):
            if row < len(self.rows) - 1:
                self._pause_follow()
            self.cursor = row
            if event.chain == 2:
                self.action_open()
