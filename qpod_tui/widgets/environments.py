"""View 2: environments, the repositories bound to them, and whether their image is here."""

from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import Static

from qpod_engine.api import EnvRow, QpodError, visible

from ..safe import assemble, literal
from ..screens.env_form import EnvFormScreen
from ..screens.images import ImagesScreen
from ..screens.pull import PullScreen
from .table_view import SORT_BINDING, TableView


class EnvironmentsView(TableView):
    COLUMNS = ("Name", "Image", "Repos", "Image here")
    PRIMARY = "edit"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "edit", "Edit", tooltip="Edit the environment", id="envs.open"),
        Binding("n", "new", "New", tooltip="Create an environment", id="envs.new"),
        Binding("e", "edit", "Edit", tooltip="Edit the environment", id="envs.edit"),
        Binding("d", "delete", "Delete", tooltip="Delete the environment (refused while bound)", id="envs.delete"),
        Binding("p", "pull", "Pull image", tooltip="Pull the environment's image", id="envs.pull"),
        Binding(
            "i", "images", "Images", tooltip="The images of qpod's environments: size, use, prune", id="envs.images"
        ),
        SORT_BINDING,
    ]

    class Loaded(Message):
        def __init__(self, rows: list[EnvRow] | None, error: str | None = None) -> None:
            super().__init__()
            self.rows, self.error = rows, error

    class ImagesChecked(Message):
        def __init__(self, present: dict[str, bool | None]) -> None:
            super().__init__()
            self.present = present

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.envs: dict[str, EnvRow] = {}
        self.images: dict[str, bool | None] | None = None  # None until podman was asked

    def compose(self) -> ComposeResult:
        yield from super().compose()
        yield Static("", id="env-detail", classes="detail-pane")

    def load(self) -> None:
        self._load_rows()

    def first_load(self, wait: float) -> None:
        """The config's rows before the first frame; whether their images are here follows."""
        self.first_load_from_config(self._read_config, wait, lambda msg: self._load_rows(msg.rows))

    def _read_config(self) -> "EnvironmentsView.Loaded":
        try:
            return self.Loaded(self.engine.environments())
        except QpodError as err:
            return self.Loaded(None, str(err))

    @work(thread=True, exclusive=True, group="load")
    def _load_rows(self, rows: list[EnvRow] | None = None) -> None:
        if rows is None:  # (else read by first_load)
            msg = self._read_config()
            self.post_message(msg)
            if msg.rows is None:
                return
            rows = msg.rows
        present: dict[str, bool | None] = {}
        for ref in dict.fromkeys(r.image for r in rows if r.image):
            try:
                present[ref] = self.engine.image_present(ref)
            except QpodError:
                present = {}  # podman unavailable: "unknown" for every image, not just this one
                break
        self.post_message(self.ImagesChecked(present))

    @on(Loaded)
    def _loaded(self, msg: Loaded) -> None:
        if msg.rows is None:
            self.show_message(assemble(("Cannot read the environments: ", "red"), literal(msg.error or "")))
            return
        key = self.app.key_for("envs.new")  # type: ignore[attr-defined]
        self.show_message(
            None if msg.rows else assemble("No environments yet: press ", (key, "bold"), " to create one.")
        )
        self.envs = {r.name: r for r in msg.rows}
        self._refill()

    @on(ImagesChecked)
    def _checked(self, msg: ImagesChecked) -> None:
        self.images = msg.present
        self._refill()

    def _refill(self) -> None:
        self.set_rows([(r.name, self._cells(r)) for r in self.envs.values()])

    def _cells(self, r: EnvRow) -> tuple[Text | str, ...]:
        if r.error:
            return r.name, Text("broken file", style="red"), str(len(r.repositories)), "-"
        here = self.presence(r.image)
        style = {"yes": "green", "no": "yellow"}.get(here, "dim")
        return r.name, r.image, str(len(r.repositories)), Text(here, style=style)

    def presence(self, ref: str) -> str:
        """yes, no, checking (podman not asked yet) or unknown (podman unavailable)."""
        if self.images is None:
            return "checking"
        here = self.images.get(ref)
        return "unknown" if here is None else "yes" if here else "no"

    @property
    def selected(self) -> EnvRow | None:
        key = self.selected_key
        return self.envs.get(key) if key else None

    def selection_changed(self) -> None:
        r = self.selected
        pull = self.app.key_for("envs.pull")  # type: ignore[attr-defined]
        self.query_one("#env-detail", Static).update(detail_text(r, self.presence(r.image), pull) if r else "")

    # --- actions

    def action_new(self) -> None:
        self.app.push_screen(EnvFormScreen(self.engine, None), self._saved)

    def action_edit(self) -> None:
        r = self.selected
        if r is None:
            self.notify("No environment selected", severity="warning")
            return
        self.app.push_screen(EnvFormScreen(self.engine, r.name), self._saved)

    def _saved(self, message: str | None) -> None:
        if message:
            self.notify(message)
            self.load()

    def action_delete(self) -> None:
        r = self.selected
        if r is None:
            return
        if r.repositories:  # the engine refuses too; saying it here saves a confirm
            users = visible(", ".join(r.repositories))
            self.notify(
                f"environment '{visible(r.name)}' is used by {users}; unbind first", severity="error", timeout=8
            )
            return
        self.confirm(
            f"Delete environment {visible(r.name)}?\nIts file is removed.",
            lambda: self.call_engine(
                lambda: self.engine.delete_environment(r.name), f"environment {visible(r.name)} deleted"
            ),
        )

    def action_pull(self) -> None:
        r = self.selected
        if r is None or not r.image:
            self.notify("No environment with an image selected", severity="warning")
            return
        # on_done: "Image here" is refreshed when the pull ends, even after the dialog was closed
        self.app.push_screen(PullScreen(self.engine, r.image, on_done=lambda _ok: self.load()))

    def action_images(self) -> None:
        self.app.push_screen(ImagesScreen(self.engine), lambda _: self.load())


def _list(values: list[str]) -> str:
    return ", ".join(values) if values else "-"


def detail_text(r: EnvRow, image_here: str, pull_key: str = "p") -> Text:
    """The detail pane: every setting of the environment and who uses it."""
    if r.error:
        return assemble((visible(r.name) + "\n", "bold"), (visible(r.error), "red"))
    s = r.settings
    options = [f"{k}={v}" for k, v in s.get("podman_options", {}).items()]
    if s.get("cap_add"):
        options.append("cap_add=" + ",".join(s["cap_add"]))
    if s.get("seccomp"):
        options.append(f"seccomp={s['seccomp']}")
    options += [f"ulimit {k}={v}" for k, v in s.get("ulimits", {}).items()]
    here = {"unknown": "unknown (podman unavailable)", "no": f"no ({pull_key} pulls it)"}.get(image_here, image_here)
    rows = [
        ("image", f"{r.image}  — present locally: {here}"),
        ("repositories", _list(r.repositories)),
        ("mounts", _list(s.get("mounts", []))),
        ("env", _list([f"{k}={v}" for k, v in s.get("env", {}).items()])),
        ("passthrough", _list(s.get("passthrough", []))),
        ("deny", _list(s.get("deny", []))),
        ("commands", _list(s.get("commands", []))),
        ("workdir root", s.get("workdir_root") or "same path as on the host"),
        ("run as", s.get("run_as", "user")),
        ("podman options", _list(options)),
    ]
    text = Text(f"{visible(r.name)}\n", style="bold")
    for key, value in rows:
        text.append(f"{key:>15}  ", style="dim")
        text.append(f"{visible(value)}\n")
    text.rstrip()
    return text
