"""Pull an environment's image with its progress: bytes and percent per layer where podman
reports them (an indeterminate bar only when it does not). The pull belongs to the app, not to
the dialog: Esc closes the dialog and the pull goes on; its end (done or failed) is a
notification, and ``on_done`` runs either way (the environments view refreshes "Image here")."""

from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Label, ProgressBar, Static

from qpod_engine.api import Engine, QpodError, visible

from ..safe import literal, literal_lines

MB = 1e6


def layer_lines(by_layer: dict[str, tuple[int, int]]) -> Text:
    """One line per layer: its short id, bytes and percent (ids cut, never wrapped)."""
    text = Text(end="", no_wrap=True, overflow="ellipsis")
    for i, (layer, (done, total)) in enumerate(by_layer.items()):
        if i:
            text.append("\n")
        short = visible(layer.split(":")[-1][:12])
        pct = f"{100 * done / total:5.1f}%" if total else "     ?"
        text.append(f"{short:<12}  {done / MB:7.1f} / {total / MB:7.1f} MB  {pct}")
    return text


class PullScreen(ModalScreen[bool]):
    """Dismisses with True when the image is here. Esc closes the dialog; the pull goes on."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close", id="pull.close")]

    class Progress(Message):
        def __init__(self, layer: str, done: int, total: int) -> None:
            super().__init__()
            self.layer, self.done, self.total = layer, done, total

    class Finished(Message):
        def __init__(self, error: str | None) -> None:
            super().__init__()
            self.error = error

    def __init__(self, engine: Engine, ref: str, on_done: Callable[[bool], None] | None = None) -> None:
        super().__init__()
        self.engine, self.ref, self.on_done = engine, ref, on_done
        self.by_layer: dict[str, tuple[int, int]] = {}
        self.ok = False
        self.finished = False
        self.owner: App[object] | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text(visible(f"Pulling {self.ref}"), no_wrap=True, overflow="ellipsis"), classes="title")
            yield ProgressBar(total=None, show_eta=False, id="pull-bar")
            yield Label("starting…", id="pull-status")
            yield Static("", id="pull-layers")
            yield Label("Esc closes this; the pull goes on and says when it ends", classes="hint", id="pull-hint")
            yield Button("Close", id="close")

    def on_mount(self) -> None:
        # the app's worker, not the dialog's: closing the dialog must not lose the pull's end
        self.owner = self.app  # (a closed dialog has no app to reach)
        self.owner.run_worker(self._pull, thread=True, group="pull", description=f"pull {self.ref}")

    def _pull(self) -> None:
        error = None
        try:
            self.engine.pull_image(self.ref, self._report)
        except QpodError as err:
            error = str(err)
        assert self.owner is not None  # set by on_mount, which starts this worker
        self.owner.call_from_thread(self._ended, error)

    def _report(self, layer: str, done: int, total: int) -> None:
        if self.is_attached:
            self.post_message(self.Progress(layer, done, total))

    def _ended(self, error: str | None) -> None:
        assert self.owner is not None  # set by on_mount, which starts the worker that ends here
        self.finished, self.ok = True, error is None
        if self.is_attached:
            self.post_message(self.Finished(error))
        elif error:
            self.owner.notify(error, title="pull failed", severity="error", timeout=15)
        else:
            self.owner.notify(f"{self.ref} pulled: the image is here", title="pull done")
        if self.on_done is not None:
            self.on_done(self.ok)

    @on(Progress)
    def _progress(self, msg: Progress) -> None:
        bar = self.query_one(ProgressBar)
        if msg.total:  # a layer's bytes: the bar shows all layers together
            self.by_layer[msg.layer] = (msg.done, msg.total)
            done = sum(d for d, _ in self.by_layer.values())
            total = sum(t for _, t in self.by_layer.values())
            bar.update(total=total, progress=done)
            self.query_one("#pull-status", Label).update(
                f"{done / MB:.1f} / {total / MB:.1f} MB · {100 * done / total:.0f}%"
            )
            self.query_one("#pull-layers", Static).update(layer_lines(self.by_layer))
        elif msg.layer:
            self.query_one("#pull-status", Label).update(Text(visible(msg.layer), no_wrap=True, overflow="ellipsis"))

    @on(Finished)
    def _finished(self, msg: Finished) -> None:
        bar = self.query_one(ProgressBar)
        status = self.query_one("#pull-status", Label)
        title = self.query_one(".title", Label)
        if msg.error:  # the outcome replaces the progress: no bar at 0%, no "the pull goes on"
            title.update(Text(visible(f"Pull failed: {self.ref}"), no_wrap=True, overflow="ellipsis"))
            status.update(literal_lines(msg.error))
            status.add_class("field-error")
            bar.display = False
            self.query_one("#pull-layers", Static).display = False
        else:
            title.update(Text(visible(f"Pulled {self.ref}"), no_wrap=True, overflow="ellipsis"))
            bar.update(total=1, progress=1)
            status.update(literal(f"{self.ref} is here"))
        self.query_one("#pull-hint", Label).update("Esc closes")
        self.query_one("#close", Button).focus()

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(self.ok)
