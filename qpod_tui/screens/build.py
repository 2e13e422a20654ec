"""Build a repository's image from its .qpod.yaml (``build:``), podman build's output shown as
it comes; Esc closes the dialog (the build goes on: the repository's next command uses it)."""

from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Label, Log

from qpod_engine.api import Engine, QpodError, visible

from ..safe import literal


class BuildScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q", "close", "Close", id="build.close")]

    class Line(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    class Ended(Message):
        def __init__(self, built: bool | None, error: str | None = None) -> None:
            super().__init__()
            self.built, self.error = built, error

    def __init__(self, engine: Engine, root: str) -> None:
        super().__init__()
        self.engine, self.root = engine, root
        self.result: str | None = None  # how it ended, once it has

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(literal(f"Building the image of {self.root}/.qpod.yaml"), classes="title")
            yield Log(id="build-log", highlight=False)
            yield Label("building…", id="build-state", classes="hint")
            yield Label(
                "Esc closes (the build goes on: the repository's next command uses it)", classes="hint", id="build-hint"
            )

    def on_mount(self) -> None:
        self.build()

    @work(thread=True, group="build")
    def build(self) -> None:
        def line(text: str) -> None:
            self.post_message(self.Line(text))

        try:
            built = self.engine.build_repo_image(self.root, line)
        except QpodError as err:
            self.post_message(self.Ended(None, str(err)))
        else:
            self.post_message(self.Ended(built))

    @on(Line)
    def _line(self, msg: Line) -> None:
        self.query_one("#build-log", Log).write_line(visible(msg.text))

    @on(Ended)
    def _ended(self, msg: Ended) -> None:
        if msg.error is not None:
            self.result = f"build failed: {msg.error}"
        else:
            self.result = "built" if msg.built else "the image exists already: nothing to build"
        self.query_one("#build-state", Label).update(literal(self.result, style="red" if msg.error else "green"))
        self.query_one("#build-hint", Label).update("Esc closes")  # (nothing goes on any more)

    def action_close(self) -> None:
        self.dismiss(None)
