"""Pull an environment's image with a progress bar (the pull runs in a worker)."""

from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Label, ProgressBar

from qpod_engine.api import Engine
from qpod_engine.errors import QpodError

from ..safe import literal, literal_lines


class PullScreen(ModalScreen[bool]):
    """Dismisses with True when the image is here. Esc hides the dialog; the pull goes on."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close", id="pull.close")]

    class Progress(Message):
        def __init__(self, layer: str, done: int, total: int) -> None:
            super().__init__()
            self.layer, self.done, self.total = layer, done, total

    class Finished(Message):
        def __init__(self, error: str | None) -> None:
            super().__init__()
            self.error = error

    def __init__(self, engine: Engine, ref: str) -> None:
        super().__init__()
        self.engine, self.ref = engine, ref
        self.by_layer: dict[str, tuple[int, int]] = {}
        self.ok = False

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(literal(f"Pulling {self.ref}"), classes="title")
            yield ProgressBar(total=None, show_eta=False, id="pull-bar")
            yield Label("starting…", id="pull-status")
            yield Button("Close", id="close")

    def on_mount(self) -> None:
        self.pull()

    @work(thread=True, exclusive=True)
    def pull(self) -> None:
        try:
            self.engine.pull_image(self.ref, lambda layer, done, total: self.post_message(
                self.Progress(layer, done, total)))
        except QpodError as err:
            self.post_message(self.Finished(str(err)))
            return
        self.post_message(self.Finished(None))

    @on(Progress)
    def _progress(self, msg: Progress) -> None:
        bar = self.query_one(ProgressBar)
        if msg.total:  # a layer's bytes: the bar shows all layers together
            self.by_layer[msg.layer] = (msg.done, msg.total)
            bar.update(total=sum(t for _, t in self.by_layer.values()),
                       progress=sum(d for d, _ in self.by_layer.values()))
            done_mb = sum(d for d, _ in self.by_layer.values()) / 1e6
            total_mb = sum(t for _, t in self.by_layer.values()) / 1e6
            self.query_one("#pull-status", Label).update(f"{done_mb:.1f} / {total_mb:.1f} MB")
        elif msg.layer:
            self.query_one("#pull-status", Label).update(literal(msg.layer))

    @on(Finished)
    def _finished(self, msg: Finished) -> None:
        bar = self.query_one(ProgressBar)
        status = self.query_one("#pull-status", Label)
        if msg.error:
            status.update(literal_lines(msg.error))
            status.add_class("field-error")
            bar.update(total=1, progress=0)
        else:
            self.ok = True
            bar.update(total=1, progress=1)
            status.update(literal(f"{self.ref} is here"))
        self.query_one("#close", Button).focus()

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(self.ok)
