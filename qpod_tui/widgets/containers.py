"""View 3: qpod's containers, as lazydocker shows them: state, uptime, CPU and memory (one
one-shot stats call per refresh), the commands running in each (from the command log's start
records), a marker when the config changed since it was made. Stop/restart (confirmed), a shell
inside (through qpod's own launcher: as you, in the repository), recent output."""

import subprocess
from collections import Counter
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.binding import Binding, BindingType
from textual.message import Message

from qpod_engine.api import ContainerRow, QpodError, Stats, format_argv, human_bytes, uptime, visible

from ..safe import assemble, literal
from ..screens.dialogs import TextScreen
from .repositories import state_text
from .running import elapsed
from .table_view import MARK_BINDING, SORT_BINDING, Layout, Prepared, TableView

BY = "qpod tui"  # a command a stop ends says its container "was stopped by qpod tui"
MAX_LISTED = 8  # running commands a stop confirmation lists (then "… and N more")


def container_cells(
    c: ContainerRow, stats: dict[str, Stats], counts: Counter[str], now: float
) -> tuple[str | Text, ...]:
    """A container's row (a pure function: the loading worker calls it)."""
    running = c.state == "running"
    state = state_text(c.state)
    if getattr(c, "outdated", None):
        state = assemble(state, (" (outdated)", "yellow"))  # the next command replaces it
    s = stats.get(c.id) if running else None
    cpu = f"{s.cpu:.1f}%" if s is not None else "-"
    memory = human_bytes(s.memory) if s is not None else "-"
    cmds = getattr(c, "commands_running", None)
    cmds = counts.get(c.name, 0) if cmds is None else cmds
    # a container on another machine (an environment's host:) says which, beside its environment
    env = assemble(c.environment, (f" @{c.host}", "cyan")) if getattr(c, "host", "") else c.environment
    # a build host's distccd serves the environment, not one repository: its role says what it is
    repo = c.repository or (Text(f"({c.role})", style="dim") if getattr(c, "role", "") else "")
    return (
        env,
        repo,
        state,
        uptime(c.started, now) if running else "-",
        cpu,
        memory,
        str(cmds) if cmds else "-",
        c.image,
        c.name,
    )


class ContainersView(TableView):
    COLUMNS = ("Environment", "Repository", "State", "Uptime", "CPU", "Memory", "Cmds", "Image", "Name")
    PRIMARY = "output"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "output", "Output", tooltip="Show the container's recent output", id="containers.open"),
        Binding("s", "stop", "Stop", tooltip="Stop the container", id="containers.stop"),
        Binding("r", "restart", "Restart", tooltip="Restart the container", id="containers.restart"),
        Binding("e", "shell", "Shell", tooltip="Open a shell in the container", id="containers.shell"),
        Binding("o", "output", "Output", tooltip="Show the container's recent output", id="containers.output"),
        SORT_BINDING,
        MARK_BINDING,
    ]
    REFRESH_SECONDS = 5.0  # states change behind our back (the launcher starts containers)

    class Loaded(Message):
        """Podman's containers (None: podman failed, ``error`` says why), CPU and memory by
        12-digit id once asked, and their cells ready to draw."""

        def __init__(
            self,
            rows: list[ContainerRow] | None,
            error: str | None = None,
            now: float = 0.0,
            stats: dict[str, Stats] | None = None,
            prepared: Prepared | None = None,
            unreachable: list[str] | None = None,
            no_stats: str | None = None,
        ) -> None:
            super().__init__()
            self.rows, self.error, self.now, self.stats, self.prepared = rows, error, now, stats, prepared
            self.unreachable = unreachable or []  # build hosts whose containers are missing, with why
            self.no_stats = no_stats  # why running containers have no figures (None: they have)

    class Shell(Message):
        def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: str | None) -> None:
            super().__init__()
            self.name, self.argv, self.env, self.cwd = name, argv, env, cwd

    class Output(Message):
        def __init__(self, name: str, text: str) -> None:
            super().__init__()
            self.name, self.text = name, text

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.containers: dict[str, ContainerRow] = {}
        self.podman_error: str | None = None
        self.stats: dict[str, Stats] = {}
        self.no_stats: str | None = None  # why the running containers here have no CPU and memory figures
        self.now = 0.0

    def on_mount(self) -> None:
        self.set_interval(self.REFRESH_SECONDS, self._tick)

    def _tick(self) -> None:
        if self.display and self.is_on_screen:
            self.load()

    def load(self) -> None:
        # what the cells depend on besides podman's answer, read here on the UI thread
        self._load_rows(self.commands_running(), self.layout_inputs())

    def activated(self) -> None:
        super().activated()
        self.app.prepare_log()  # type: ignore[attr-defined]  # its start records count the commands

    def running_changed(self) -> None:
        """The commands running now changed (the log view says): recount them per container."""
        if self.containers:
            self._refill()

    @work(thread=True, exclusive=True, group="load")
    def _load_rows(self, counts: Counter[str], layout: Layout) -> None:
        """Podman's rows and figures, their cells made ready to draw here (formatted, cut to
        the columns' widths, diffed against the table): the UI thread only puts them in."""
        try:
            rows = self.engine.containers()
        except QpodError as err:
            self.post_message(self.Loaded(None, str(err)))
            return
        now = self.engine.now()
        unreachable = list(self.engine.unreachable_hosts)
        first = not self.containers
        if first:  # the rows at once; their figures follow
            self.post_message(
                self.Loaded(
                    rows, now=now, prepared=self._prepare(rows, {}, counts, now, layout), unreachable=unreachable
                )
            )
        running = [c.id for c in rows if c.state == "running"]
        stats_error = None
        try:
            stats = self.engine.container_stats(running, {c.id: c.host for c in rows if c.host}) if running else {}
        except QpodError as err:
            stats, stats_error = {}, str(err)  # the figures stay empty; the rows are podman's anyway
        here = [c.id for c in rows if c.state == "running" and not c.host]
        no_stats = self.engine.stats_unavailable(stats_error) if here and not any(i in stats for i in here) else None
        # rows and figures in one update of the table (one redraw, not two)
        self.post_message(
            self.Loaded(
                rows,
                now=now,
                stats=stats,
                prepared=self._prepare(rows, stats, counts, now, layout),
                unreachable=unreachable,
                no_stats=no_stats,
            )
        )

    def _prepare(
        self, rows: list[ContainerRow], stats: dict[str, Stats], counts: Counter[str], now: float, layout: Layout
    ) -> Prepared:
        return self.prepare([(c.name, container_cells(c, stats, counts, now)) for c in rows], layout)

    @on(Loaded)
    def _loaded(self, msg: Loaded) -> None:
        self.podman_error = msg.error
        if msg.rows is None:
            self.containers = {}
            self.set_rows([])
            self.show_message(
                assemble(
                    ("podman is unavailable", "bold"),
                    ": ",
                    literal(msg.error or ""),
                    "\n\nThe other views keep working; this one retries every few seconds.",
                )
            )
            return
        if msg.stats is not None:  # (the figures' answer, not the first rows without them)
            self.no_stats = msg.no_stats
        notes: list[Text] = []
        if msg.unreachable:
            notes.append(
                assemble(
                    ("Not reachable", "bold"),
                    " (their containers are not listed): ",
                    literal("; ".join(msg.unreachable)),
                )
            )
        if self.no_stats and msg.rows:  # said once, where the figures would be
            notes.append(assemble(("CPU and memory not measured", "bold"), ": ", literal(self.no_stats)))
        if notes:
            self.show_message(Text("\n", end="").join(notes))
        else:
            self.show_message(
                None if msg.rows else "No qpod containers: a bound repository's first redirected command creates one."
            )
        self.containers = {c.name: c for c in msg.rows}
        self.now = msg.now
        if msg.stats is not None:
            self.stats = msg.stats
        if msg.prepared is not None:
            self.set_prepared(msg.prepared)  # (prepared again if the filter or the size changed)
        else:
            self._refill()

    def commands_running(self) -> Counter[str]:
        """Commands running now per container, from the command log's start records."""
        logs = self.app.query("#log-view")  # mounted after the first paint
        running = getattr(logs.first(), "running", []) if logs else []
        return Counter(str(r.get("container") or "") for r in running)

    def _refill(self) -> None:
        counts = self.commands_running()
        self.set_rows([(c.name, container_cells(c, self.stats, counts, self.now)) for c in self.containers.values()])

    def _need_selection(self) -> ContainerRow | None:
        key = self.selected_key
        c = self.containers.get(key) if key else None
        if c is None:
            self.notify("No container selected", severity="warning")
        return c

    def running_in(self, name: str) -> list[dict[str, Any]]:
        """The start records of the commands running now in container ``name``."""
        logs = self.app.query("#log-view")
        running = getattr(logs.first(), "running", []) if logs else []
        return [r for r in running if r.get("container") == name]

    def running_lines(self, name: str) -> str:
        """What a stop or restart would end, one command a line: argv, repository, elapsed."""
        running = self.running_in(name)
        if not running:
            return "Nothing runs in it now."
        now = self.engine.now()
        lines = [
            f"  {visible(format_argv([str(a) for a in r.get('argv') or []]))}"
            f"  ·  {visible(r.get('repo') or '-')}  ·  {elapsed(now - float(r.get('started') or now))}"
            for r in running[:MAX_LISTED]
        ]
        if len(running) > MAX_LISTED:
            lines.append(f"  … and {len(running) - MAX_LISTED} more")
        them = "it is killed" if len(running) == 1 else "they are killed"
        return f"Running in it now ({them}, their records say it was stopped by qpod tui):\n" + "\n".join(lines)

    def action_stop(self) -> None:
        names = [n for n in self.targets() if n in self.containers]
        if len(names) > 1:  # the marked ones, under one confirmation
            parts = [f"{visible(n)}\n" + self.running_lines(n) for n in names]

            def stop_all() -> None:
                for n in names:
                    self.engine.stop_container_by(n, BY)

            self.confirm(
                f"Stop these {len(names)} containers? Their next redirected commands start them again.\n\n"
                + "\n\n".join(parts),
                lambda: self.call_engine(
                    stop_all,
                    f"stopped {len(names)} containers",
                    self.unmark,
                ),
                review=True,
            )
            return
        c = self._need_selection()
        if c is not None:
            self.confirm(
                f"Stop container {visible(c.name)}?\nIts next redirected command starts it again.\n\n"
                + self.running_lines(c.name),
                lambda: self.call_engine(
                    lambda: self.engine.stop_container_by(c.name, BY), f"stopped {visible(c.name)}"
                ),
            )

    def action_restart(self) -> None:
        c = self._need_selection()
        if c is not None:
            self.confirm(
                f"Restart container {visible(c.name)}?\n\n" + self.running_lines(c.name),
                lambda: self.call_engine(
                    lambda: self.engine.restart_container_by(c.name, BY + " (restart)"), f"restarted {visible(c.name)}"
                ),
            )

    def action_shell(self) -> None:
        """Your shell in the container's repository, as a redirected command (qpod exec -t):
        the dashboard steps aside, exit comes back."""
        c = self._need_selection()
        if c is None:
            return
        if c.state != "running":
            key = self.app.key_for("containers.restart")  # type: ignore[attr-defined]
            self.notify(f"{visible(c.name)} is {visible(c.state)}: restart it ({key}) first", severity="warning")
            return
        self._prepare_shell(c)

    @work(thread=True, exclusive=True, group="shell")
    def _prepare_shell(self, c: ContainerRow) -> None:
        try:
            found = self.engine.repo_shell_command(c.repository, c.environment)
            argv, env, cwd = found if found is not None else (*self.engine.shell_command(c.name), None)
        except QpodError as err:
            self.app.call_from_thread(self.notify, str(err), severity="error")
            return
        self.post_message(self.Shell(c.name, argv, env, cwd))

    @on(Shell)
    def _run_shell(self, msg: Shell) -> None:
        try:
            with self.app.suspend():
                where = f" in {visible(msg.cwd)}" if msg.cwd else ""
                print(f"qpod: shell in {visible(msg.name)}{where}; exit returns to qpod tui", flush=True)
                subprocess.run(msg.argv, env=msg.env, cwd=msg.cwd, check=False)
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
