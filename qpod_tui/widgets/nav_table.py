"""The one navigation vocabulary of every table in qpod tui (the command log's LogTable binds
the same ids): arrows and j/k, PgUp/PgDn, Home/g and End/G to the first and last row. Enter is
not bound here: it reaches the view, whose primary action it runs (shown first in the footer).
The ids are shared, so one ``keymap`` entry in settings.yaml remaps a key in every table."""

from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
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

    def action_first(self) -> None:
        if self.row_count:
            self.move_cursor(row=0)

    def action_last(self) -> None:
        if self.row_count:
            self.move_cursor(row=self.row_count - 1)
