"""Errors at a glance: containers without CPU and memory figures say why, once; the allow
dialog shows the whole file review (full hash, wrapped, scrolled, never cut); pull and build
dialogs show how they ended, not their progress; binding a repository to an environment whose
image is not here says so and offers the pull."""

import os

import pytest
from conftest import run_qpod
from textual.containers import VerticalScroll
from textual.widgets import Label, ProgressBar
from tui_pilot import settle, wait_for

from qpod_engine.api import Engine, QpodError
from qpod_tui.app import make_app
from qpod_tui.demo_engine import DemoEngine
from qpod_tui.screens.build import BuildScreen
from qpod_tui.screens.dialogs import ConfirmScreen, PickScreen
from qpod_tui.screens.pull import PullScreen

SIZE = (140, 40)
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def message(app, view: str) -> str:
    return str(app.view(view).query_one(".view-message").render())


class NoFiguresEngine(DemoEngine):
    """Podman lists the containers but measures none of them (rootless on cgroups v1)."""

    def container_stats(self, ids, hosts=None):  # type: ignore[no-untyped-def]
        return {}

    def stats_unavailable(self, stats_error: str | None = None) -> str:
        return stats_error or "rootless podman on cgroups v1 has no per-container stats"


class FailingStatsEngine(DemoEngine):
    def container_stats(self, ids, hosts=None):  # type: ignore[no-untyped-def]
        raise QpodError("cannot read the cgroup of 1a2b")


@pytest.mark.parametrize(
    ("cls", "said"),
    [
        (NoFiguresEngine, "rootless podman on cgroups v1 has no per-container stats"),
        (FailingStatsEngine, "podman stats failed: cannot read the cgroup of 1a2b"),
    ],
)
async def test_containers_without_figures_say_why_once(tmp_path, cls, said):
    app = make_app(cls(str(tmp_path)), view="containers", watch=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        view = app.view("containers")
        await wait_for(pilot, lambda: said in message(app, "containers"))
        assert message(app, "containers").count("CPU and memory not measured") == 1
        row = dict(zip(view.COLUMNS, view.table.get_row(next(iter(view.containers))), strict=True))
        assert str(row["CPU"]) == "-"


async def test_containers_with_figures_say_nothing_of_them(tmp_path):
    app = make_app(DemoEngine(str(tmp_path)), view="containers", watch=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await wait_for(pilot, lambda: app.view("containers").stats)
        assert "not measured" not in message(app, "containers")


class NoPodmanEngine(Engine):
    def container_states(self) -> dict[str, str]:
        raise QpodError("podman not asked in this test")

    def containers(self):  # type: ignore[no-untyped-def]
        raise QpodError("podman not asked in this test")

    def image_present(self, ref: str) -> bool:
        return False  # every image is missing here


async def test_the_allow_review_is_shown_whole_and_scrolls(qpod_home, make_repo):
    long_name = "a-repository-with-a-rather-long-name-" + "x" * 60
    mounts = ", ".join(f"'/opt/toolchain-{i}:/opt/toolchain-{i}'" for i in range(30))
    root = make_repo(long_name, {".qpod.yaml": f"image: localhost/qpod-busybox:latest\nmounts: [{mounts}]\n"})
    assert run_qpod("init", cwd=root, input="n\n").returncode in (0, 1)  # registered, waiting
    engine = NoPodmanEngine()
    if str(root) not in engine.waiting_files():
        pytest.skip("the repository was not registered waiting for an allow")
    sha = engine.repo_file_summary(str(root))[0]
    app = make_app(engine, watch=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("A")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        screen = app.screen
        assert screen.review and f"sha256 {sha}" in screen.question and str(root) in screen.question
        shown = "".join(str(screen.query_one("#review").query_one(".question").render()).split())
        assert sha in shown and long_name in shown and "/opt/toolchain-29" in shown  # wrapped, not cut
        scroll = screen.query_one("#review", VerticalScroll)
        await wait_for(pilot, lambda: scroll.max_scroll_y > 0)
        await pilot.press("pagedown")
        await wait_for(pilot, lambda: scroll.scroll_y > 0)
        await pilot.press("n")


class FailingEngine(DemoEngine):
    def pull_image(self, ref, progress=None):  # type: ignore[no-untyped-def]
        if progress is not None:
            progress("sha256:0123456789abcdef", 0, 1000)
        raise QpodError(f"cannot pull image {ref}: manifest unknown")

    def build_repo_image(self, root, progress):  # type: ignore[no-untyped-def]
        progress("STEP 1/2: FROM nothing")
        raise QpodError("podman build failed: no such image 'nothing'")


async def test_a_failed_pull_and_a_failed_build_show_their_outcome(tmp_path):
    engine = FailingEngine(str(tmp_path))
    app = make_app(engine, view="environments", watch=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await app.push_screen(PullScreen(engine, "example.com/no/such:1"))
        screen = app.screen
        await wait_for(pilot, lambda: screen.finished)
        await settle(pilot)
        assert "Pull failed: example.com/no/such:1" in str(screen.query_one(".title", Label).render())
        assert "manifest unknown" in str(screen.query_one("#pull-status", Label).render())
        assert not screen.query_one(ProgressBar).display  # no bar stuck at 0%
        assert str(screen.query_one("#pull-hint", Label).render()) == "Esc closes"
        await pilot.press("escape")

        await app.push_screen(BuildScreen(engine, "/src/x"))
        screen = app.screen
        await wait_for(pilot, lambda: screen.result is not None)
        await settle(pilot)
        assert "build failed" in str(screen.query_one("#build-state", Label).render())
        assert str(screen.query_one("#build-hint", Label).render()) == "Esc closes"


async def test_binding_to_an_environment_whose_image_is_missing_offers_the_pull(qpod_home, make_repo):
    for name in ("here", "missing"):
        assert run_qpod("env", "add", name, "--image", f"localhost/qpod-{name}:1").returncode == 0
    root = os.path.realpath(make_repo("proj"))
    assert run_qpod("init", "here", cwd=root).returncode == 0
    pulled: list[str] = []

    class Engine2(NoPodmanEngine):
        def pull_image(self, ref, progress=None):  # type: ignore[no-untyped-def]
            pulled.append(ref)

    app = make_app(Engine2(), watch=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("enter")  # change the environment
        await wait_for(pilot, lambda: isinstance(app.screen, PickScreen))
        await settle(pilot)
        await pilot.press(*"missing", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        question = app.screen.question
        assert "localhost/qpod-missing:1" in question and "Pull it now?" in question
        await pilot.press("y")
        await wait_for(pilot, lambda: pulled == ["localhost/qpod-missing:1"])
