"""Small modal dialogs: confirm, pick one of a list, pick an environment, show text."""

import time
from typing import ClassVar

from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Label, OptionList, Static, TextArea
from textual.widgets.option_list import Option

from qpod_engine.api import Engine, QpodError, visible

from ..safe import literal, literal_lines


class ConfirmScreen(ModalScreen[bool]):
    """Yes or no for a destructive action (``y``/``n``, Esc is no)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm.no"),
    ]

    def __init__(self, question: str, review: bool = False) -> None:
        """``review``: a long text to be read in full before answering (a security review):
        a wide dialog whose text wraps, never cut, and scrolls (arrows, PgUp/PgDn)."""
        super().__init__()
        self.question, self.review = question, review

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide" if self.review else "dialog"):
            if self.review:
                with VerticalScroll(id="review"):
                    yield Static(literal_lines(self.question), classes="question")
            else:
                yield Label(literal_lines(self.question), classes="question")
            with Horizontal(classes="buttons"):
                yield Button("Yes (y)", variant="error", id="yes")
                yield Button("No (n)", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_key(self, event: events.Key) -> None:
        """In a review, the arrows and pages scroll the text (the buttons keep y and n)."""
        if not self.review:
            return
        scroll = self.query_one("#review", VerticalScroll)
        moves = {
            "up": scroll.scroll_up,
            "down": scroll.scroll_down,
            "pageup": scroll.scroll_page_up,
            "pagedown": scroll.scroll_page_down,
        }
        if event.key in moves:
            moves[event.key](animate=False)
            event.stop()

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class PickScreen(ModalScreen[str | None]):
    """Choose one option (label, value); Esc cancels. Typing jumps to the first option whose
    label starts with what was typed (type-ahead; a pause of a second starts over)."""

    TYPE_AHEAD_RESET = 1.0  # seconds

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", id="pick.cancel")]

    def __init__(self, title: str, options: list[tuple[str, str]], current: str | None = None) -> None:
        super().__init__()
        self.title_text, self.options, self.current = title, options, current
        self.typed, self._typed_at = "", 0.0

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(literal_lines(self.title_text), classes="title")
            yield OptionList(*[Option(literal(label), id=value) for label, value in self.options])
            yield Label("Enter chooses, Esc cancels", classes="hint")

    def on_mount(self) -> None:
        self.fill(self.options)

    def fill(self, options: list[tuple[str, str]]) -> None:
        ol = self.query_one(OptionList)
        ol.clear_options()
        ol.add_options([Option(literal(label), id=value) for label, value in options])
        values = [v for _, v in options]
        if self.current in values:
            ol.highlighted = values.index(self.current)
        elif values:
            ol.highlighted = 0
        ol.focus()

    def on_key(self, event: events.Key) -> None:
        if not (event.character and event.character.isprintable() and not event.character.isspace()):
            return
        now = time.monotonic()
        if now - self._typed_at > self.TYPE_AHEAD_RESET:
            self.typed = ""
        self.typed, self._typed_at = self.typed + event.character.lower(), now
        ol = self.query_one(OptionList)
        labels = [str(ol.get_option_at_index(i).prompt).lower() for i in range(ol.option_count)]
        found = next((i for i, label in enumerate(labels) if label.startswith(self.typed)), None)
        if found is None:
            found = next((i for i, label in enumerate(labels) if self.typed in label), None)
        if found is not None:
            ol.highlighted = found
        event.stop()

    @on(OptionList.OptionSelected)
    def _selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


class PickEnvironmentScreen(PickScreen):
    """Choose an environment; the names are read from the config in a worker."""

    def __init__(self, engine: Engine, title: str, current: str | None = None) -> None:
        super().__init__(title, [], current)
        self.engine = engine

    def on_mount(self) -> None:
        self._load()

    @work(thread=True, exclusive=True)
    def _load(self) -> None:
        try:
            names = self.engine.environment_names()
        except QpodError as err:
            self.app.call_from_thread(self.notify, str(err), severity="error")
            return
        self.app.call_from_thread(self.fill, [(n, n) for n in names])


class TextScreen(ModalScreen[None]):
    """Read-only text (a record in full, a container's output); Esc closes."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Close", id="text.close"),
    ]

    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        self.title_text, self.text = title, text

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(literal_lines(self.title_text), classes="title")
            yield TextArea(
                visible(self.text, keep_newlines=True), read_only=True, soft_wrap=True, show_line_numbers=False
            )
            yield Label("Esc closes", classes="hint")

    def set_text(self, text: str) -> None:
        self.query_one(TextArea).load_text(visible(text, keep_newlines=True))

    def action_close(self) -> None:
        self.dismiss(None)
