"""``?``: every key of every view, with the binding id to remap it in settings.yaml."""

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from ..safe import literal


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "close", "Close", id="help.close")]

    def __init__(self, sections: list[tuple[str, list[tuple[str, str, str]]]]) -> None:
        """``sections``: (title, [(keys, description, binding id)])."""
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        table = Table(box=None, show_header=True, header_style="bold", padding=(0, 2, 0, 0))
        table.add_column("Key")
        table.add_column("Action")
        table.add_column("Binding id (settings.yaml keymap)", style="dim")
        for title, rows in self.sections:
            table.add_row(Text.assemble((title, "bold")), "", "")
            for keys, description, binding_id in rows:  # keys come from the user's keymap: no markup
                table.add_row(literal(keys), literal(description), literal(binding_id))
            table.add_row("", "", "")
        with Vertical(classes="dialog wide"):
            yield Label("qpod tui — keys", classes="title")
            with VerticalScroll():
                yield Static(table)
                yield Static(
                    "Remap a key in settings.yaml, e.g.\n  keymap:\n    repos.bind: ctrl+b\n"
                    "ctrl+p opens the command palette: every action is there too.",
                    classes="hint",
                )
            yield Label("Esc closes", classes="hint")

    def action_close(self) -> None:
        self.dismiss(None)
