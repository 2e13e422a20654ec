"""Tables as k9s users expect: sort by any column (O, a picker; the same column again reverses;
figures sort by value), the whole width used, a click selects and a double click (or Enter)
acts."""

import pytest
from tui_pilot import settle, wait_for

from qpod_tui.app import make_app
from qpod_tui.demo_engine import DemoEngine
from qpod_tui.screens.dialogs import PickScreen
from qpod_tui.widgets.table_view import sort_key

SIZE = (160, 40)
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_figures_sort_by_value_and_no_value_last():
    cells = ["1.4G", "512K", "-", "38.2M", "12B"]
    assert sorted(cells, key=sort_key) == ["12B", "512K", "38.2M", "1.4G", "-"]
    assert sorted(["3d4h", "4m10s", "2h5m", "-"], key=sort_key) == ["4m10s", "2h5m", "3d4h", "-"]
    assert sorted(["97.5%", "0.1%", "180.4%", "12.0%"], key=sort_key) == ["0.1%", "12.0%", "97.5%", "180.4%"]
    assert sorted(["beta", "Alpha", "gamma"], key=sort_key) == ["Alpha", "beta", "gamma"]


def column(view, name: str) -> list[str]:
    table = view.table
    at = view.COLUMNS.index(name)
    return [str(table.get_row_at(i)[at]) for i in range(table.row_count)]


async def test_sort_any_column_from_the_picker_and_again_reversed(tmp_path):
    app = make_app(DemoEngine(str(tmp_path), containers=8), view="containers", watch=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        view = app.view("containers")
        await wait_for(pilot, lambda: view.stats and any(c.endswith("%") for c in column(view, "CPU")))
        await pilot.press("O")
        assert isinstance(app.screen, PickScreen)
        await pilot.press(*"CPU", "enter")  # type-ahead to the column
        await settle(pilot)
        cpu = column(view, "CPU")
        figures = [float(c[:-1]) for c in cpu if c.endswith("%")]
        assert figures == sorted(figures) and cpu[-1] == "-"  # stopped containers last
        await pilot.press("O")
        assert "CPU ▲" in [str(o.prompt) for o in app.screen.query_one("OptionList")._options]
        await pilot.press("enter")  # the same column again: reversed
        await settle(pilot)
        figures = [float(c[:-1]) for c in column(view, "CPU") if c.endswith("%")]
        assert figures == sorted(figures, reverse=True)
        # the order survives the view's refresh (new figures, same sort)
        view.load()
        await settle(pilot)
        figures = [float(c[:-1]) for c in column(view, "CPU") if c.endswith("%")]
        assert figures == sorted(figures, reverse=True)


async def test_the_table_uses_the_whole_width(tmp_path):
    app = make_app(DemoEngine(str(tmp_path), repos=3), view="environments", watch=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = app.view("environments").table
        used = sum(c.get_render_width(table) for c in table.ordered_columns)
        assert used >= table.scrollable_content_region.width - 2


async def test_a_click_selects_a_double_click_acts(tmp_path):
    from qpod_tui.screens.env_form import EnvFormScreen

    app = make_app(DemoEngine(str(tmp_path)), view="environments", watch=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = app.view("environments").table
        await pilot.click(table, offset=(3, 1))  # the first row, already highlighted
        await settle(pilot)
        assert not isinstance(app.screen, EnvFormScreen)
        await pilot.click(table, offset=(3, 3))  # the third row
        await settle(pilot)
        assert table.cursor_row == 2 and not isinstance(app.screen, EnvFormScreen)
        await pilot.click(table, offset=(3, 3), times=2)
        await wait_for(pilot, lambda: isinstance(app.screen, EnvFormScreen))


async def test_space_marks_rows_and_stop_acts_on_all_of_them_under_one_confirmation(tmp_path):
    from qpod_tui.screens.dialogs import ConfirmScreen

    engine = DemoEngine(str(tmp_path), running=2)
    app = make_app(engine, view="containers", watch=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        view = app.view("containers")
        await wait_for(pilot, lambda: view.table.row_count == 6)
        first, second = (str(view.table.coordinate_to_cell_key((i, 0)).row_key.value) for i in (0, 1))
        await pilot.press("space", "space")  # marks the first row, moves on, marks the second
        await settle(pilot)
        assert view.marked == {first, second}
        assert str(view.table.get_row(first)[0]).startswith("● ")
        await pilot.press("s")
        assert isinstance(app.screen, ConfirmScreen)
        question = app.screen.question
        assert "Stop these 2 containers?" in question and first in question and second in question
        assert "make -j8 all" in question  # what runs in them is named
        await pilot.press("y")
        await wait_for(pilot, lambda: ("stop_container", second) in engine.calls)
        assert ("stop_container", first) in engine.calls
        await wait_for(pilot, lambda: not view.marked)


async def test_marked_repositories_are_unbound_under_one_confirmation(tmp_path):
    from qpod_tui.screens.dialogs import ConfirmScreen

    engine = DemoEngine(str(tmp_path), repos=5)
    app = make_app(engine, watch=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        view = app.view("repositories")
        await wait_for(pilot, lambda: view.table.row_count == 5)
        await pilot.press("space", "down", "space")  # the first and the third
        await pilot.press("u")
        assert isinstance(app.screen, ConfirmScreen) and "Unbind these 2 repositories?" in app.screen.question
        await pilot.press("y")
        await wait_for(pilot, lambda: len([c for c in engine.calls if c[0] == "unbind"]) == 2)
        roots = [c[1] for c in engine.calls if c[0] == "unbind"]
        assert roots[0].endswith("mmsx-2018.3") and roots[1].endswith("mmsx-main")


def test_a_build_hosts_distccd_row_says_what_it_is_where_a_repository_would_be():
    """distribute: a distccd container serves its environment, not one repository."""
    from collections import Counter

    from qpod_engine.rows import container_info
    from qpod_tui.widgets.containers import container_cells

    row = container_info(
        {"name": "qpod-distccd-old-b1", "id": "0123456789ab", "environment": "old", "repository": "",
         "image": "localhost/qpod-debian11", "state": "running", "started": None, "host": "b1", "role": "distccd"}
    )  # fmt: skip
    cells = container_cells(row, {}, Counter(), 0.0)
    assert str(cells[0]) == "old @b1" and str(cells[1]) == "(distccd)"
