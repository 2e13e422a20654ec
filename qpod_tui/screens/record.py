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


def record_text(rec: dict[str, Any], signal_of: Callable[[object], str | None] | None = None) -> Text:
    """Every field, literally; a status past 128 names its signal (``130 (SIGINT)``) and a
    command still running says so."""
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
            if value is None:
                shown, style = f"- ({rec.get('state') or 'running'})", "bold"
            elif signal_of is not None and (name := signal_of(value)):
                shown = f"{value} ({name})"
        text.append(f"{visible(key):>10}  ", style="dim")
        text.append(visible(shown) + "\n", style=style)
    text.rstrip()
    return text


class RecordScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Close", id="record.close"),
        Binding("c", "copy", "Copy command", id="record.copy"),
        Binding("x", "act('signal')", "Signal", id="record.signal"),
        Binding("r", "act('rerun')", "Run again", id="record.rerun"),
        Binding("e", "act('shell')", "Shell here", id="record.shell"),
    ]

    def __init__(
        self,
        rec: dict[str, Any],
        copy: Callable[[dict[str, Any]], None],
        act: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        """``act(what, rec)``: ``signal`` (a running command), ``rerun`` or ``shell``; the
        screen closes first."""
        super().__init__()
        self.rec, self._copy, self._act = rec, copy, act

    @property
    def running(self) -> bool:
        return self.rec.get("status") is None and self.rec.get("state", "running") == "running"

    def compose(self) -> ComposeResult:
        engine = getattr(self.app, "engine", None)
        signal_of = getattr(engine, "status_signal", None)
        with Vertical(classes="dialog wide"):
            yield Label("Running command" if self.running else "Command record", classes="title")
            with VerticalScroll():
                yield Static(record_text(self.rec, signal_of), id="record-text")
            keys = ["x sends a signal"] if self.running and self._act else []
            keys += ["r runs it again", "e opens a shell in its directory"] if self._act else []
            yield Label(" · ".join([*keys, "c copies the command line", "Esc closes"]), classes="hint")

    def action_act(self, what: str) -> None:
        if self._act is None or (what == "signal" and not self.running):
            return
        self.dismiss(None)
        self._act(what, self.rec)

    def action_copy(self) -> None:
        self._copy(self.rec)

    def action_close(self) -> None:
        self.dismiss(None)
