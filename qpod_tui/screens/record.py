"""One command-log record in full: argv, cwd, reason, container, status, timing."""

import json
from collections.abc import Callable
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from qpod_engine.api import format_argv, visible

ORDER = ("time", "status", "ended", "duration", "repo", "branch", "env", "container", "cwd", "argv", "path", "reason")


def record_text(rec: dict[str, Any]) -> Text:
    text = Text()
    keys = [k for k in ORDER if k in rec] + sorted(k for k in rec if k not in ORDER)
    for key in keys:
        value = rec[key]
        if key == "argv":
            shown = format_argv([str(a) for a in value or []])
        elif key == "duration":
            shown = f"{value} s"
        elif isinstance(value, (dict, list)):
            shown = json.dumps(value)
        else:
            shown = "-" if value is None else str(value)
        style = ""
        if key == "status":
            style = "green" if value == 0 else "bold red"
        text.append(f"{visible(key):>10}  ", style="dim")
        text.append(visible(shown) + "\n", style=style)
    text.rstrip()
    return text


class RecordScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Close", id="record.close"),
        Binding("c", "copy", "Copy command", id="record.copy"),
    ]

    def __init__(self, rec: dict[str, Any], copy: Callable[[dict[str, Any]], None]) -> None:
        super().__init__()
        self.rec, self._copy = rec, copy

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label("Command record", classes="title")
            with VerticalScroll():
                yield Static(record_text(self.rec), id="record-text")
            yield Label("c copies the command line · Esc closes", classes="hint")

    def action_copy(self) -> None:
        self._copy(self.rec)

    def action_close(self) -> None:
        self.dismiss(None)
