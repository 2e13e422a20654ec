"""The one navigation vocabulary of every table in qpod tui (the command log's LogTable binds
the same ids): arrows and j/k, PgUp/PgDn, Home/g and End/G to the first and last row. Enter is
not bound here: it reaches the view, whose primary action it runs (shown first in the footer).
The ids are shared, so one ``keymap`` entry in settings.yaml remaps a key in every table."""

from typing import Any, ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region
from textual.strip import Strip
from textual.widgets import DataTable

NAV_BINDINGS: list[BindingType] = [
    Binding("up,k", "cursor_up", "Up", show=False, tooltip="Previous row", id="nav.up"),
    Binding("down,j", "cursor_down", "Down", show=False, tooltip="Next row", id="nav.down"),
    Binding("pageup", "page_up", "Page up", show=False, tooltip="A page up", id="nav.page_up"),
    Binding("pagedown", "page_down", "Page down", show=False, tooltip="A page down", id="nav.page_down"),
    Binding("home,g", "first", "First", show=False, tooltip="First row", id="nav.first"),
    Binding("end,G", "last", "Last", show=False, tooltip="Last row", id="nav.last"),
]


class NavTable(DataTable[str | Text], inherit_bindings=False):
    BINDINGS: ClassVar[list[BindingType]] = [
        *NAV_BINDINGS,
        Binding("left", "scroll_left", "Left", show=False, tooltip="Scroll left", id="nav.left"),
        Binding("right", "scroll_right", "Right", show=False, tooltip="Scroll right", id="nav.right"),
    ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # (set first: DataTable's constructor clears its caches, so ours, already)
        # rendered cells by place and look, kept with the value they show: DataTable keys its
        # own cell cache on a table-wide update counter, so updating one cell (a container's
        # CPU figure) re-rendered every visible cell through rich, 50-100 ms for 100 containers
        self._kept_cells: dict[tuple[Any, ...], tuple[object, list[list[Segment]]]] = {}
        self._pass_style: Style | None = None
        super().__init__(*args, **kwargs)

    def _render_cell(
        self,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool = False,
        hover: bool = False,
    ) -> list[list[Segment]]:
        if row_index < 0 or column_index < 0:  # the header and row labels: as DataTable does
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        row_key = self._row_locations.get_key(row_index)
        column_key = self._column_locations.get_key(column_index)
        if row_key is None or column_key is None:  # no such cell: nothing to keep
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        value = self._data[row_key][column_key]
        key = (
            row_key,
            column_key,
            row_index,
            base_style,
            width,
            cursor,
            hover,
            self._show_hover_cursor,
            self._pseudo_class_state,
        )
        kept = self._kept_cells.get(key)
        if kept is not None and kept[0] is value:  # the same value object: update_cell replaces it
            return kept[1]
        lines = super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        self._kept_cells[key] = (value, lines)
        return lines

    def render_lines(self, crop: Region) -> list[Strip]:
        # DataTable asks for its rich_style once per line, each time walking up the DOM to
        # blend the ancestors' backgrounds; it is the same for every line of one pass
        self._pass_style = self.rich_style
        try:
            return super().render_lines(crop)
        finally:
            self._pass_style = None

    @property
    def rich_style(self) -> Style:
        return self._pass_style or super().rich_style

    def _clear_caches(self) -> None:
        super()._clear_caches()
        self._kept_cells.clear()

    def notify_style_update(self) -> None:
        self._kept_cells.clear()  # (before DataTable's refresh)
        super().notify_style_update()

    async def _on_click(self, event: events.Click) -> None:
        """A click selects its row; a double click (or Enter) acts on it: the view's main action
        (DataTable acts on any click of the highlighted row)."""
        self._single_click = event.chain < 2
        try:
            await super()._on_click(event)
        finally:
            self._single_click = False
        event.prevent_default()  # (Textual would call DataTable's handler again after this one)

    def _post_selected_message(self) -> None:
        if not getattr(self, "_single_click", False):
            super()._post_selected_message()

    def action_first(self) -> None:
        if self.row_count:
            self.move_cursor(row=0)

    def action_last(self) -> None:
        if self.row_count:
            self.move_cursor(row=self.row_count - 1)
