"""View 3: qpod's containers. Stop/restart (confirmed), a shell inside, recent output."""

import subprocess
from typing import Any, ClassVar

from textual import on, work
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import DataTable

from qpod_engine.api import ContainerRow, uptime
from qpod_engine.errors import QpodError
from qpod_engine.textsafe import visible

from ..safe import assemble, literal
from ..screens.dialogs import TextScreen
from .repositories import state_text
from .table_view import TableView


class ContainersView(TableView):
    COLUMNS = ("Environment", "Repository", "State", "Uptime", "Image", "Name")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "stop", "Stop", tooltip="Stop the container", id="containers.stop"),
        Binding("r", "restart", "Restart", tooltip="Restart the container", id="containers.restart"),
        Binding("e", "shell", "Shell", tooltip="Open a shell in the container", id="containers.shell"),
        Binding("o", "output", "Output", tooltip="Show the container's recent output", id="containers.output"),
    ]
    REFRESH_SECONDS = 5.0  # states change behind our back (the launcher starts containers)

    class Loaded(Message):
        def __init__(self, rows: list[ContainerRow] | None, error: str | None = None, now: float = 0.0) -> None:
            super().__init__()
            self.rows, self.error, self.now = rows, error, now

    class Output(Message):
        def __init__(self, name: str, text: str) -> None:
            super().__init__()
            self.name, self.text = name, text

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.containers: dict[str, ContainerRow] = {}
        self.podman_error: str | None = None

    def on_mount(self) -> None:
        self.set_interval(self.REFRESH_SECONDS, self._tick)

    def _tick(self) -> None:
        if self.display and self.is_on_screen:
            self.load()

    def load(self) -> None:
        self._load_rows()

    @work(thread=True, exclusive=True, group="load")
    def _load_rows(self) -> None:
        try:
            rows = self.engine.containers()
        except QpodError as err:
            self.post_message(self.Loaded(None, str(err)))
            return
        self.post_message(self.Loaded(rows, now=self.engine.now()))

    @on(Loaded)
    def _loaded(self, msg: Loaded) -> None:
        self.podman_error = msg.error
        if msg.rows is None:
            self.containers = {}
            self.set_rows([])
            self.show_message(assemble(("podman is unavailable", "bold"), ": ", literal(msg.error or ""),
                                       "\n\nThe other views keep working; this one retries every few seconds."))
            return
        self.show_message(None if msg.rows else "No qpod containers: a bound repository's first redirected "
                          "command creates one.")
        self.containers = {c.name: c for c in msg.rows}
        self.set_rows([(c.name, (c.environment, c.repository, state_text(c.state),
                                 uptime(c.started, msg.now) if c.state == "running" else "-", c.image, c.name))
                       for c in msg.rows])

    def _need_selection(self) -> ContainerRow | None:
        key = self.selected_key
        c = self.containers.get(key) if key else None
        if c is None:
            self.notify("No container selected", severity="warning")
        return c

    @on(DataTable.RowSelected)
    def _enter(self) -> None:
        self.action_output()

    def action_stop(self) -> None:
        c = self._need_selection()
        if c is not None:
            self.confirm(f"Stop container {visible(c.name)}?\nIts next redirected command starts it again.",
                         lambda: self.call_engine(lambda: self.engine.stop_container(c.name),
                                                  f"stopped {visible(c.name)}"))

    def action_restart(self) -> None:
        c = self._need_selection()
        if c is not None:
            self.confirm(f"Restart container {visible(c.name)}?\nCommands running in it are killed.",
                         lambda: self.call_engine(lambda: self.engine.restart_container(c.name),
                                                  f"restarted {visible(c.name)}"))

    def action_shell(self) -> None:
        """Suspend the TUI, run an interactive shell in the container, come back."""
        c = self._need_selection()
        if c is None:
            return
        if c.state != "running":
            self.notify(f"{visible(c.name)} is {visible(c.state)}: restart it (r) first", severity="warning")
            return
        try:
            argv, env = self.engine.shell_command(c.name)
            with self.app.suspend():
                print(f"qpod: shell in {visible(c.name)}; exit returns to qpod tui", flush=True)
                subprocess.run(argv, env=env, check=False)
        except QpodError as err:
            self.notify(str(err), severity="error")
        except Exception as err:  # noqa: BLE001 - SuspendNotSupported (e.g. textual-web) or exec failure
            self.notify(f"cannot open a shell here: {err}", severity="error")
        self.load()

    def action_output(self) -> None:
        c = self._need_selection()
        if c is not None:
            self._fetch_output(c.name)

    @work(thread=True, exclusive=True, group="output")
    def _fetch_output(self, name: str) -> None:
        try:
            text = self.engine.container_logs(name) or "(no output: qpod's containers run 'sleep' until needed)"
        except QpodError as err:
            text = str(err)
        self.post_message(self.Output(name, text))

    @on(Output)
    def _show_output(self, msg: Output) -> None:
        self.app.push_screen(TextScreen(f"Recent output of {visible(msg.name)}", msg.text))
