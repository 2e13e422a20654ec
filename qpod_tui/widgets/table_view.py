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

from ..safe import literal
from ..screens.dialogs import ConfirmScreen

Cell = str | Text


class TableView(Vertical):
    """Rows keyed by a string; ``/`` shows a filter that keeps rows whose cells contain the text."""

    COLUMNS: ClassVar[tuple[str, ...]] = ()
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

    @property
    def engine(self) -> Engine:
        return self.app.engine  # type: ignore[attr-defined]

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter (Esc clears)", classes="list-filter hidden")
        yield Static("", classes="view-message hidden")
        table: DataTable[Cell] = DataTable(cursor_type="row", zebra_stripes=True)
        table.add_columns(*self.COLUMNS)
        yield table

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
        shown = [(k, cells) for k, cells in self._rows
                 if not needle or needle in " ".join(str(c) for c in cells).lower()]
        table.clear()
        for key, cells in shown:
            table.add_row(*cells, key=key)
        keys = [k for k, _ in shown]
        if keep in keys:
            table.move_cursor(row=keys.index(keep), animate=False)
        self.selection_changed()

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
