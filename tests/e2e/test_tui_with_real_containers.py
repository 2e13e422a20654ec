"""qpod tui against real podman: a real bound repository, its real warm container, a real log record.
One Pilot test of the container actions, and one end-to-end run of ``qpod tui`` in tmux."""

import os
import subprocess
import sys
import uuid

import pytest
from conftest import REPO_ROOT, podman_available, run_qpod, wait_until
from textual.widgets import TextArea
from tmux_driver import Tmux
from tui_pilot import wait_for

from qpod_engine.api import Engine
from qpod_engine.config.containers import container_name
from qpod_tui.app import make_app
from qpod_tui.screens.dialogs import ConfirmScreen, TextScreen
from qpod_tui.screens.pull import PullScreen
from qpod_tui.widgets.running import RunningPanel

pytestmark = [pytest.mark.podman, pytest.mark.skipif(not podman_available(), reason="podman is not installed")]
SIZE = (160, 40)
DEADLINE = 180.0  # seconds: waits are on conditions; a loaded 2-core CI machine is slow, never this slow


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def podman_state(name: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    return subprocess.run(
        ["podman", "inspect", "-f", "{{.State.Status}}", name],
        capture_output=True,
        text=True,
        env={**env, "QPOD_OFF": "1"},
    ).stdout.strip()


@pytest.fixture
def warm(bound_repo):
    """The bound repository after one redirected command: its container runs, the log has a record."""
    r = run_qpod("exec", "true", cwd=bound_repo)
    assert r.returncode == 0, r.stderr
    name = container_name("bb", os.path.realpath(bound_repo))
    assert podman_state(name) == "running"
    return os.path.realpath(bound_repo), name


@pytest.mark.anyio
async def test_stop_restart_and_output_of_a_real_container(warm):
    root, name = warm
    app = make_app(Engine(), view="containers", watch=False)
    async with app.run_test(size=SIZE) as pilot:
        view = app.view("containers")
        await wait_for(pilot, lambda: name in view.containers)
        assert view.containers[name].repository == root and view.containers[name].state == "running"
        # CPU and memory from podman's one-shot stats, shown in the row
        cid = view.containers[name].id
        await wait_for(pilot, lambda: cid in view.stats)
        assert view.stats[cid].memory > 0 and view.stats[cid].cpu >= 0
        row = dict(zip(view.COLUMNS, view.table.get_row(name), strict=True))
        assert str(row["CPU"]).endswith("%") and str(row["Memory"])[-1] in "BKMG"
        view.table.move_cursor(row=view.table.get_row_index(name))
        await pilot.press("s")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await wait_for(pilot, lambda: podman_state(name) in ("exited", "stopped"))
        await wait_for(pilot, lambda: view.containers[name].state in ("exited", "stopped"))

        view.table.move_cursor(row=view.table.get_row_index(name))
        await pilot.press("r", "y")
        await wait_for(pilot, lambda: podman_state(name) == "running")
        await wait_for(pilot, lambda: view.containers[name].state == "running")

        # the container's output: what its main process wrote (podman logs), not just a screen
        said = f"output-of-{uuid.uuid4().hex[:8]}"
        r = run_qpod("exec", "sh", "-c", f"echo {said} > /proc/1/fd/1", cwd=root)
        assert r.returncode == 0, r.stderr
        await pilot.press("o")
        await wait_for(pilot, lambda: isinstance(app.screen, TextScreen))
        shown = app.screen.query_one(TextArea).text
        assert said in shown.splitlines() and app.screen.title_text == f"Recent output of {name}", shown
        await pilot.press("escape")

        # the repositories view shows the same container state, from podman
        await pilot.press("1")
        repos = app.view("repositories")
        await wait_for(pilot, lambda: root in repos.repos and repos.repos[root].container_state == "running")


@pytest.mark.anyio
async def test_a_redirected_command_is_shown_running_then_as_its_row(warm):
    """A real ``qpod exec`` in the bound repository: the log view lists it as running (with the
    count in the tab title) while it waits for a file, then as its record once it ends."""
    from textual.widgets import TabbedContent

    root, name = warm
    script = "while [ ! -e go-on ]; do sleep 0.1; done"
    cmd = subprocess.Popen(
        [sys.executable, "-m", "qpod_engine.cli", "exec", "--", "sh", "-c", script],
        cwd=root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        app = make_app(Engine(), view="log")
        async with app.run_test(size=SIZE) as pilot:
            view = app.view("log")
            panel = view.query_one(RunningPanel)
            tab = app.query_one(TabbedContent).get_tab("log")
            await wait_for(pilot, lambda: script in str(panel.render()))
            assert str(tab.label).endswith("1 running")
            assert root in str(panel.render()) or "…" in str(panel.render())
            # the containers view counts it in its container's row
            await pilot.press("3")
            ctrs = app.view("containers")

            def cmds() -> str:
                try:
                    return str(dict(zip(ctrs.COLUMNS, ctrs.table.get_row(name), strict=True))["Cmds"])
                except Exception:  # noqa: BLE001 - the row is not there yet
                    return ""

            await wait_for(pilot, lambda: cmds() == "1")
            await pilot.press("4")
            rows = len(view.table.rows)
            open(os.path.join(root, "go-on"), "w").close()
            await wait_for(pilot, lambda: len(view.table.rows) == rows + 1)
            rec = view.index.record(view.table.rows[-1])
            assert rec["argv"] == ["sh", "-c", script] and rec["status"] == 0 and rec["repo"] == root
            await wait_for(pilot, lambda: not panel.display)
            assert str(tab.label) == "4 Command log"
        assert cmd.wait(timeout=DEADLINE) == 0, cmd.stderr.read() if cmd.stderr else ""
    finally:
        cmd.kill()
        cmd.wait()


@pytest.mark.anyio
async def test_pull_failure_is_reported_in_the_dialog(qpod_home):
    engine = Engine()
    app = make_app(engine, view="environments", watch=False)
    async with app.run_test(size=SIZE) as pilot:
        await app.push_screen(PullScreen(engine, "localhost/qpod-no-such-image:never"))
        status = app.screen.query_one("#pull-status")
        await wait_for(pilot, lambda: "cannot pull image localhost/qpod-no-such-image:never" in str(status.render()))
        assert not app.screen.ok


def test_qpod_tui_end_to_end_in_tmux(warm, qpod_home):
    """``qpod tui`` as a user starts it: the bound repository, its running container and the
    command log; a command run meanwhile appears in the log view; q quits."""
    root, name = warm
    env = {
        "QPOD_CONFIG_DIR": os.environ["QPOD_CONFIG_DIR"],
        "QPOD_STATE_DIR": os.environ["QPOD_STATE_DIR"],
        "TERM": "xterm-256color",
        "PYTHONPATH": str(REPO_ROOT),
        # a tmux server started from pytest carries COLUMNS=80/LINES=24 into every pane, and
        # the terminal size is read from them first
        "COLUMNS": "200",
        "LINES": "45",
    }
    tui = Tmux(f"{sys.executable} -m qpod_engine.cli tui", env=env, width=200, height=45, cwd=root)
    try:
        screen = tui.wait_for(root, timeout=DEADLINE)
        assert "Repositories" in screen
        tui.wait_for("running", timeout=DEADLINE)  # the container state, once podman answered
        tui.send("3")
        tui.wait_for("Uptime", timeout=DEADLINE)  # the containers view (the name is on view 1 too)
        screen = tui.wait_for(name, timeout=DEADLINE)
        assert "bb" in screen
        # your shell in the container, through qpod's launcher in the repository: the TUI steps
        # aside, the shell runs in this terminal, exit comes back
        tui.send("e")
        tui.wait_for(f"shell in {name} in {root}", timeout=DEADLINE)
        marker = os.path.join(root, "shell-was-here")
        tui.type(f'test -e /run/.containerenv && echo "in-container $PWD $FIXED" > {marker}; exit')
        tui.wait_for("Uptime", timeout=DEADLINE)  # back in the containers view
        with open(marker) as f:  # in the container, in the repository, with the environment's variables
            assert f.read() == f"in-container {root} 1\n"
        tui.send("4")
        tui.wait_for("true", timeout=DEADLINE)  # the record of 'qpod exec true'
        assert run_qpod("exec", "false", cwd=root).returncode == 1
        # no key pressed: the view picks the record up by watching the log (how fast is a
        # benchmark's business, not a test's on a loaded machine)
        line = wait_until(
            lambda: next((ln for ln in tui.screen().splitlines() if ln.rstrip().endswith(" false")), None),
            tui.screen,
            DEADLINE,
            0.1,
        )
        assert " 1 " in line and "bb" in line
        tui.send("q")
        tui.wait_dead(DEADLINE)
    finally:
        tui.kill()
