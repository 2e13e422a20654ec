"""The dashboard's images: what qpod's environments use, with size and users, and pruning the
builds of repository files nothing uses any more (real podman, a real Containerfile build)."""

import subprocess
import uuid

import pytest
from conftest import remove_containers_of, run_qpod
from tui_pilot import settle, wait_for

from qpod_engine.api import Engine
from qpod_tui.app import make_app
from qpod_tui.screens.build import BuildScreen
from qpod_tui.screens.dialogs import ConfirmScreen
from qpod_tui.screens.images import ImagesScreen

pytestmark = [pytest.mark.anyio, pytest.mark.podman]
SIZE = (160, 40)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def image_exists(ref: str) -> bool:
    return subprocess.run(["podman", "image", "exists", ref], capture_output=True).returncode == 0


async def open_images(pilot) -> ImagesScreen:
    """The images dialog, opened with its key from the view the app started in."""
    await settle(pilot)
    await pilot.press("i")
    await settle(pilot)
    screen = pilot.app.screen
    assert isinstance(screen, ImagesScreen)
    return screen


async def test_images_with_their_users_and_pruning_an_unused_build(qpod_home, make_repo, busybox_image) -> None:
    assert run_qpod("env", "add", "bb", "--image", busybox_image).returncode == 0
    root = make_repo(
        "built",
        {".qpod.yaml": "build: Containerfile\n", "Containerfile": f"FROM {busybox_image}\nENV FLAVOUR=old-recipe\n"},
    )
    assert run_qpod("allow", cwd=root).returncode == 0
    r = run_qpod("exec", "true", cwd=root)  # builds the image of the recipe
    assert r.returncode == 0, r.stderr
    remove_containers_of(str(root))
    engine = Engine()
    [old_build] = [i for i in engine.images() if i.built_here]
    assert old_build.used_by == [f".qpod.yaml of {root}"]
    # a new commit moves the branch to a plain image: the old build is used by nothing now
    (root / ".qpod.yaml").write_text(f"image: {busybox_image}\n")
    assert run_qpod("allow", cwd=root).returncode == 0
    tag = old_build.tags[0]
    try:
        app = make_app(engine, view="environments")
        async with app.run_test(size=SIZE) as pilot:
            screen = await open_images(pilot)
            rows = {tuple(r.tags): r for r in screen.rows}
            busybox = next(r for tags, r in rows.items() if busybox_image in tags)
            assert "environment bb" in busybox.used_by and f".qpod.yaml of {root}" in busybox.used_by
            assert busybox.size > 0
            assert rows[(tag,)].used_by == [] and rows[(tag,)].built_here
            await pilot.press("p")
            await settle(pilot)
            assert isinstance(app.screen, ConfirmScreen) and tag in app.screen.question
            await pilot.press("y")
            await settle(pilot)
            assert not image_exists(tag)
            assert image_exists(busybox_image)  # what an environment uses is never pruned
            assert all(tag not in r.tags for r in screen.rows)
    finally:
        subprocess.run(["podman", "rmi", "-f", tag], capture_output=True)


async def test_a_repository_image_is_built_from_the_dashboard_with_its_output(
    qpod_home, make_repo, busybox_image
) -> None:
    flavour = uuid.uuid4().hex[:8]  # a recipe no earlier run built
    root = make_repo(
        "tobuild",
        {".qpod.yaml": "build: Containerfile\n", "Containerfile": f"FROM {busybox_image}\nENV FLAVOUR={flavour}\n"},
    )
    assert run_qpod("allow", cwd=root).returncode == 0
    engine = Engine()
    app = make_app(engine)
    tag = None
    try:
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("B")
            screen = app.screen
            assert isinstance(screen, BuildScreen)
            await wait_for(pilot, lambda: screen.result is not None, what="the build to end")
            assert screen.result == "built", screen.result
            lines = screen.query_one("#build-log").lines
            assert any(line.startswith("qpod: building localhost/qpod-build-") for line in lines), lines
            assert any("STEP 2/" in line and flavour in line for line in lines), lines
            tag = next(line.split()[2] for line in lines if line.startswith("qpod: building"))
            assert image_exists(tag)
            await pilot.press("escape")
            await settle(pilot)
            await pilot.press("B")  # built already: nothing to do, said so
            again = app.screen
            assert isinstance(again, BuildScreen)
            await wait_for(pilot, lambda: again.result is not None, what="the second build to answer")
            assert again.result == "the image exists already: nothing to build"
    finally:
        remove_containers_of(str(root))
        if tag:
            subprocess.run(["podman", "rmi", "-f", tag], capture_output=True)


async def test_marked_images_are_pruned_alone_under_one_confirmation(qpod_home, make_repo, busybox_image) -> None:
    """space marks images; p then prunes the marked unused builds only, and names the marked
    images it keeps (in use): one confirmation for the lot."""
    assert run_qpod("env", "add", "bb", "--image", busybox_image).returncode == 0
    root = make_repo("twice", {".qpod.yaml": "build: Containerfile\n", "Containerfile": f"FROM {busybox_image}\n"})
    tags = []
    for flavour in ("one", "two"):  # two recipes in turn: two builds
        (root / "Containerfile").write_text(f"FROM {busybox_image}\nENV FLAVOUR={flavour}\n")
        assert run_qpod("allow", "--yes", cwd=root).returncode == 0
        r = run_qpod("exec", "true", cwd=root)
        assert r.returncode == 0, r.stderr
        remove_containers_of(str(root))
    (root / ".qpod.yaml").write_text(f"image: {busybox_image}\n")  # both builds unused now
    assert run_qpod("allow", "--yes", cwd=root).returncode == 0
    engine = Engine()
    tags = [i.tags[0] for i in engine.images() if i.built_here and not i.used_by]
    assert len(tags) >= 2, tags
    try:
        app = make_app(engine, view="environments")
        async with app.run_test(size=SIZE) as pilot:
            screen = await open_images(pilot)
            order = [r.tags[0] if r.tags else r.id for r in screen.rows]
            table = screen.query_one("#images-table")
            for wanted in (tags[0], busybox_image):  # one unused build, and an image in use
                table.move_cursor(row=order.index(wanted))  # type: ignore[attr-defined]
                await pilot.press("space")
                await settle(pilot)
            await pilot.press("p")
            await settle(pilot)
            assert isinstance(app.screen, ConfirmScreen)
            question = app.screen.question
            assert "Remove 1 unused build image(s)?" in question and tags[0] in question, question
            assert tags[1] not in question, question
            assert f"kept (in use, or not a build of this config):\n{busybox_image}" in question, question
            await pilot.press("y")
            await wait_for(pilot, lambda: not image_exists(tags[0]), what="the marked build removed")
            assert image_exists(tags[1]) and image_exists(busybox_image)  # not marked; in use
    finally:
        for tag in tags:
            subprocess.run(["podman", "rmi", "-f", tag], capture_output=True)
