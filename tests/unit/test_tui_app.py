"""qpod tui, driven with Pilot: each action against real config files, real git repositories
and a real command log. Podman is not asked here (its tests are in test_tui_podman.py): the
engine below only refuses podman calls, everything else is the real engine."""

import os
import time
from pathlib import Path

import pytest
from conftest import run_qpod
from textual import events
from textual.widgets import Input, Select
from tui_pilot import settle, wait_for

from qpod_engine.api import Engine
from qpod_engine.base import paths
from qpod_engine.base.errors import QpodError
from qpod_engine.config import bindings
from qpod_engine.log import cmdlog
from qpod_tui.app import QpodApp, make_app
from qpod_tui.demo_engine import DemoEngine
from qpod_tui.screens.bind import BindScreen
from qpod_tui.screens.dialogs import ConfirmScreen, PickScreen, TextScreen
from qpod_tui.screens.env_form import EnvFormScreen
from qpod_tui.screens.help import HelpScreen
from qpod_tui.screens.record import RecordScreen
from qpod_tui.widgets.command_log import CommandLogView
from qpod_tui.widgets.log_table import LogTable

SIZE = (140, 40)
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # Textual runs on asyncio


class NoPodmanEngine(Engine):
    """The real engine minus podman: these tests are about config and log handling."""

    def container_states(self) -> dict[str, str]:
        raise QpodError("podman not asked in this test")

    def containers(self):  # type: ignore[no-untyped-def]
        raise QpodError("podman not asked in this test")

    def image_present(self, ref: str) -> bool:
        raise QpodError("podman not asked in this test")


def env_add(name: str, image: str = "localhost/qpod-busybox:latest") -> None:
    r = run_qpod("env", "add", name, "--image", image)
    assert r.returncode == 0, r.stderr


def table_keys(app: QpodApp, view: str) -> list[str]:
    table = app.view(view).table  # type: ignore[attr-defined]
    return [row.value for row in table.rows]


@pytest.fixture
def engine(qpod_home) -> NoPodmanEngine:
    return NoPodmanEngine()


# --- repositories ---------------------------------------------------------------------------


async def test_bind_through_the_dialog_writes_what_qpod_init_writes(engine, make_repo, tmp_path, monkeypatch):
    env_add("old")
    env_add("new")
    root = str(make_repo("proj"))
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("b")
        assert isinstance(app.screen, BindScreen)
        await settle(pilot)
        app.screen.query_one("#field-path", Input).value = root + "/"
        app.screen.query_one("#field-environment", Select).value = "new"
        app.screen.query_one("#field-branch", Input).focus()
        await pilot.press(*"release/*", "enter")
        await settle(pilot)
        assert not isinstance(app.screen, BindScreen)
        assert table_keys(app, "repositories") == [os.path.realpath(root)]
    ui_written = Path(paths.repositories_file()).read_text()

    # the same binding through the CLI, in another config dir: the same file
    monkeypatch.setenv("QPOD_CONFIG_DIR", str(tmp_path / "cli-config"))
    env_add("new")
    r = run_qpod("init", "new", "--branch", "release/*", cwd=root)
    assert r.returncode == 0, r.stderr
    assert Path(paths.repositories_file()).read_text() == ui_written


async def test_bind_errors_appear_beside_their_field(engine, make_repo, tmp_path):
    env_add("good")
    env_add("other")  # (with one environment only, it is chosen already)
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("b")
        await settle(pilot)
        screen = app.screen
        screen.query_one("#field-path", Input).value = str(tmp_path / "not-a-repo")
        await pilot.click("#submit")
        assert "choose an environment" in str(screen.query_one("#error-environment").render())
        screen.query_one("#field-environment", Select).value = "good"
        await pilot.press("ctrl+s")  # a second click this soon would hit the button's press animation
        await settle(pilot)
        error = screen.query_one("#error-path")
        assert error.display and "not inside a git repository" in str(error.render())
        assert app.screen is screen  # the dialog stays open for a correction
    assert bindings.load_bindings() == {}


async def test_path_completion(engine, tmp_path):
    (tmp_path / "projects" / "mmsx-2018").mkdir(parents=True)
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("b")
        await settle(pilot)
        box = app.screen.query_one("#field-path", Input)
        box.value = f"{tmp_path}/projects/"  # (typing a long temp path key by key only takes time)
        box.focus()
        box.cursor_position = len(box.value)
        await pilot.press("m", "m")
        await wait_for(pilot, lambda: box._suggestion.endswith("mmsx-2018/"))
        await pilot.press("tab")
        assert box.value == f"{tmp_path}/projects/mmsx-2018/"


async def test_change_environment_branch_rules_and_unbind(engine, make_repo):
    env_add("old")
    env_add("new")
    root = os.path.realpath(make_repo("proj"))
    assert run_qpod("init", "old", cwd=root).returncode == 0
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        # change the environment
        await pilot.press("e")
        await settle(pilot)
        assert isinstance(app.screen, PickScreen)
        await pilot.press("down", "enter")  # old -> new (sorted: new, old; current highlighted)
        await settle(pilot)
        assert bindings.load_bindings()[root].environment in ("new",)
        # add a branch rule
        await pilot.press("a")
        await settle(pilot)
        app.screen.query_one("#field-branch", Input).value = "release/*"
        app.screen.query_one("#field-environment", Select).value = "old"
        await pilot.click("#submit")
        await settle(pilot)
        assert bindings.load_bindings()[root].branches == {"release/*": "old"}
        assert "release/* → old" in str(app.view("repositories").table.get_row_at(0)[3])
        # remove it
        await pilot.press("x")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert bindings.load_bindings()[root].branches == {}
        # unbind: "no" keeps it, "yes" removes it
        await pilot.press("u")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await settle(pilot)
        assert root in bindings.load_bindings()
        await pilot.press("u", "y")
        await settle(pilot)
        assert bindings.load_bindings() == {}
        assert table_keys(app, "repositories") == []


# --- environments ---------------------------------------------------------------------------


async def test_new_environment_with_an_invalid_field(engine):
    app = make_app(engine, view="environments")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("n")
        form = app.screen
        assert isinstance(form, EnvFormScreen)
        form.query_one("#field-name", Input).value = "centos7"
        form.query_one("#field-image", Input).value = "docker.io/library/centos:7"
        form.query_one("#field-commands", Input).value = "make /usr/bin/gdb"
        await pilot.press("ctrl+s")
        await settle(pilot)
        error = form.query_one("#error-commands")
        assert error.display and "must be a bare command name" in str(error.render())
        assert app.focused is form.query_one("#field-commands")
        assert not os.path.exists(paths.environment_file("centos7"))
        form.query_one("#field-commands", Input).value = "make gdb"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert not isinstance(app.screen, EnvFormScreen)
        assert table_keys(app, "environments") == ["centos7"]
    assert engine.load_environment("centos7").commands == ["make", "gdb"]


async def test_edit_environment_with_an_invalid_field_keeps_the_file(engine):
    env_add("bb")
    before = Path(paths.environment_file("bb")).read_text()
    app = make_app(engine, view="environments")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("e")
        await settle(pilot)
        form = app.screen
        assert form.query_one("#field-image", Input).value == "localhost/qpod-busybox:latest"
        assert form.query_one("#field-name", Input).disabled
        form.query_one("#field-mounts").load_text("/opt/tools:/opt/tools:ro\nrelative:/x")
        form.query_one("#field-ulimits", Input).value = "nofile=many"
        await pilot.click("#submit")
        await settle(pilot)
        # every error at once, each beside its field, focus on the first
        assert "host path must be absolute" in str(form.query_one("#error-mounts").render())
        assert "'ulimits': 'nofile' must be SOFT[:HARD]" in str(form.query_one("#error-ulimits").render())
        assert app.focused is form.query_one("#field-mounts")
        assert Path(paths.environment_file("bb")).read_text() == before
        form.query_one("#field-mounts").load_text("/opt/tools:/opt/tools:ro")
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert form.query_one("#error-mounts").display is False
        assert form.query_one("#error-ulimits").display
        assert app.focused is form.query_one("#field-ulimits")
        form.query_one("#field-ulimits", Input).value = "nofile=1024:4096"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert not isinstance(app.screen, EnvFormScreen)
    env = engine.load_environment("bb")
    assert env.mounts == ["/opt/tools:/opt/tools:ro"] and env.ulimits == {"nofile": "1024:4096"}


async def test_every_form_error_at_once_in_screen_order(engine):
    app = make_app(engine, view="environments")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("n")
        form = app.screen
        form.query_one("#field-name", Input).value = "three-mistakes"
        form.query_one("#field-image", Input).value = "docker.io/library/debian:11"
        form.query_one("#field-ulimits", Input).value = "nofile=many"  # last on screen
        form.query_one("#field-commands", Input).value = "make /usr/bin/gdb"
        form.query_one("#field-mounts").load_text("relative:/x")  # first on screen
        await pilot.press("ctrl+s")
        await settle(pilot)
        shown = [
            f
            for f in ("image", "mounts", "commands", "ulimits", "podman_options")
            if form.query_one(f"#error-{f}").display
        ]
        assert shown == ["mounts", "commands", "ulimits"]
        assert app.focused is form.query_one("#field-mounts")
        tops = [form.query_one(f"#error-{f}").virtual_region.y for f in shown]
        assert tops == sorted(tops)  # in screen order
        assert not os.path.exists(paths.environment_file("three-mistakes"))


async def test_delete_environment_confirms_and_is_refused_while_bound(engine, make_repo):
    env_add("used")
    env_add("spare")
    assert run_qpod("init", "used", cwd=make_repo("proj")).returncode == 0
    app = make_app(engine, view="environments")
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await settle(pilot)
        assert table_keys(app, "environments") == ["spare", "used"]
        await pilot.press("down", "d")  # "used"
        assert not isinstance(app.screen, ConfirmScreen)
        assert any("is used by" in n.message for n in app._notifications)
        await pilot.press("up", "d")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await settle(pilot)
        assert table_keys(app, "environments") == ["used"]
    assert engine.environment_names() == ["used"]


async def test_pull_shows_progress_and_finishes(qpod_home, tmp_path):
    """The progress dialog (the pull itself is podman's: test_tui_podman pulls for real)."""
    engine = DemoEngine(str(tmp_path / "demo"))
    app = make_app(engine, view="environments", watch=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("p")
        await settle(pilot)
        assert str(app.screen.query_one("#pull-status").render()).endswith("is here")
        assert app.screen.query_one("#pull-bar").percentage == 1.0


# --- the command log ------------------------------------------------------------------------


def append_records(n: int, start: int = 0, repos: tuple[str, ...] = ("/src/repo0", "/src/repo1", "/src/repo2")) -> None:
    for i in range(start, start + n):
        repo = repos[i % len(repos)]
        cmdlog.append(
            {
                "time": f"2026-01-01T00:00:{i % 60:02d}.000+00:00",
                "repo": repo,
                "env": f"env{i % 2}",
                "argv": ["make", f"target{i}"],
                "status": 2 if i % 5 == 0 else 0,
                "duration": 0.5,
                "cwd": repo,
                "reason": "r",
                "container": "c",
            }
        )


def log_view(app: QpodApp) -> CommandLogView:
    return app.view("log")  # type: ignore[return-value]


async def test_filter_the_log(engine, make_repo):
    env_add("env0")
    env_add("env1")
    repos = tuple(os.path.realpath(make_repo(f"repo{i}")) for i in range(3))
    for i, root in enumerate(repos):
        assert run_qpod("init", f"env{i % 2}", cwd=root).returncode == 0
    append_records(100, repos=repos)
    app = make_app(engine, view="log")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        view = log_view(app)
        assert len(view.table.rows) == 100
        await pilot.press("slash")
        assert app.focused is view.query_one("#log-text")
        await pilot.press(*"target1")  # target1, target10..19
        await wait_for(pilot, lambda: len(view.table.rows) == 11)
        await pilot.press("enter")  # back to the table
        assert isinstance(app.focused, LogTable)
        await pilot.press("f")  # failed only (every 5th): target10, target15
        await wait_for(pilot, lambda: len(view.table.rows) == 2)
        assert [view.index.record(n)["argv"][1] for n in view.table.rows] == ["target10", "target15"]
        assert "2 of 100 records" in str(view.query_one("#log-status").render())
        kept = view.table.current  # target15's record, under the cursor
        await pilot.press("escape")  # clears the text only: failed only stays (every 5th of 100)
        await wait_for(pilot, lambda: len(view.table.rows) == 20)
        assert view.query_one("#log-failed").value and view.query_one("#log-text", Input).value == ""
        assert view.table.current == kept  # the cursor stays on its record
        await pilot.press("f")
        await wait_for(pilot, lambda: len(view.table.rows) == 100)
        view.query_one("#log-env", Select).value = "env1"
        view.query_one("#log-repo", Select).value = repos[1]
        await wait_for(pilot, lambda: len(view.table.rows) == 17)  # i odd and i % 3 == 1
        assert all(view.index.record(n)["env"] == "env1" for n in view.table.rows)


async def test_new_records_appear_and_the_view_follows_them(engine):
    append_records(5)
    app = make_app(engine, view="log")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        view = log_view(app)
        append_records(1, start=5)  # seen by the file watcher, or the view's one-second look
        await wait_for(pilot, lambda: len(view.table.rows) == 6)
        assert view.table.cursor == 5  # following: the newest record is selected
        # with a filter in force, only matching new records are added
        view.query_one("#log-failed").value = True
        await wait_for(pilot, lambda: len(view.table.rows) == 2)  # target0, target5
        append_records(5, start=6)  # target10 fails
        await wait_for(pilot, lambda: len(view.table.rows) == 3)


async def test_scrolling_up_pauses_follow(engine):
    append_records(300)
    app = make_app(engine, view="log")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = log_view(app).table
        assert table.follow and table.cursor == 299
        assert table.scroll_offset.y == table.max_scroll_y > 0
        await pilot.press("pageup")
        assert not table.follow
        cursor = table.cursor
        append_records(3, start=300)
        await wait_for(pilot, lambda: len(table.rows) == 303)
        assert table.cursor == cursor  # paused: the view stays where the user is
        assert "paused" in str(log_view(app).query_one("#log-status").render())
        await pilot.press("s")
        await pilot.pause()
        assert table.follow and table.cursor == 302
        await pilot.pause(0.1)
        assert table.scroll_offset.y == table.max_scroll_y
        # the mouse wheel pauses it too
        table.post_message(events.MouseScrollUp(table, 5, 5, 0, -1, 0, False, False, False))
        await pilot.pause()
        assert not table.follow


async def test_open_a_record_and_copy_its_command_line(engine):
    cmdlog.append(
        {
            "time": "2026-01-01T00:00:00.000+00:00",
            "repo": "/src/r",
            "env": "e",
            "cwd": "/src/r/sub",
            "argv": ["make", "CFLAGS=-O2 -g", "all"],
            "status": 2,
            "reason": "'make' is a command of 'e'",
            "container": "qpod-e-r-1234",
            "duration": 1.5,
        }
    )
    app = make_app(engine, view="log")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("c")
        assert app.clipboard == "make 'CFLAGS=-O2 -g' all"
        await pilot.press("enter")
        assert isinstance(app.screen, RecordScreen)
        text = str(app.screen.query_one("#record-text").render())
        for part in ("/src/r/sub", "'make' is a command of 'e'", "qpod-e-r-1234", "make 'CFLAGS=-O2 -g' all"):
            assert part in text
        app.copy_to_clipboard("")
        await pilot.press("c")
        assert app.clipboard == "make 'CFLAGS=-O2 -g' all"
        await pilot.press("escape")
        assert not isinstance(app.screen, RecordScreen)


# --- the whole app --------------------------------------------------------------------------


async def test_views_keys_help_and_quit(engine):
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for key, view in (("2", "environments"), ("3", "containers"), ("4", "log"), ("1", "repositories")):
            await pilot.press(key)
            await settle(pilot)
            assert app.active_view == view
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.press("q")
    assert app.return_code == 0


async def test_every_binding_has_an_id_and_a_palette_entry(engine):
    from qpod_tui.app import VIEWS

    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for _id, title, cls in VIEWS:
            assert f"Show {title[2:]}" in titles
            for b in cls.BINDINGS:
                assert b.id, b
                if b.show:
                    assert f"{title[2:]}: {b.tooltip}" in titles
        assert "Command log: Open the record in full" in titles
        # a palette entry runs its action on its view
        [bind] = [c for c in app.get_system_commands(app.screen) if "Bind a repository" in c.title]
        bind.callback()
        await settle(pilot)
        assert isinstance(app.screen, BindScreen)
    # every Binding of every class in qpod_tui has an id (so settings.yaml can remap it)
    import importlib
    import inspect
    import pkgutil

    import qpod_tui

    for mod in pkgutil.walk_packages(qpod_tui.__path__, "qpod_tui."):
        for _name, cls in inspect.getmembers(importlib.import_module(mod.name), inspect.isclass):
            if cls.__module__ == mod.name:
                for b in cls.__dict__.get("BINDINGS", []):
                    assert b.id, f"{cls.__name__}: {b}"


async def test_keymap_from_settings(engine):
    os.makedirs(paths.config_dir(), exist_ok=True)
    with open(paths.settings_file(), "w") as f:
        f.write("keymap:\n  repos.bind: ctrl+b\n  repos.bnid: ctrl+x\n  view.log: l\n  nav.down: n\n")
    app = make_app(engine)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await settle(pilot)
        await pilot.press("b")
        assert not isinstance(app.screen, BindScreen)
        await pilot.press("ctrl+b")
        assert isinstance(app.screen, BindScreen)
        await pilot.press("escape", "l")
        await settle(pilot)
        assert app.active_view == "log"
        assert ("ctrl+b", "Bind a repository to an environment", "repos.bind") in [
            (k.replace("^", "ctrl+").lower(), d, i) for _t, rows in app.help_sections() for k, d, i in rows
        ]
        # the misspelt id is reported once, with the file and its line, not ignored silently
        reports = [n.message for n in app._notifications if "repos.bnid" in n.message]
        assert len(reports) == 1 and f"{paths.settings_file()}:3: keymap: unknown binding id" in reports[0]
        # one id remaps the key in every table: n moves down the log as it would in the others
        table = log_view(app).table
        append_records(3)
        await wait_for(pilot, lambda: len(table.rows) == 3)
        await pilot.press("g")
        assert table.cursor == 0
        await pilot.press("n")
        assert table.cursor == 1


async def test_podman_unavailable_only_the_containers_view_says_so(tmp_path):
    engine = DemoEngine(str(tmp_path), podman=False)
    app = make_app(engine, watch=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert len(table_keys(app, "repositories")) == 12
        await pilot.press("3")
        await settle(pilot)
        message = str(app.view("containers").query_one(".view-message").render())
        assert "podman is unavailable" in message
        await pilot.press("2")
        await settle(pilot)
        assert len(table_keys(app, "environments")) == 4
        await pilot.press("4")
        await settle(pilot)
        assert len(log_view(app).table.rows) == 60


async def test_broken_config_is_reported_and_the_rest_works(engine):
    append_records(3)
    os.makedirs(paths.config_dir(), exist_ok=True)
    Path(paths.repositories_file()).write_text("repositories:\n  relative/path:\n    environment: x\n")
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        message = str(app.view("repositories").query_one(".view-message").render())
        assert "repositories.yaml:2" in message and "must be an absolute path" in message
        await pilot.press("4")
        await settle(pilot)
        assert len(log_view(app).table.rows) == 3


async def test_a_broken_keymap_is_reported(engine):
    os.makedirs(paths.config_dir(), exist_ok=True)
    Path(paths.settings_file()).write_text("keymap: [not, a, mapping]\n")
    app = make_app(engine)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await settle(pilot)
        assert any("keymap ignored" in n.message and "settings.yaml:1" in n.message for n in app._notifications)
        await pilot.press("b")  # the default keys still work
        assert isinstance(app.screen, BindScreen)


# --- what is running now --------------------------------------------------------------------


def iso_now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}+00:00"


def start_record(rid: str, pid: int, argv: list[str]) -> dict:
    """A start record as the launcher writes it (exec_transport.run): status null, its pid."""
    return {
        "id": rid,
        "time": iso_now(),
        "repo": "/src/repo0",
        "branch": "main",
        "env": "env0",
        "container": "c",
        "cwd": "/src/repo0",
        "argv": argv,
        "path": "/usr/bin/make",
        "reason": "r",
        "pid": pid,
        "status": None,
    }


def tab_label(app: QpodApp) -> str:
    from textual.widgets import TabbedContent

    return str(app.query_one(TabbedContent).get_tab("log").label)


async def test_running_commands_tick_at_the_top_and_end_into_their_row(engine):
    import subprocess

    from qpod_tui.widgets.running import RunningPanel

    append_records(3)
    launcher = subprocess.Popen(["sleep", "600"])  # stands for the launcher: alive while its command runs
    other = subprocess.Popen(["sleep", "600"])
    try:
        make = start_record("a1", launcher.pid, ["make", "-j8", "all"])
        cmdlog.append(make)
        app = make_app(engine)  # another view first: the log tab counts anyway
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await wait_for(pilot, lambda: tab_label(app).endswith("1 running"))
            await pilot.press("4")
            await settle(pilot)
            view = log_view(app)
            panel = view.query_one(RunningPanel)
            assert panel.display and "make -j8 all" in str(panel.render())
            assert len(view.table.rows) == 3  # the running command is not a row yet
            first = str(panel.render())
            await wait_for(pilot, lambda: str(panel.render()) != first)  # the elapsed time ticks
            # a second command starts meanwhile (the watcher or the tick reads it)
            cmdlog.append(start_record("b2", other.pid, ["gdb", "-batch", "./app"]))
            await wait_for(pilot, lambda: tab_label(app).endswith("2 running"))
            assert str(panel.render()).index("make -j8") < str(panel.render()).index("gdb -batch")
            # make ends: its complete record replaces it within a second
            cmdlog.append({**make, "status": 2, "duration": 3.5})
            await wait_for(pilot, lambda: len(view.table.rows) == 4)
            await wait_for(pilot, lambda: "make -j8" not in str(panel.render()))
            assert view.index.record(view.table.rows[-1])["argv"] == ["make", "-j8", "all"]
            assert tab_label(app).endswith("1 running")
            # gdb's launcher dies without an end record: lost, it leaves the panel (qpod log shows it)
            other.kill()
            other.wait()
            await wait_for(pilot, lambda: not panel.display)
            assert tab_label(app) == "4 Command log"
            assert len(view.table.rows) == 4
    finally:
        for p in (launcher, other):
            p.kill()
            p.wait()


# --- keys and the theme ---------------------------------------------------------------------


async def test_one_navigation_vocabulary_in_every_table_and_enter_is_the_views_action(tmp_path):
    engine = DemoEngine(str(tmp_path))
    app = make_app(engine, view="containers", watch=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for view_id, key in (("repositories", "1"), ("environments", "2"), ("containers", "3")):
            await pilot.press(key)
            await settle(pilot)
            table = app.view(view_id).table
            last = table.row_count - 1
            await pilot.press("G")
            assert table.cursor_row == last, view_id
            await pilot.press("k")
            assert table.cursor_row == last - 1
            await pilot.press("g")
            assert table.cursor_row == 0
            await pilot.press("j", "j")
            assert table.cursor_row == 2
            await pilot.press("home")
            assert table.cursor_row == 0
            await pilot.press("end")
            assert table.cursor_row == last
            await pilot.press("pageup")
            assert table.cursor_row == 0
        # Enter is each view's primary action, and the footer shows it first
        from textual.widgets._footer import FooterKey

        for key, action, screen in (("2", "edit", EnvFormScreen), ("3", "output", TextScreen)):
            await pilot.press(key)
            await settle(pilot)
            first = app.screen.query(FooterKey).first()
            assert first.key == "enter" and first.action == action
            await pilot.press("enter")
            await wait_for(pilot, lambda screen=screen: isinstance(app.screen, screen))
            await pilot.press("escape")
            await settle(pilot)


async def test_footer_ends_with_help_and_quit_at_every_size(tmp_path):
    from textual.widgets._footer import FooterKey

    for size in ((80, 24), (120, 40), (200, 50)):
        app = make_app(DemoEngine(str(tmp_path / str(size[0]))), view="repositories", watch=False)
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            keys = list(app.screen.query(FooterKey))
            assert [k.action for k in keys[-2:]] == ["help", "quit"], size
            assert all(k.region.right <= size[0] for k in keys), size  # none cut by the edge
            assert keys[-1].region.right >= size[0] - 1  # at the right end


async def test_the_theme_picked_is_kept_for_the_next_start(engine):
    settings = Path(paths.settings_file())
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.theme != "nord"
        app.theme = "nord"  # what the palette's theme picker does
        await wait_for(pilot, lambda: settings.exists() and "theme" in settings.read_text())
        await settle(pilot)
    assert settings.read_text() == 'theme: "nord"\n' and engine.settings().theme == "nord"
    again = make_app(NoPodmanEngine())
    async with again.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert again.theme == "nord"


# --- layout ---------------------------------------------------------------------------------


async def test_wide_characters_are_measured_in_cells_and_cuts_show_an_ellipsis(tmp_path):
    from rich.cells import cell_len

    engine = DemoEngine(str(tmp_path))
    wide = "/home/dev/src/製品-二〇一八年版-とても長い名前のリポジトリ"
    engine.repos[wide] = ("tools-busybox", {})
    app = make_app(engine, watch=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        table = app.view("repositories").table
        assert table.virtual_size.width <= table.size.width  # no column pushed off the screen
        for name, column in table.columns.items():
            for row in table.ordered_rows:
                assert table.get_cell(row.key, name).cell_len <= column.width, (name.value, row.key.value)
        cut = table.get_cell(wide, "Repository").plain
        assert cut.startswith("…") and cut.endswith("リポジトリ") and cell_len(cut) <= table.columns["Repository"].width


# --- the containers view's figures and markers ----------------------------------------------


def test_cpu_percent_is_measured_between_two_stats_calls():
    from qpod_engine.podman.stats import parse_stats

    cid = "c0ffee" * 10
    first = parse_stats(
        {
            "Stats": [
                {
                    "ContainerID": cid,
                    "CPU": 7.5,
                    "CPUNano": 10**9,
                    "SystemNano": 100 * 10**9,
                    "MemUsage": 5 << 20,
                    "MemLimit": 1 << 30,
                    "PIDs": 2,
                }
            ]
        }
    )
    assert first[cid[:12]].cpu == 7.5  # podman's average since start, until there are two samples
    # 1.5 s of CPU in 1 s of wall time: one and a half CPUs busy
    second = parse_stats(
        {
            "Stats": [
                {
                    "ContainerID": cid,
                    "CPU": 7.6,
                    "CPUNano": 25 * 10**8,
                    "SystemNano": 101 * 10**9,
                    "MemUsage": 6 << 20,
                    "MemLimit": 1 << 30,
                    "PIDs": 2,
                }
            ]
        }
    )
    assert second[cid[:12]].cpu == pytest.approx(150.0) and second[cid[:12]].memory == 6 << 20
    assert parse_stats({"Stats": [{"ContainerID": 5}, "junk"]}) == {}  # malformed entries are skipped


async def test_containers_show_figures_outdated_and_commands_running(tmp_path):
    from dataclasses import replace

    engine = DemoEngine(str(tmp_path), running=2)
    engine.ctrs[1] = replace(engine.ctrs[1], commands_running=4)  # the backend's own count wins
    app = make_app(engine, view="containers", watch=False)
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot)
        view = app.view("containers")
        await wait_for(pilot, lambda: bool(view.stats))

        def row(i: int) -> dict[str, str]:
            name = engine.ctrs[i].name
            return {k: str(v) for k, v in zip(view.COLUMNS, view.table.get_row(name), strict=True)}

        # the demo's running commands (start records) are in containers 0 and 1
        await wait_for(pilot, lambda: row(0)["Cmds"] == "1")
        assert row(1)["Cmds"] == "4"
        assert row(0)["CPU"] == "97.5%" and row(0)["Memory"] == "38.0M"
        assert row(2)["CPU"] == "-" and row(2)["State"] == "exited"
        assert row(3)["State"] == "running (outdated)"


async def test_hostile_text_in_a_running_command_is_shown_literally(engine):
    import subprocess

    from qpod_tui.widgets.running import RunningPanel

    launcher = subprocess.Popen(["sleep", "600"])
    try:
        rec = start_record("h1", launcher.pid, ["make", "[/bold]\x1b[2J", "[link=http://x]y"])
        rec["repo"] = "/src/\x1b]0;title\x07repo"
        cmdlog.append(rec)
        app = make_app(engine, view="log")
        async with app.run_test(size=(200, 40)) as pilot:
            await settle(pilot)
            panel = app.view("log").query_one(RunningPanel)
            await wait_for(pilot, lambda: panel.display)
            text = panel.render()
            assert "[/bold]\\x1b[2J" in text.plain and "[link=http://x]y" in text.plain
            assert "\x1b" not in text.plain and "\\x1b]0;title\\x07repo" in text.plain
            assert not any("link" in str(span.style) for span in text.spans)
    finally:
        launcher.kill()
        launcher.wait()


async def test_type_ahead_in_the_environment_picker(engine, make_repo):
    for name in ("alpha", "beta", "bravo", "charlie"):
        env_add(name)
    root = os.path.realpath(make_repo("proj"))
    assert run_qpod("init", "alpha", cwd=root).returncode == 0
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("e")
        await settle(pilot)
        picker = app.screen
        assert isinstance(picker, PickScreen)
        await pilot.press("b", "r")  # bravo, not beta
        from textual.widgets import OptionList

        options = picker.query_one(OptionList)
        assert options.get_option_at_index(options.highlighted).id == "bravo"
        await pilot.press("enter")
        await settle(pilot)
    assert bindings.load_bindings()[root].environment == "bravo"


async def test_a_pull_goes_on_when_its_dialog_closes_and_says_when_it_ends(tmp_path):
    import threading

    from qpod_tui.screens.pull import PullScreen

    release = threading.Event()

    class SlowPull(DemoEngine):
        def pull_image(self, ref, progress=None):  # type: ignore[no-untyped-def]
            if progress:
                progress("sha256:" + "ab" * 32, 250_000_000, 500_000_000)
            assert release.wait(60)
            super().pull_image(ref, progress)

    engine = SlowPull(str(tmp_path))
    app = make_app(engine, view="environments", watch=False)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await settle(pilot)
        view = app.view("environments")
        ref = "docker.io/library/debian:10"
        await pilot.press("down")  # mmsx-2021.1-debian10: its image is not here
        assert view.presence(ref) == "no"
        await pilot.press("p")
        dialog = app.screen
        assert isinstance(dialog, PullScreen)
        await wait_for(pilot, lambda: "50%" in str(dialog.query_one("#pull-status").render()))
        assert "250.0 /   500.0 MB   50.0%" in str(dialog.query_one("#pull-layers").render())
        await pilot.press("escape")
        assert not isinstance(app.screen, PullScreen)
        release.set()
        await wait_for(pilot, lambda: any("pulled" in n.message for n in app._notifications))
        await wait_for(pilot, lambda: view.presence(ref) == "yes")  # refreshed without F5
