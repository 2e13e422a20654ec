"""A view made of a DataTable with a ``/`` filter line: the base of views 1-3."""

import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Input, Static

from qpod_engine.api import Engine, QpodError

from ..cells import cells, fit_columns, fit_text
from ..safe import literal
from ..screens.dialogs import ConfirmScreen, PickScreen
from .nav_table import NavTable

Cell = str | Text
T = TypeVar("T")


def read_briefly(read: Callable[[], T], wait: float) -> T | None:
    """``read()`` on a thread this one waits for, at most ``wait`` seconds; None when it takes
    longer (it then ends unobserved). For the first view's rows at start: read by a worker
    while the UI thread lays out the first frame, 20 ms of config reads took 200-350 ms (each
    file access gives the GIL up and waits for it again); waited for, they take their 20 ms and
    are in the first frame. A hung disk costs ``wait``, not the dashboard."""
    box: list[T] = []
    thread = threading.Thread(target=lambda: box.append(read()), name="qpod-first-rows", daemon=True)
    thread.start()
    thread.join(wait)
    return box[0] if box else None


@dataclass(frozen=True)
class Layout:
    """What a table's cells are prepared for: the filter text, the table's size and cell
    padding, and the rows drawn at the time (a refresh sends only the cells that differ)."""

    needle: str
    width: int
    height: int
    padding: int
    drawn: list[tuple[str, list[Cell]]] = field(compare=False)
    drawn_widths: list[int] = field(compare=False)
    sort: tuple[int, bool] | None = None  # (column, reversed); None: the engine's order
    marked: frozenset[str] = frozenset()  # rows marked for a bulk action (space)

    def same_layout(self, other: "Layout") -> bool:
        return (self.needle, self.width, self.height, self.padding, self.sort, self.marked) == (
            other.needle,
            other.width,
            other.height,
            other.padding,
            other.sort,
            other.marked,
        )


_NUMBER = re.compile(r"^(-?\d+(?:\.\d+)?)([BKMGT%]?)$")
_SPAN = re.compile(r"(\d+)([dhms])")
_UNITS = {"": 1, "%": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def sort_key(cell: Cell) -> tuple[int, float, str]:
    """How a cell sorts: figures by value (``12.5%``, ``38.2M`` below ``1.4G``, uptimes such as
    ``3d4h`` in seconds), other text alphabetically, ``-`` (no value) last."""
    text = str(cell).strip()
    if text in ("", "-"):
        return (2, 0.0, "")
    m = _NUMBER.match(text)
    if m:
        return (0, float(m.group(1)) * _UNITS[m.group(2)], "")
    spans = _SPAN.findall(text)
    if spans and "".join(n + u for n, u in spans) == text:
        return (0, float(sum(int(n) * _SECONDS[u] for n, u in spans)), "")
    return (1, 0.0, text.casefold())


SORT_BINDING = Binding("O", "sort", "Sort", tooltip="Sort by a column (the same one again: reversed)", id="list.sort")
MARK_BINDING = Binding(
    "space", "mark", "Mark", tooltip="Mark the row or unmark it (a bulk action acts on the marked rows)", id="list.mark"
)
MARK = "● "  # before the first cell of a marked row


@dataclass(frozen=True)
class Prepared:
    """Rows ready to draw: ``fitted`` cut to ``widths``; ``changes`` (key, column, cell) when
    only cells differ from ``layout.drawn``, None when the table is to be rebuilt."""

    rows: list[tuple[str, list[Cell]]]
    layout: Layout
    widths: list[int]
    fitted: list[tuple[str, list[Cell]]]
    changes: list[tuple[str, str, Cell]] | None


class TableView(Vertical):
    """Rows keyed by a string; ``/`` shows a filter that keeps rows whose cells contain the text.
    Enter (and a click on the selected row) runs ``PRIMARY``, the view's main action: each view
    binds enter to it first in its BINDINGS, so the footer shows it first."""

    COLUMNS: ClassVar[tuple[str, ...]] = ()
    LEFT_CUT: ClassVar[frozenset[str]] = frozenset({"Repository"})  # paths: a cut keeps their end
    PRIMARY: ClassVar[str] = ""
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "escape",
            "clear_filter",
            "Clear filter",
            show=False,
            tooltip="Clear the list filter",
            id="list.clear_filter",
        ),
    ]

    class Done(Message):
        """An engine call made for an action finished (``error`` None on success)."""

        def __init__(self, success: str, error: str | None, then: Callable[[], None] | None) -> None:
            super().__init__()
            self.success, self.error, self.then = success, error, then

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._rows: list[tuple[str, list[Cell]]] = []
        self._drawn: list[tuple[str, list[Cell]]] = []  # the rows in the table, as drawn
        self._drawn_widths: list[int] = []
        self._shown = False
        self._message: str | Text | None = None  # shown above the table
        self.sort: tuple[int, bool] | None = None  # (column, reversed) picked with the sort key
        self.marked: set[str] = set()  # keys of the rows marked with space

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

    def first_load(self, wait: float) -> None:
        """The first view's first load, at start (``wait``: see ``read_briefly``)."""
        self.activated()

    def first_load_from_config(self, read: Callable[[], Any], wait: float, then: Callable[[Any], object]) -> None:
        """``first_load`` of a view whose rows come from the config: ``read()`` (a Loaded
        message) before the first frame, handled as a worker's would be (``_loaded``); ``then``
        (podman's part) after that frame, which it would slow down."""
        self.table.focus()
        msg = read_briefly(read, wait)
        if msg is None:
            self.load()
            return
        self._loaded(msg)  # type: ignore[attr-defined]
        if msg.rows is not None:
            self.call_after_refresh(then, msg)

    def shown(self) -> None:
        """Rows (or a message instead) are in the view: the app mounts the other views once
        the first view's are on screen."""
        if not self._shown:
            self._shown = True
            self.app.first_rows_shown()  # type: ignore[attr-defined]

    # --- rows and filtering

    def set_rows(self, rows: list[tuple[str, Sequence[Cell]]]) -> None:
        """``rows``: (key, cells). A str cell is shown literally (DataTable would parse it as
        markup); a Text cell is the caller's, built with ``qpod_tui.safe``."""
        self.set_prepared(self.prepare(rows, self.layout_inputs()))

    def layout_inputs(self) -> Layout:
        """What the cells' widths depend on, read here on the UI thread (a worker preparing
        rows gets them from its caller), with the rows drawn now that a refresh diffs against."""
        table = self.table
        needle = self.query_one(".list-filter", Input).value.strip().lower()
        width = table.size.width or self.size.width or self.app.size.width
        return Layout(
            needle,
            width,
            table.size.height,
            2 * table.cell_padding,
            self._drawn,
            self._drawn_widths,
            self.sort,
            frozenset(self.marked),
        )

    @classmethod
    def prepare(cls, rows: Sequence[tuple[str, Sequence[Cell]]], layout: Layout) -> Prepared:
        """The rows made ready to draw, as a pure function of its arguments, so a worker can do
        it off the UI thread: cells made literal, filtered, column widths in terminal cells,
        cells cut to them, and the cells that differ from ``layout.drawn`` when only cells changed."""
        literal_rows: list[tuple[str, list[Cell]]] = [
            (key, [literal(c) if isinstance(c, str) else c for c in cells]) for key, cells in rows
        ]
        needle = layout.needle
        if layout.marked:
            literal_rows = [
                (key, [Text(MARK, style="bold yellow", end="") + row[0], *row[1:]] if key in layout.marked else row)
                for key, row in literal_rows
            ]
        shown = [(k, row) for k, row in literal_rows if not needle or needle in " ".join(str(c) for c in row).lower()]
        if layout.sort is not None and layout.sort[0] < len(cls.COLUMNS):
            column, backwards = layout.sort
            shown.sort(key=lambda kr: sort_key(kr[1][column]), reverse=backwards)
        widths = cls.column_widths(shown, layout)
        left = [name in cls.LEFT_CUT for name in cls.COLUMNS]
        fitted = [
            (
                key,
                [
                    fit_text(c, w, left=lc) if isinstance(c, Text) else c
                    for c, w, lc in zip(row, widths, left, strict=True)
                ],
            )
            for key, row in shown
        ]
        changes: list[tuple[str, str, Cell]] | None = None
        if widths == layout.drawn_widths and [k for k, _ in fitted] == [k for k, _ in layout.drawn]:
            changes = [
                (key, name, cell)  # a refresh of the same rows (uptime, CPU): changed cells only
                for (key, row), (_key, before) in zip(fitted, layout.drawn, strict=True)
                for name, cell, old in zip(cls.COLUMNS, row, before, strict=True)
                if cell != old
            ]
        return Prepared(literal_rows, layout, widths, fitted, changes)

    @classmethod
    def column_widths(cls, shown: list[tuple[str, list[Cell]]], layout: Layout) -> list[int]:
        """Each column's width in cells: its widest cell, unless the table is too narrow for
        them all; then the widest columns are cut (with an ellipsis, see ``fit_text``)."""
        natural = [cells(name) for name in cls.COLUMNS]
        for _key, row in shown:
            for i, c in enumerate(row):
                natural[i] = max(natural[i], c.cell_len if isinstance(c, Text) else cells(str(c)))
        scrollbar = 2 if len(shown) + 1 > max(1, layout.height) else 0
        available = layout.width - layout.padding * len(cls.COLUMNS) - scrollbar
        widths = fit_columns(natural, available)
        if widths and sum(widths) < available:  # the table uses the whole width: the last column takes the rest
            widths[-1] += available - sum(widths)
        return widths

    def set_prepared(self, prepared: Prepared) -> None:
        """Draw rows prepared by ``prepare`` (maybe in a worker): only the changed cells when
        the table still shows what they were diffed against, else the whole table. Prepared
        for another filter or size (it changed meanwhile), they are prepared again here."""
        self._rows = prepared.rows
        now = self.layout_inputs()
        if prepared.layout.drawn is not self._drawn or not now.same_layout(prepared.layout):
            prepared = self.prepare(prepared.rows, now)  # the table changed meanwhile
        table = self.table
        if prepared.changes is not None:
            for key, name, cell in prepared.changes:
                table.update_cell(key, name, cell)
        else:
            keep = self.selected_key
            keys = [k for k, _ in prepared.fitted]
            table.clear(columns=True)
            for name, w in zip(self.COLUMNS, prepared.widths, strict=True):
                table.add_column(fit_text(Text(name), w), width=w, key=name)
            for key, row in prepared.fitted:
                table.add_row(*row, key=key)
            if keep in keys:
                table.move_cursor(row=keys.index(keep), animate=False)
        self._drawn, self._drawn_widths = prepared.fitted, prepared.widths
        self.selection_changed()
        self.shown()

    def _show(self) -> None:
        """Draw the rows again (the filter or the size changed)."""
        self.set_prepared(self.prepare(self._rows, self.layout_inputs()))

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

    def action_mark(self) -> None:
        key = self.selected_key
        if key is None:
            return
        self.marked ^= {key}
        self._show()
        if self.table.cursor_row < self.table.row_count - 1:  # as in k9s: on to the next row
            self.table.move_cursor(row=self.table.cursor_row + 1, animate=False)

    def targets(self) -> list[str]:
        """What a bulk action acts on: the marked rows still listed, in table order, else the
        highlighted one."""
        listed = [key for key, _ in self._rows]
        marked = [k for k in listed if k in self.marked]
        if marked:
            return marked
        return [self.selected_key] if self.selected_key is not None else []

    def unmark(self) -> None:
        if self.marked:
            self.marked.clear()
            self._show()

    def action_sort(self) -> None:
        """A picker of the columns; the one sorted by now is marked, picking it again reverses."""
        marks = {False: " ▲", True: " ▼"}
        current = self.sort
        options = [
            (name + (marks[current[1]] if current is not None and current[0] == i else ""), str(i))
            for i, name in enumerate(self.COLUMNS)
        ]
        options.append(("(as listed: no sort)", "none"))

        def chosen(value: str | None) -> None:
            if value is None:
                return
            if value == "none":
                self.sort = None
            else:
                column = int(value)
                again = current is not None and current[0] == column
                self.sort = (column, not current[1] if current is not None else False) if again else (column, False)
            self._show()

        self.app.push_screen(
            PickScreen("Sort by", options, current=str(current[0]) if current is not None else None), chosen
        )

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
        if text is None and self._message is None:
            return  # (each refresh says so: an update would lay the whole screen out again)
        self._message = text
        msg = self.query_one(".view-message", Static)
        msg.update(text or "")
        msg.set_class(text is None, "hidden")
        if text is not None:
            self.shown()

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

    def confirm(self, question: str, then: Callable[[], object], review: bool = False) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                then()

        self.app.push_screen(ConfirmScreen(question, review), answered)
