"""The images qpod's environments use, with size and what uses them; prune the images this
config built from repository files that nothing uses any more (after a confirmation)."""

from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label

from qpod_engine.api import Engine, ImageRow, QpodError, human_bytes, visible

from ..safe import literal
from .dialogs import ConfirmScreen


class ImagesScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "prune", "Prune unused builds", id="images.prune"),
        Binding(
            "space", "mark", "Mark", tooltip="Mark the image or unmark it (p then prunes the marked)", id="images.mark"
        ),
        Binding("escape,q", "close", "Close", id="images.close"),
    ]

    class Loaded(Message):
        def __init__(self, rows: list[ImageRow] | None, error: str | None = None) -> None:
            super().__init__()
            self.rows, self.error = rows, error

    class Pruned(Message):
        def __init__(self, removed: list[str] | None, error: str | None = None) -> None:
            super().__init__()
            self.removed, self.error = removed, error

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine
        self.rows: list[ImageRow] = []
        self.marked: set[str] = set()  # image ids marked with space: p prunes those only

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label("Images of qpod's environments", classes="title")
            table: DataTable[Text | str] = DataTable(id="images-table", cursor_type="row")
            table.add_columns("Image", "Size", "In use by")
            yield table
            yield Label("", id="images-message", classes="hint")
            yield Label("p prunes this config's unused builds (the marked ones: space), Esc closes", classes="hint")

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, group="images")
    def load(self) -> None:
        try:
            self.post_message(self.Loaded(self.engine.images()))
        except QpodError as err:
            self.post_message(self.Loaded(None, str(err)))

    @on(Loaded)
    def _loaded(self, msg: Loaded) -> None:
        table = self.query_one("#images-table", DataTable)
        table.clear()
        message = self.query_one("#images-message", Label)
        if msg.rows is None:
            message.update(literal(f"cannot list images: {msg.error}", style="red"))
            return
        self.rows = msg.rows
        self.marked &= {r.id for r in msg.rows}
        for r in msg.rows:
            name = ("● " if r.id in self.marked else "") + (", ".join(r.tags) or r.id)
            used = (
                "; ".join(r.used_by) if r.used_by else ("unused (a build of this config)" if r.built_here else "unused")
            )
            table.add_row(
                literal(name), human_bytes(r.size), literal(used, style="" if r.used_by else "yellow"), key=r.id
            )
        message.update(f"{len(msg.rows)} image(s)" if msg.rows else "no images of qpod's environments here")

    def action_mark(self) -> None:
        table = self.query_one("#images-table", DataTable)
        if not self.rows or table.cursor_row < 0:
            return
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        if key is None:
            return
        self.marked ^= {key}
        r = next(r for r in self.rows if r.id == key)
        name = ("● " if key in self.marked else "") + (", ".join(r.tags) or r.id)
        table.update_cell(key, table.ordered_columns[0].key, literal(name))
        table.action_cursor_down()

    def action_prune(self) -> None:
        marked = [r for r in self.rows if r.id in self.marked]
        pool = marked or self.rows
        unused = [r for r in pool if r.built_here and not r.used_by]
        kept = [r for r in marked if not (r.built_here and not r.used_by)]
        if not unused:
            self.notify("none of the marked images is an unused build" if marked else "no unused builds to prune")
            return
        names = "\n".join(visible(", ".join(r.tags) or r.id) for r in unused)
        if kept:  # marked, but in use or not built by this config: said, never removed
            names += "\n\nkept (in use, or not a build of this config):\n" + "\n".join(
                visible(", ".join(r.tags) or r.id) for r in kept
            )
        only = {t for r in unused for t in r.tags} if marked else None

        def answered(yes: bool | None) -> None:
            if yes:
                self._prune(only)

        self.app.push_screen(ConfirmScreen(f"Remove {len(unused)} unused build image(s)?\n{names}"), answered)

    @work(thread=True, group="images")
    def _prune(self, only: set[str] | None = None) -> None:
        try:
            self.post_message(self.Pruned(self.engine.prune_images(only=only)[0]))
        except QpodError as err:
            self.post_message(self.Pruned(None, str(err)))

    @on(Pruned)
    def _pruned(self, msg: Pruned) -> None:
        if msg.error is not None:
            self.notify(visible(msg.error), severity="error", timeout=8, markup=False)
        else:
            self.notify(f"removed {len(msg.removed or [])} image(s)")
        self.load()

    def action_close(self) -> None:
        self.dismiss(None)
