"""A view made of a DataTable with a ``/`` filter line: the base of views 1-3."""

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Input, Static

from qpod_engine.api import Engine
from qpod_engine.errors import QpodError

from ..cells import cells, fit_columns, fit_text
from ..safe import literal
from ..screens.dialogs import ConfirmScreen
from .nav_table import NavTable

Cell = str | Text


class TableView(Vertical):
    """Rows keyed by a string; ``/`` shows a filter that keeps rows whose cells contain the text.
    Enter (and a click on the selected row) runs ``PRIMARY``, the view's main action: each view
    binds enter to it first in its BINDINGS, so the footer shows it first."""

    COLUMNS: ClassVar[tuple[str, ...]] = ()
    LEFT_CUT: ClassVar[frozenset[str]] = frozenset({"Repository"})  # paths: a cut keeps their end
    PRIMARY: ClassVar[str] = ""
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "clear_filter", "Clear filter", show=False,
                tooltip="Clear the list filter", id="list.clear_filter"),
    ]

    class Done(Message):
        """An engine call made for an action finished (``error`` None on success)."""

        def __init__(self, success: str, error: str | None, then: Callable[[], None] | None) -> None:
            super().__init__()
            self.success, self.error, self.then = success, error, then

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._rows: list[tuple[str, Sequence[Cell]]] = []
        self._drawn: list[tuple[str, list[Cell]]] = []  # the rows in the table, as drawn
        self._drawn_widths: list[int] = []

    @property
    def engine(self) -> Engine:
        return self.app.engine  # type: ignore[attr-defined]

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter (Esc clears)", classes="list-filter hidden")
        yield Static("", classes="view-message hidden")
        yield NavTable(cursor_type="row", zebra_stripes=True)

    @property
    def table(self) -> DataTable[Cell]:
        return self.query_one(DataTable)

    def activated(self) -> None:
        """The view was switched to: refresh what may have changed behind our back."""
        self.table.focus()
        self.load()

    def load(self) -> None:
        """Fetch this view's rows (in a worker)."""

    # --- rows and filtering

    def set_rows(self, rows: list[tuple[str, Sequence[Cell]]]) -> None:
        """``rows``: (key, cells). A str cell is shown literally (DataTable would parse it as
        markup); a Text cell is the caller's, built with ``qpod_tui.safe``."""
        self._rows = [(key, [literal(c) if isinstance(c, str) else c for c in cells]) for key, cells in rows]
        self._show()

    def _show(self) -> None:
        table = self.table
        keep = self.selected_key
        needle = self.query_one(".list-filter", Input).value.strip().lower()
        shown = [(k, row) for k, row in self._rows
                 if not needle or needle in " ".join(str(c) for c in row).lower()]
        widths = self._widths(shown)
        fitted = [(key, [fit_text(c, w, left=name in self.LEFT_CUT) if isinstance(c, Text) else c
                         for name, c, w in zip(self.COLUMNS, row, widths, strict=True)]) for key, row in shown]
        keys = [k for k, _ in fitted]
        if widths == self._drawn_widths and keys == [k for k, _ in self._drawn]:
            self._update_cells(fitted)  # a refresh of the same rows (uptime, CPU): changed cells only
        else:
            table.clear(columns=True)
            for name, w in zip(self.COLUMNS, widths, strict=True):
                table.add_column(fit_text(Text(name), w), width=w, key=name)
            for key, row in fitted:
                table.add_row(*row, key=key)
            if keep in keys:
                table.move_cursor(row=keys.index(keep), animate=False)
        self._drawn, self._drawn_widths = fitted, widths
        self.selection_changed()

    def _update_cells(self, fitted: list[tuple[str, list[Cell]]]) -> None:
        table = self.table
        for (key, row), (_key, before) in zip(fitted, self._drawn, strict=True):
            for name, cell, old in zip(self.COLUMNS, row, before, strict=True):
                if cell != old:
                    table.update_cell(key, name, cell)

    def _widths(self, shown: list[tuple[str, Sequence[Cell]]]) -> list[int]:
        """Each column's width in cells: its widest cell, unless the table is too narrow for
        them all; then the widest columns are cut (with an ellipsis, see ``fit_text``)."""
        natural = [cells(name) for name in self.COLUMNS]
        for _key, row in shown:
            for i, c in enumerate(row):
                natural[i] = max(natural[i], c.cell_len if isinstance(c, Text) else cells(str(c)))
        width = self.table.size.width or self.size.width or self.app.size.width
        scrollbar = 2 if len(shown) + 1 > max(1, self.table.size.height) else 0
        padding = 2 * self.table.cell_padding * len(self.COLUMNS)
        return fit_columns(natural, width - padding - scrollbar)

    def on_resize(self) -> None:
        if self._rows:
            self.call_after_refresh(self._show)  # the table has its new size then

    @property
    def selected_key(self) -> str | None:
        table = self.table
        if not table.row_count:
            return None
        try:
            return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:  # noqa: BLE001 - cursor outside the (just cleared) rows
            return None

    def selection_changed(self) -> None:
        """Hook: the highlighted row changed (detail panes follow it)."""

    @on(DataTable.RowHighlighted)
    def _highlighted(self) -> None:
        self.selection_changed()

    @on(DataTable.RowSelected)
    def _selected(self) -> None:
        if self.PRIMARY:
            getattr(self, f"action_{self.PRIMARY}")()

    def action_filter(self) -> None:
        box = self.query_one(".list-filter", Input)
        box.remove_class("hidden")
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one(".list-filter", Input)
        box.value = ""
        box.add_class("hidden")
        self.table.focus()

    @on(Input.Changed, ".list-filter")
    def _filter_changed(self) -> None:
        self._show()

    @on(Input.Submitted, ".list-filter")
    def _filter_done(self) -> None:
        self.table.focus()

    # --- messages in the view

    def show_message(self, text: str | Text | None) -> None:
        """A note above the table (nothing to show, podman unavailable); None removes it. The
        table stays, focused, so the view's keys keep working. A str is qpod's own markup;
        anything quoting a path or an error is a Text (``qpod_tui.safe``)."""
        msg = self.query_one(".view-message", Static)
        msg.update(text or "")
        msg.set_class(text is None, "hidden")

    # --- actions that call the engine

    @work(thread=True, group="action")
    def call_engine(self, fn: Callable[[], Any], success: str, then: Callable[[], None] | None = None) -> None:
        """Run an engine call off the UI thread; a QpodError becomes a notification."""
        try:
            fn()
        except QpodError as err:
            self.post_message(self.Done(success, str(err), then))
            return
        self.post_message(self.Done(success, None, then))

    @on(Done)
    def _done(self, msg: Done) -> None:
        if msg.error:
            self.notify(msg.error, severity="error", timeout=8)
        else:
            if msg.success:
                self.notify(msg.success)
            if msg.then:
                msg.then()
        self.load()

    def confirm(self, question: str, then: Callable[[], None]) -> None:
        self.app.push_screen(ConfirmScreen(question), lambda yes: then() if yes else None)
