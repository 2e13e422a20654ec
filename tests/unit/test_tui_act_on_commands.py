"""Acting on what runs and on a record, from the command log view: ``x`` sends a running command
a signal (a picker, Enter is SIGINT), ``r`` runs a record's command again in its directory, ``e``
opens a shell there; the containers view's stop and restart confirmations list what runs in the
container. The commands here are the demo's start records (no client to signal: the demo engine
notes what was asked) or a real log and real directories for r and e (the terminal step is
replaced: Pilot's headless app cannot suspend)."""

import os
import time

import pytest
from textual.widgets import OptionList
from tui_pilot import settle, wait_for

from qpod_engine.api import Engine
from qpod_engine.log import cmdlog
from qpod_tui.app import QpodApp, make_app
from qpod_tui.demo_engine import DemoEngine
from qpod_tui.screens.dialogs import ConfirmScreen, PickScreen
from qpod_tui.screens.record import RecordScreen, record_text
from qpod_tui.widgets import command_log
from qpod_tui.widgets.command_log import CommandLogView
from qpod_tui.widgets.running import RunningPanel

SIZE = (140, 40)
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def log_view(app: QpodApp) -> CommandLogView:
    return app.view("log")  # type: ignore[return-value]


def options(screen: PickScreen) -> list[str]:
    ol = screen.query_one(OptionList)
    return [str(ol.get_option_at_index(i).id) for i in range(ol.option_count)]


async def test_x_opens_the_signal_picker_and_enter_sends_sigint(tmp_path):
    engine = DemoEngine(str(tmp_path), running=3)
    app = make_app(engine, view="log", watch=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        panel = log_view(app).query_one(RunningPanel)
        await wait_for(pilot, lambda: len(panel.records) == 3)
        first = panel.current
        assert first is not None
        await pilot.press("x")
        assert isinstance(app.screen, PickScreen)
        assert options(app.screen) == ["INT", "TERM", "KILL", "HUP", "USR1", "USR2"]
        assert app.screen.query_one(OptionList).highlighted == 0  # Enter: SIGINT, as Ctrl-C
        title = app.screen.title_text
        assert "make -j8 all" in title and first["container"] in title and "process group" in title
        await pilot.press("enter")
        await wait_for(pilot, lambda: ("signal_command", f"{first['id']} INT") in engine.calls)
        assert not isinstance(app.screen, PickScreen)

        # focus in the running list: the arrows pick another command, x signals that one
        panel.focus()
        await pilot.press("down")
        second = panel.current
        assert second is not None and second["id"] != first["id"]
        await pilot.press("x")
        assert isinstance(app.screen, PickScreen)
        await pilot.press("down", "down", "enter")  # KILL
        await wait_for(pilot, lambda: ("signal_command", f"{second['id']} KILL") in engine.calls)

        # Esc in the picker sends nothing
        calls = len(engine.calls)
        await pilot.press("x", "escape")
        await settle(pilot)
        assert len(engine.calls) == calls


async def test_enter_on_a_running_command_opens_its_record_and_x_there_signals_it(tmp_path):
    engine = DemoEngine(str(tmp_path), running=2)
    app = make_app(engine, view="log", watch=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        panel = log_view(app).query_one(RunningPanel)
        await wait_for(pilot, lambda: len(panel.records) == 2)
        panel.focus()
        await pilot.press("enter")
        assert isinstance(app.screen, RecordScreen) and app.screen.running
        shown = str(app.screen.query_one("#record-text").render())
        assert "- (running)" in shown and "make -j8 all" in shown
        await pilot.press("x")
        assert isinstance(app.screen, PickScreen)
        await pilot.press("down", "enter")  # TERM
        rid = panel.records[0]["id"]
        await wait_for(pilot, lambda: ("signal_command", f"{rid} TERM") in engine.calls)


async def test_x_with_nothing_running_says_so(tmp_path):
    app = make_app(DemoEngine(str(tmp_path)), view="log", watch=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("x")
        assert not isinstance(app.screen, PickScreen)
        assert any("Nothing runs now" in n.message for n in app._notifications)


async def test_a_signal_that_cannot_be_sent_is_reported(qpod_home):
    """The real engine and a start record whose pid is not a qpod client (this test's own
    process): nothing is sent, the notification says why."""
    rec = {
        "id": "f00d",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        "repo": "/src/a",
        "env": "e",
        "container": "c",
        "cwd": "/src/a",
        "argv": ["make"],
        "pid": os.getpid(),
        "status": None,
    }
    cmdlog.append(rec)

    class AliveEngine(Engine):
        def open_log(self):  # type: ignore[no-untyped-def]
            index = super().open_log()
            index.running = lambda alive=None: [  # type: ignore[method-assign]
                {**rec, "state": "running", "started": time.time()}
            ]
            return index

    app = make_app(AliveEngine(), view="log", watch=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        panel = log_view(app).query_one(RunningPanel)
        await wait_for(pilot, lambda: panel.current is not None)
        await pilot.press("x", "enter")
        await wait_for(pilot, lambda: any("no longer its qpod client" in n.message for n in app._notifications))


def a_record(cwd: str, repo: str, argv: list[str], status: int = 0) -> dict:
    return {
        "time": "2026-01-01T00:00:00.000+00:00",
        "repo": repo,
        "env": "bb",
        "container": "c",
        "cwd": cwd,
        "argv": argv,
        "path": "/usr/bin/make",
        "reason": "r",
        "status": status,
        "duration": 1.0,
    }


async def test_r_runs_the_record_again_in_its_cwd_and_e_opens_a_shell_there(qpod_home, tmp_path, monkeypatch):
    repo = tmp_path / "proj"
    sub = repo / "sub" / "dir"
    sub.mkdir(parents=True)
    cmdlog.append(a_record(str(sub), str(repo), ["make", "-C", "x y", "all"], status=2))
    ran: list[tuple] = []

    def fake_terminal(app, header, argv, env, cwd, wait_key, signal_of=None):  # type: ignore[no-untyped-def]
        ran.append((header, argv, cwd, wait_key))
        return 0

    monkeypatch.setattr(command_log, "run_in_terminal", fake_terminal)
    monkeypatch.setenv("SHELL", "/bin/sh")  # (another shell would be looked for in the container)
    app = make_app(Engine(), view="log", watch=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        view = log_view(app)
        await wait_for(pilot, lambda: len(view.table.rows) == 1)
        await pilot.press("r")
        await wait_for(pilot, lambda: len(ran) == 1)
        header, argv, cwd, wait_key = ran[0]
        assert argv[-6:] == ["exec", "--", "make", "-C", "x y", "all"] and cwd == str(sub) and wait_key
        assert "make -C 'x y' all" in header and str(sub) in header
        await pilot.press("e")
        await wait_for(pilot, lambda: len(ran) == 2)
        header, argv, cwd, wait_key = ran[1]
        assert argv[-6:] == ["exec", "--env", "bb", "-t", "--", "/bin/sh"] and cwd == str(sub) and not wait_key
        # from the record's own screen too
        await pilot.press("enter")
        assert isinstance(app.screen, RecordScreen)
        await pilot.press("r")
        await wait_for(pilot, lambda: len(ran) == 3)
        assert not isinstance(app.screen, RecordScreen)


async def test_r_on_a_record_whose_directory_is_gone_says_so(qpod_home, tmp_path):
    cmdlog.append(a_record(str(tmp_path / "gone" / "sub"), str(tmp_path / "gone"), ["make"]))
    app = make_app(Engine(), view="log", watch=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await wait_for(pilot, lambda: len(log_view(app).table.rows) == 1)
        await pilot.press("r")
        await wait_for(pilot, lambda: any("the directory is gone" in n.message for n in app._notifications))


def test_a_record_ended_by_a_signal_names_it():
    engine = Engine()
    assert "130 (SIGINT)" in str(record_text({"status": 130}, engine.status_signal))
    assert "137 (SIGKILL)" in str(record_text({"status": 137}, engine.status_signal))
    assert "(SIG" not in str(record_text({"status": 2}, engine.status_signal))
    shown = str(record_text({"status": 137, "ended": "killed the command's process group: its client got SIGKILL"}))
    assert "its client got SIGKILL" in shown


# --- item 2: stop and restart say what they end ----------------------------------------------


async def test_stop_and_restart_confirmations_list_the_commands_running_in_the_container(tmp_path):
    engine = DemoEngine(str(tmp_path), running=3)
    app = make_app(engine, view="containers", watch=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        view = app.view("containers")
        log = log_view(app)
        await wait_for(pilot, lambda: len(log.running) == 3 and view.containers)
        busy = log.running[0]["container"]
        mine = [r for r in log.running if r["container"] == busy]
        view.table.move_cursor(row=view.table.get_row_index(busy))
        await pilot.press("s")
        assert isinstance(app.screen, ConfirmScreen)
        question = app.screen.question
        for rec in mine:
            assert " ".join(rec["argv"]) in question and rec["repo"] in question
        assert "12m14s" in question  # the demo's first command started 734 s before its "now"
        assert "stopped by qpod tui" in question
        await pilot.press("y")
        await wait_for(pilot, lambda: ("stop_container", busy) in engine.calls)

        await pilot.press("r")
        assert isinstance(app.screen, ConfirmScreen) and "make -j8 all" in app.screen.question
        await pilot.press("n")

        idle = next(c.name for c in view.containers.values() if c.name not in {r["container"] for r in log.running})
        view.table.move_cursor(row=view.table.get_row_index(idle))
        await pilot.press("s")
        assert isinstance(app.screen, ConfirmScreen) and "Nothing runs in it now." in app.screen.question
        await pilot.press("n")
