"""The dashboard lists a repository whose .qpod.yaml waits for an allow, shows what the file
asks for, literally, and allows exactly that content from the repositories view."""

import pytest
from conftest import run_qpod
from tui_pilot import settle

from qpod_engine.api import Engine
from qpod_engine.base.errors import QpodError
from qpod_tui.app import make_app
from qpod_tui.screens.dialogs import ConfirmScreen

pytestmark = pytest.mark.anyio
SIZE = (140, 40)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class NoPodmanEngine(Engine):
    """The real engine minus podman: this test is about the config."""

    def container_states(self) -> dict[str, str]:
        raise QpodError("podman not asked in this test")

    def containers(self):  # type: ignore[no-untyped-def]
        raise QpodError("podman not asked in this test")


async def test_a_waiting_repository_file_is_shown_and_allowed_from_the_view(qpod_home, make_repo) -> None:
    root = make_repo("own", {".qpod.yaml": "image: localhost/qpod-busybox:latest\n"})
    r = run_qpod("allow", cwd=root)
    assert r.returncode == 0, r.stderr
    # a new commit asks for the host's root: the gate closes until it is allowed again
    (root / ".qpod.yaml").write_text(
        "image: localhost/qpod-busybox:latest\nmounts: ['/:/host']\ncap_add: [\"SYS_ADMIN\\e[31m\"]\n"
    )
    engine = NoPodmanEngine()
    assert list(engine.waiting_files()) == [str(root)]
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        row = app.view("repositories").table.get_row_at(0)  # type: ignore[attr-defined]
        assert "qpod allow" in str(row[2]), row
        await pilot.press("A")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        question = app.screen.question
        assert "/:/host" in question and "\\x1b[31m" in question and "\x1b" not in question
        # what changed since the version allowed: the two new lines, the image as context
        assert "changed since the version allowed" in question, question
        assert "+mounts: ['/:/host']" in question and " image: localhost/qpod-busybox:latest" in question
        await pilot.press("n")  # no: nothing recorded
        await settle(pilot)
        assert list(engine.waiting_files()) == [str(root)]
        await pilot.press("A")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert engine.waiting_files() == {}
        await settle(pilot)
        row = app.view("repositories").table.get_row_at(0)  # type: ignore[attr-defined]
        assert "qpod allow" not in str(row[2]), row
