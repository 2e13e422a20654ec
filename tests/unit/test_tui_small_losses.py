"""Small losses no more: keys typed ahead after Tab reach the next field in order; Esc in the
log filter clears its text only and the cursor stays on its record; with focus in the running
list the footer keeps help and quit."""

import pytest
from textual import events
from textual.widgets import Input
from tui_pilot import settle, wait_for

from qpod_engine.log import cmdlog
from qpod_tui.app import make_app
from qpod_tui.demo_engine import DemoEngine
from qpod_tui.screens.env_form import EnvFormScreen
from qpod_tui.widgets.footer import QFooter
from qpod_tui.widgets.running import RunningPanel

SIZE = (140, 40)
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_keys_typed_ahead_after_tab_keep_their_order(tmp_path):
    app = make_app(DemoEngine(str(tmp_path)), view="environments", watch=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, EnvFormScreen))
        await settle(pilot)
        name = app.screen.query_one("#field-name", Input)
        image = app.screen.query_one("#field-image", Input)
        assert app.focused is name
        # one burst, as a terminal delivers "q1<Tab>q2" typed fast: no key waits for the last
        for key, char in (("q", "q"), ("1", "1"), ("tab", "\t"), ("q", "q"), ("2", "2")):
            app.post_message(events.Key(key, char))
        await wait_for(pilot, lambda: image.value == "q2")
        assert name.value == "q1" and app.focused is image


async def test_esc_in_the_log_filter_clears_its_text_and_keeps_the_record(qpod_home):
    from qpod_engine.api import Engine

    for i in range(40):
        cmdlog.append(
            {
                "time": f"2026-01-01T00:00:{i:02d}.000+00:00",
                "repo": "/src/a",
                "env": "e",
                "argv": ["make", f"t{i}"],
                "status": 0,
                "duration": 0.1,
                "cwd": "/src/a",
            }
        )
    app = make_app(Engine(), view="log", watch=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        view = app.view("log")
        await wait_for(pilot, lambda: len(view.table.rows) == 40)
        await pilot.press("slash", *"t1", "enter")  # t1, t10..t19
        await wait_for(pilot, lambda: len(view.table.rows) == 11)
        await pilot.press("up", "up")
        kept = view.table.current
        assert view.index.record(kept)["argv"] == ["make", "t17"]
        await pilot.press("escape")
        await wait_for(pilot, lambda: len(view.table.rows) == 40)
        assert view.table.current == kept and not view.table.follow
        assert view.query_one("#log-text", Input).value == ""


async def test_focus_in_the_running_list_keeps_help_and_quit_in_the_footer(tmp_path):
    app = make_app(DemoEngine(str(tmp_path), running=2), view="log", watch=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        panel = app.view("log").query_one(RunningPanel)
        await wait_for(pilot, lambda: panel.display)
        panel.focus()
        await settle(pilot)

        def actions() -> list[str]:
            return [getattr(k, "action", "") for k in app.query_one(QFooter).children]

        await wait_for(pilot, lambda: "help" in actions() and "quit" in actions(), what=lambda: str(actions()))
        assert "signal" in actions()


async def test_at_80_columns_the_repositories_footer_keeps_its_own_keys(tmp_path):
    """Those without room for their description are listed by key alone (the description is
    their tooltip, ? lists them all), before the app's own keys are cut."""
    from textual.widgets._footer import FooterKey

    app = make_app(DemoEngine(str(tmp_path)), view="repositories", watch=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        keys = {k.key: k for k in app.screen.query(FooterKey)}
        for key in ("enter", "b", "u", "A"):
            assert key in keys, sorted(keys)
        assert keys["u"].description == "" and "Unbind" in str(keys["u"].tooltip)
        assert [k.action for k in list(app.screen.query(FooterKey))[-2:]] == ["help", "quit"]
