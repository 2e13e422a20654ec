"""View 4: the log of redirected commands, newest at the bottom, following new records.

The records stay on disk: a LogIndex holds their offsets, a filter is a scan in a worker that
yields record numbers, and the table draws only what is on screen. ``changed()`` is called when
the log file changes (watchfiles, see the app): the index picks up what was appended.
"""

from array import array
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Checkbox, Input, Select, Static
from textual.worker import get_current_worker

from qpod_engine.api import Engine, Filter, LogIndex, QpodError, format_argv, visible

from ..safe import literal
from ..screens.dialogs import PickScreen
from ..screens.record import RecordScreen
from ..terminal import run_in_terminal
from .log_table import LogTable
from .running import RunningPanel, elapsed

SIGNAL_HINTS = {
    "INT": "interrupt, as Ctrl-C",
    "TERM": "terminate",
    "KILL": "kill at once (cannot be caught)",
    "HUP": "hang up",
    "USR1": "user signal 1",
    "USR2": "user signal 2",
}

FILTER_DELAY = 0.15  # seconds of typing quiet before a filter scan starts


class CommandLogView(Vertical):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "toggle_follow", "Follow", tooltip="Follow new records (toggle)", id="log.follow"),
        Binding("f", "toggle_failed", "Failed only", tooltip="Show failed commands only (toggle)", id="log.failed"),
        Binding("c", "copy", "Copy command", tooltip="Copy the command line to the clipboard", id="log.copy"),
        Binding("x", "signal", "Signal", tooltip="Send a signal to the highlighted running command", id="log.signal"),
        Binding("r", "rerun", "Run again", tooltip="Run the record's command again in its directory", id="log.rerun"),
        Binding("e", "shell", "Shell", tooltip="Open your shell in the record's directory", id="log.shell"),
        Binding(
            "escape", "clear_filter", "Clear filter", show=False, tooltip="Clear the log filter", id="log.clear_filter"
        ),
    ]

    class Appended(Message):
        """Records [start, stop) of the index were scanned with filter ``generation``."""

        def __init__(self, generation: int, start: int, stop: int, matches: Sequence[int] | None, reset: bool) -> None:
            super().__init__()
            # ``end``, not ``stop``: Message.stop() is the method that stops its propagation
            self.generation, self.start, self.end, self.matches, self.reset = (generation, start, stop, matches, reset)

    class RunningNow(Message):
        """The commands running now (``LogIndex.running``), read after an index refresh."""

        def __init__(self, records: list[dict[str, Any]]) -> None:
            super().__init__()
            self.records = records

    class Filtered(Message):
        def __init__(self, generation: int, stop: int, matches: Sequence[int]) -> None:
            super().__init__()
            self.generation, self.end, self.matches = generation, stop, matches

    class InTerminal(Message):
        """A program to run in the dashboard's terminal (a record's command again, a shell)."""

        def __init__(self, header: str, argv: list[str], env: dict[str, str], cwd: str, wait_key: bool) -> None:
            super().__init__()
            self.header, self.argv, self.env, self.cwd, self.wait_key = header, argv, env, cwd, wait_key

    class Choices(Message):
        def __init__(self, repos: list[str], envs: list[str]) -> None:
            super().__init__()
            self.repos, self.envs = repos, envs

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.index: LogIndex | None = None
        self.flt: Filter | None = None  # None: every record
        self.generation = 0  # bumped by every filter change; older scan results are dropped
        self.rows: Sequence[int] = range(0)
        self.scanned = 0  # index records the rows account for
        self.scanning = False
        self._filter_timer: Timer | None = None
        self._keep_record: int | None = None  # the record the cursor stays on once the filter changed
        self.running: list[dict[str, Any]] = []

    @property
    def engine(self) -> Engine:
        return self.app.engine  # type: ignore[attr-defined]

    def compose(self) -> ComposeResult:
        with Horizontal(id="log-filters"):
            yield Input(placeholder="/ filter text", id="log-text", compact=True)
            yield Select([], prompt="any repo", id="log-repo", compact=True)
            yield Select([], prompt="any env", id="log-env", compact=True)
            yield Checkbox("failed only", id="log-failed", compact=True)
        yield RunningPanel(id="log-running")
        yield LogTable(id="log-table")
        yield Static("", id="log-status")

    @property
    def table(self) -> LogTable:
        return self.query_one(LogTable)

    def on_mount(self) -> None:
        self.set_interval(1.0, self._tick)

    def activated(self) -> None:
        self.table.focus()
        self.prepare()
        self._load_choices()

    def first_load(self, wait: float) -> None:  # noqa: ARG002 - the log is indexed in a worker
        self.activated()

    def prepare(self) -> None:
        """Open and index the log (in a worker), also while another view is shown: the tab
        title counts the running commands."""
        if self.index is None:
            self.index = self.engine.open_log()
        self.changed()

    # --- reading the log

    def changed(self) -> None:
        """The log file changed (or the view opened): index and show what is new."""
        if self.index is not None and not self.scanning:
            self._refresh_index(self.index, self.generation, self.flt, self.scanned)

    @work(thread=True, exclusive=True, group="log-refresh")
    def _refresh_index(self, index: LogIndex, generation: int, flt: Filter | None, start: int) -> None:
        added, reset = index.refresh()
        self.post_message(self.RunningNow(index.running()))
        if reset:
            start = 0
        stop = len(index)
        if not added and not reset and start == stop:
            return
        matches = index.scan(flt, start, stop) if flt is not None else None
        self.post_message(self.Appended(generation, start, stop, matches, reset))

    @on(Appended)
    def _appended(self, msg: Appended) -> None:
        if msg.generation != self.generation:
            return  # scanned with a filter no longer in force
        if msg.reset:
            self.rows, self.scanned = range(0), 0
        if msg.start != self.scanned:
            self.changed()  # a gap: scan again from where the rows end
            return
        if msg.matches is None:
            self.rows = range(msg.end)
        else:
            rows = self.rows if isinstance(self.rows, array) else array("q", self.rows)
            rows.extend(msg.matches)
            self.rows = rows
        self.scanned = msg.end
        self._show()

    # --- what is running now

    @on(RunningNow)
    def _running_now(self, msg: RunningNow) -> None:
        self.show_running(msg.records)

    def _tick(self) -> None:
        """Each second while something runs: elapsed times move on, a command whose launcher
        died leaves, and the log is read again (an end record turns into its row within a
        second even if the file watcher missed it)."""
        if self.running and self.index is not None:
            self.show_running(self.index.running())
            self.changed()

    def show_running(self, records: list[dict[str, Any]]) -> None:
        before = len(self.running)
        self.running = records
        self.query_one(RunningPanel).show(records, self.engine.now())
        if len(records) != before:
            self.app.running_count(len(records))  # type: ignore[attr-defined]

    def _show(self) -> None:
        assert self.index is not None
        keep = None if self.scanning else self._keep_record
        if keep is not None:
            self._keep_record = None
            at = bisect_left(self.rows, keep)  # (record numbers, ascending)
            if at < len(self.rows) and self.rows[at] == keep:
                self.table.follow = False
                self.table.set_rows(self.index, self.rows)
                self.table.cursor = at
                self._status()
                self.app.first_rows_shown()  # type: ignore[attr-defined]
                return
        self.table.set_rows(self.index, self.rows)
        self._status()
        self.app.first_rows_shown()  # type: ignore[attr-defined]  # (the first view's: the others follow)

    def _status(self) -> None:
        total = len(self.index) if self.index is not None else 0
        shown = f"{len(self.rows):,} of {total:,} records" if self.flt is not None else f"{total:,} records"
        key = self.app.key_for("log.follow")  # type: ignore[attr-defined]
        follow = f"following ({key} pauses)" if self.table.follow else f"paused ({key} follows)"
        busy = " · filtering…" if self.scanning else ""
        self.query_one("#log-status", Static).update(literal(f"{shown} · {follow}{busy}"))

    # --- filtering

    def current_filter(self) -> Filter | None:
        text = self.query_one("#log-text", Input).value
        repo = self.query_one("#log-repo", Select).value
        env = self.query_one("#log-env", Select).value
        failed = self.query_one("#log-failed", Checkbox).value
        flt = self.engine.log_filter(
            text, repo if isinstance(repo, str) else None, env if isinstance(env, str) else None, failed
        )
        return flt if (flt.text or flt.repo or flt.env or flt.failed) else None

    @on(Input.Changed, "#log-text")
    def _text_changed(self) -> None:
        if self._filter_timer is not None:
            self._filter_timer.stop()
        self._filter_timer = self.set_timer(FILTER_DELAY, self.apply_filter)

    @on(Input.Submitted, "#log-text")
    def _text_submitted(self) -> None:
        self.table.focus()

    @on(Select.Changed)
    @on(Checkbox.Changed)
    def _choice_changed(self) -> None:
        self.apply_filter()

    def apply_filter(self) -> None:
        self.flt = self.current_filter()
        self.generation += 1
        if self.index is None:
            return
        if self.flt is None:
            self.scanning = False
            self.rows, self.scanned = range(len(self.index)), len(self.index)
            self._show()
            self.changed()
            return
        self.scanning = True
        self._status()
        self._scan(self.index, self.flt, self.generation)

    @work(thread=True, exclusive=True, group="log-filter")
    def _scan(self, index: LogIndex, flt: Filter, generation: int) -> None:
        worker = get_current_worker()
        stop = len(index)
        matches = index.scan(flt, 0, stop, cancelled=lambda: worker.is_cancelled)
        if not worker.is_cancelled:
            self.post_message(self.Filtered(generation, stop, matches))

    @on(Filtered)
    def _filtered(self, msg: Filtered) -> None:
        if msg.generation != self.generation:
            return
        self.scanning = False
        self.rows, self.scanned = msg.matches, msg.end
        self._show()
        self.changed()  # records appended while scanning

    def action_filter(self) -> None:
        self.query_one("#log-text", Input).focus()

    def action_open(self) -> None:
        self.table.action_open()

    def action_clear_filter(self) -> None:
        """Esc: the filter text only (repository, environment and failed only stay, each has
        its own control); the cursor stays on its record."""
        text = self.query_one("#log-text", Input)
        if self._filter_timer is not None:
            self._filter_timer.stop()
        if text.value:
            self._keep_record = self.table.current
            text.value = ""
            self.apply_filter()
        self.table.focus()

    def action_toggle_failed(self) -> None:
        box = self.query_one("#log-failed", Checkbox)
        box.value = not box.value

    @work(thread=True, exclusive=True, group="log-choices")
    def _load_choices(self) -> None:
        try:
            repos = [r.root for r in self.engine.repositories()]
            envs = self.engine.environment_names()
        except QpodError:
            return  # the filter still works by text
        self.post_message(self.Choices(repos, envs))

    @on(Choices)
    def _choices(self, msg: Choices) -> None:
        for select_id, values in (("#log-repo", msg.repos), ("#log-env", msg.envs)):
            select = self.query_one(select_id, Select)
            keep = select.value
            select.set_options([(literal(v), v) for v in values])
            if isinstance(keep, str) and keep in values:
                select.value = keep

    # --- follow, open, copy

    def action_toggle_follow(self) -> None:
        self.table.follow = not self.table.follow

    @on(LogTable.FollowChanged)
    def _follow_changed(self) -> None:
        if self.index is not None:
            self._status()

    def record_under_cursor(self) -> dict[str, Any] | None:
        number = self.table.current
        return self.index.record(number) if self.index is not None and number is not None else None

    @on(LogTable.Opened)
    def _open(self, msg: LogTable.Opened) -> None:
        assert self.index is not None
        rec = self.index.record(msg.number)
        if rec is not None:
            self.app.push_screen(RecordScreen(rec, self.copy, self.act))

    @on(RunningPanel.Opened)
    def _open_running(self, msg: RunningPanel.Opened) -> None:
        self.app.push_screen(RecordScreen({**msg.record, "state": "running"}, self.copy, self.act))

    def act(self, what: str, rec: dict[str, Any]) -> None:
        """A record screen's action on its record."""
        if what == "signal":
            self.pick_signal(rec)
        elif what == "rerun":
            self._prepare_rerun(rec)
        elif what == "shell":
            self._prepare_shell(rec)

    # --- acting on what runs, and on a record

    @property
    def running_panel(self) -> RunningPanel:
        return self.query_one(RunningPanel)

    def action_signal(self) -> None:
        rec = self.running_panel.current
        if rec is None:
            self.notify("Nothing runs now: x signals a running command (listed above the log)", severity="warning")
            return
        self.pick_signal(rec)

    def pick_signal(self, rec: dict[str, Any]) -> None:
        argv = format_argv([str(a) for a in rec.get("argv") or []])
        started = rec.get("started")
        took = f"running {elapsed(self.engine.now() - started)}, " if isinstance(started, (int, float)) else ""
        title = (  # one fact a line: the dialog's width cuts a line, never a field in the middle of one
            f"Send a signal to {argv}\n"
            f"in {rec.get('repo') or '-'}\n"
            f"{took}container {rec.get('container') or '-'}\n"
            "It goes to the command's process group there."
        )
        options = [(f"{name:<5} {SIGNAL_HINTS.get(name, '')}", name) for name in self.engine.signal_names()]

        def chosen(name: str | None) -> None:
            if name:
                self._send_signal(rec, name)

        self.app.push_screen(PickScreen(title, options, current=options[0][1]), chosen)

    @work(thread=True, group="signal")
    def _send_signal(self, rec: dict[str, Any], name: str) -> None:
        try:
            said = self.engine.signal_command(rec, name)
        except QpodError as err:
            self.app.call_from_thread(self.notify, str(err), severity="error", timeout=8)
            return
        self.app.call_from_thread(self.notify, said)
        self.app.call_from_thread(self.changed)  # (a KILL wrote the end record)

    def _acted_on(self) -> dict[str, Any] | None:
        """The record r and e act on: the running command highlighted when the running list has
        focus, else the record under the table's cursor."""
        panel = self.running_panel
        rec = panel.current if panel.has_focus else self.record_under_cursor()
        if rec is None:
            self.notify("No record selected", severity="warning")
        return rec

    def action_rerun(self) -> None:
        rec = self._acted_on()
        if rec is not None:
            self._prepare_rerun(rec)

    def action_shell(self) -> None:
        rec = self._acted_on()
        if rec is not None:
            self._prepare_shell(rec)

    @work(thread=True, group="terminal")
    def _prepare_rerun(self, rec: dict[str, Any]) -> None:
        try:
            argv, env, cwd = self.engine.rerun_command(rec)
        except QpodError as err:
            self.app.call_from_thread(self.notify, str(err), severity="error")
            return
        line = visible(format_argv([str(a) for a in rec.get("argv") or []]))
        header = f"qpod: {line} in {visible(cwd)}, again (qpod exec); the dashboard comes back after it"
        self.post_message(self.InTerminal(header, argv, env, cwd, wait_key=True))

    @work(thread=True, group="terminal")
    def _prepare_shell(self, rec: dict[str, Any]) -> None:
        try:
            argv, env, cwd = self.engine.record_shell_command(rec)
        except QpodError as err:
            self.app.call_from_thread(self.notify, str(err), severity="error")
            return
        header = f"qpod: shell in {visible(rec.get('env') or '-')} in {visible(cwd)}; exit returns to qpod tui"
        self.post_message(self.InTerminal(header, argv, env, cwd, wait_key=False))

    @on(InTerminal)
    def _in_terminal(self, msg: InTerminal) -> None:
        try:
            run_in_terminal(self.app, msg.header, msg.argv, msg.env, msg.cwd, msg.wait_key, self.engine.status_signal)
        except Exception as err:  # noqa: BLE001 - SuspendNotSupported (e.g. textual-web) or exec failure
            self.notify(f"cannot run it here: {err}", severity="error")
        self.changed()

    def action_copy(self) -> None:
        rec = self.record_under_cursor()
        if rec is None:
            self.notify("No record selected", severity="warning")
            return
        self.copy(rec)

    def copy(self, rec: dict[str, Any]) -> None:
        line = format_argv([str(a) for a in rec.get("argv") or []])
        self.app.copy_to_clipboard(line)
        self.notify(f"copied: {visible(line)}")
