"""Snapshots of every view and dialog with deterministic data (qpod_tui.demo_engine.DemoEngine).
Update after an intended change with: pytest tests/test_tui_snapshots.py --snapshot-update"""

import pytest
from tui_pilot import settle, wait_for

from qpod_tui.app import make_app
from qpod_tui.demo_engine import DemoEngine

SIZE = (120, 34)


def keys(*presses: str):
    """A run_before that presses keys, waiting for the workers each one starts."""

    async def run(pilot) -> None:
        await settle(pilot)
        for key in presses:
            await pilot.press(key)
            await settle(pilot)
        await pilot.wait_for_scheduled_animations()  # a tab's underline follows its new title
        await settle(pilot)
        await still_cursors(pilot)

    return run


async def still_cursors(pilot) -> None:
    """Every text field's cursor drawn and no longer blinking: the blink is a 0.5 s wall-clock
    timer, so which phase the picture catches would be a race (it was, on a loaded machine)."""
    from textual.widgets import Input

    for screen in pilot.app.screen_stack:
        for field in screen.query(Input):
            field.cursor_blink = False
    await pilot.pause()


def following(*presses: str):
    """``keys``, then until the log table (following) shows its newest record: the running
    panel above it takes rows, and the table scrolls again after that layout."""

    async def run(pilot) -> None:
        await keys(*presses)(pilot)
        table = pilot.app.query_one("#log-table")
        await wait_for(
            pilot, lambda: table.scroll_offset.y == table.max_scroll_y > 0, 60, "the log to scroll to its newest record"
        )
        await settle(pilot)
        await pilot.wait_for_scheduled_animations()  # the tab's underline after a title change
        await pilot.wait_for_animation()
        await settle(pilot)
        await underline_follows(pilot)
        await still_cursors(pilot)

    return run


async def underline_follows(pilot) -> None:
    """Until the tabs' underline spans the active tab's label (the log tab's title grows with
    its running count, and the underline follows a moment later)."""
    from textual.widgets import Tabs
    from textual.widgets._tabs import Underline

    tabs = pilot.app.query_one(Tabs)
    underline = tabs.query_one(Underline)

    def spans_the_label() -> bool:
        tab = tabs.active_tab
        return tab is not None and underline.highlight_end - underline.highlight_start == tab.region.width - 2

    await wait_for(pilot, spans_the_label, 60, "the tab underline to follow the tab's title")
    await settle(pilot)


@pytest.fixture
def app_for(tmp_path):
    def make(view: str = "repositories", **kwargs):
        return make_app(DemoEngine(str(tmp_path), **kwargs), view=view, watch=False)

    return make


SIZES = [(80, 24), (120, 40), (200, 50)]  # the sizes the layout is checked at


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_repositories_view(snap_compare, app_for, size):
    assert snap_compare(app_for(), terminal_size=size, run_before=keys("down", "down"))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_environments_view(snap_compare, app_for, size):
    assert snap_compare(app_for("environments"), terminal_size=size, run_before=keys())


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_containers_view(snap_compare, app_for, size):
    assert snap_compare(app_for("containers", running=2), terminal_size=size, run_before=keys())


def test_containers_view_without_podman(snap_compare, app_for):
    assert snap_compare(app_for("containers", podman=False), terminal_size=SIZE, run_before=keys())


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_command_log_view(snap_compare, app_for, size):
    assert snap_compare(app_for("log"), terminal_size=size, run_before=following())


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_command_log_with_running_commands(snap_compare, app_for, size):
    """What is building now: three commands above the log, their elapsed times, the tab's count."""
    assert snap_compare(app_for("log", running=3), terminal_size=size, run_before=following())


def test_command_log_filtered(snap_compare, app_for):
    assert snap_compare(app_for("log"), terminal_size=SIZE, run_before=keys("slash", *"gdb", "enter", "f", "up"))


def test_command_log_record(snap_compare, app_for):
    assert snap_compare(app_for("log"), terminal_size=SIZE, run_before=keys("up", "enter"))


def test_environment_form_with_error(snap_compare, app_for):
    async def run(pilot) -> None:
        await keys("e")(pilot)
        pilot.app.screen.query_one("#field-commands").value = "make /usr/bin/gdb"
        await pilot.press("ctrl+s")
        await settle(pilot)
        await still_cursors(pilot)

    assert snap_compare(app_for("environments"), terminal_size=(120, 44), run_before=run)


def test_bind_dialog(snap_compare, app_for):
    assert snap_compare(app_for(), terminal_size=SIZE, run_before=keys("b"))


def test_help(snap_compare, app_for):
    assert snap_compare(app_for(), terminal_size=(120, 60), run_before=keys("question_mark"))


# --- the hard states (DemoEngine(trouble=True)): a broken environment file and a repository
# bound to it, a .qpod.yaml waiting for an allow and its review, a pull that failed, the signal
# picker of a running command

HARD_SIZES = [(80, 24), (120, 40)]


@pytest.mark.parametrize("size", HARD_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_repositories_in_trouble(snap_compare, app_for, size):
    assert snap_compare(app_for(trouble=True), terminal_size=size, run_before=keys("down", "down", "down"))


@pytest.mark.parametrize("size", HARD_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_environments_with_a_broken_file(snap_compare, app_for, size):
    assert snap_compare(app_for("environments", trouble=True), terminal_size=size, run_before=keys())


@pytest.mark.parametrize("size", HARD_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_allow_review(snap_compare, app_for, size):
    assert snap_compare(app_for(trouble=True), terminal_size=size, run_before=keys("down", "down", "down", "A"))


@pytest.mark.parametrize("size", HARD_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_failed_pull(snap_compare, app_for, size):
    assert snap_compare(app_for("environments", trouble=True), terminal_size=size, run_before=keys("p"))


@pytest.mark.parametrize("size", HARD_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_signal_picker(snap_compare, app_for, size):
    assert snap_compare(app_for("log", running=3), terminal_size=size, run_before=keys("x"))
