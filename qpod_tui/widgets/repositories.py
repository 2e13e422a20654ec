"""View 1: bound repositories, their branch, the environment in force and its container."""

from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import Static

from qpod_engine.api import QpodError, RepoRow, visible

from ..safe import assemble, literal
from ..screens.bind import BindScreen, BranchRuleScreen
from ..screens.build import BuildScreen
from ..screens.dialogs import PickEnvironmentScreen, PickScreen
from .table_view import MARK_BINDING, SORT_BINDING, TableView

STATE_STYLE = {"running": "green", "exited": "yellow", "stopped": "yellow", "none": "dim", "unknown": "dim"}


def state_text(state: str) -> Text:
    return literal(state, style=STATE_STYLE.get(state, "red"))


class RepositoriesView(TableView):
    COLUMNS = ("Repository", "Branch", "Environment", "Branch rules", "Container")
    PRIMARY = "change_environment"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "enter", "change_environment", "Environment", tooltip="Change the repository's environment", id="repos.open"
        ),
        Binding("b", "bind", "Bind", tooltip="Bind a repository to an environment", id="repos.bind"),
        Binding(
            "e",
            "change_environment",
            "Environment",
            tooltip="Change the repository's environment (any branch)",
            id="repos.environment",
        ),
        Binding(
            "a", "add_rule", "Add rule", tooltip="Add a branch rule (branch glob -> environment)", id="repos.add_rule"
        ),
        Binding("x", "remove_rule", "Remove rule", tooltip="Remove a branch rule", id="repos.remove_rule"),
        Binding("u", "unbind", "Unbind", tooltip="Unbind the repository", id="repos.unbind"),
        Binding(
            "A",
            "allow",
            "Allow file",
            tooltip="Show the repository's .qpod.yaml and allow this content of it",
            id="repos.allow",
        ),
        Binding(
            "B",
            "build",
            "Build image",
            tooltip="Build the image the repository's .qpod.yaml gives (build:)",
            id="repos.build",
        ),
        SORT_BINDING,
        MARK_BINDING,
    ]

    class Loaded(Message):
        def __init__(self, rows: list[RepoRow] | None, error: str | None = None, activation: str = "") -> None:
            super().__init__()
            self.rows, self.error, self.activation = rows, error, activation

    class FileRead(Message):
        """A repository's .qpod.yaml as it is now: its sha256 and what it asks for."""

        def __init__(self, root: str, sha: str, risky: list[str], info: list[str], changes: list[str]) -> None:
            super().__init__()
            self.root, self.sha, self.risky, self.info, self.changes = root, sha, risky, info, changes

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.repos: dict[str, RepoRow] = {}

    def compose(self) -> ComposeResult:
        yield from super().compose()
        yield Static("", id="repo-detail", classes="detail-line")
        yield Static("", id="activation-line", classes="detail-line")

    def load(self) -> None:
        self._load_rows()

    def first_load(self, wait: float) -> None:
        """The config's rows before the first frame; podman's states follow."""
        self.first_load_from_config(self._read_config, wait, lambda _msg: self._load_rows(config_read=True))

    def _read_config(self) -> "RepositoriesView.Loaded":
        try:
            return self.Loaded(self.engine.repositories(), activation=self.engine.activation())
        except QpodError as err:
            return self.Loaded(None, str(err))

    @work(thread=True, exclusive=True, group="load")
    def _load_rows(self, config_read: bool = False) -> None:
        # config first (fast, disk only), then again with podman's container states
        if not config_read:
            msg = self._read_config()
            self.post_message(msg)
            if msg.rows is None:
                return
        try:
            states = self.engine.container_states()
        except QpodError:
            return  # podman unavailable: states stay "unknown", the Containers view says why
        try:
            self.post_message(self.Loaded(self.engine.repositories(states), activation=self.engine.activation()))
        except QpodError as err:
            self.post_message(self.Loaded(None, str(err)))

    @on(Loaded)
    def _loaded(self, msg: Loaded) -> None:
        if msg.rows is None:
            self.show_message(assemble(("Cannot read the bindings: ", "red"), msg.error or ""))
            return
        key = self.app.key_for("repos.bind")  # type: ignore[attr-defined]
        self.show_message(
            None if msg.rows else assemble("No bound repositories yet: press ", (key, "bold"), " to bind one.")
        )
        self.repos = {r.root: r for r in msg.rows}
        self.set_rows([(r.root, self._cells(r)) for r in msg.rows])
        # every terminal and desktop program in qpod mode, or only qpod-shell
        self.query_one("#activation-line", Static).update(Text(visible(f"activation {msg.activation}"), style="dim"))

    @staticmethod
    def _cells(r: RepoRow) -> tuple[Text | str, ...]:
        path = literal(r.root) if r.exists else assemble(r.root, (" (missing)", "red"))
        env = literal(r.environment) if r.environment else Text("none", style="dim")
        if r.waiting:  # its .qpod.yaml changed (or broke) since it was allowed: routed commands fail
            env = assemble(env, (" waiting for qpod allow", "bold red"))
        elif r.broken:  # its environment file is broken (or gone): routed commands fail
            env = assemble(env, (" broken", "bold red"))
        rules = ", ".join(f"{g} → {e}" for g, e in r.branches.items()) or "-"  # a str: set_rows escapes it
        return path, r.branch or "-", env, rules, state_text(r.container_state)

    @property
    def selected(self) -> RepoRow | None:
        key = self.selected_key
        return self.repos.get(key) if key else None

    def selection_changed(self) -> None:
        r = self.selected
        text = Text()
        if r:
            text = Text(visible(r.root), style="", end="")
            text.stylize("bold")
            container = f"; container {r.container}" if r.container else ""
            text.append(
                visible(
                    f"  environment {r.environment or 'none'} ({r.why}); any branch: "
                    f"{r.default_environment or 'none'}{container}"
                )
            )
            if r.waiting or r.broken:
                text.append(visible(f"  {r.waiting or r.broken}"), style="red")
        self.query_one("#repo-detail", Static).update(text)

    # --- actions

    def action_bind(self) -> None:
        self.app.push_screen(BindScreen(self.engine), self._bound)

    def _bound(self, root: str | None) -> None:
        if root:
            self.notify(f"bound {visible(root)}")
            self.load()
            self.check_image(root)

    class ImageMissing(Message):
        """The environment a repository was just bound to names an image that is not here."""

        def __init__(self, root: str, env: str, image: str) -> None:
            super().__init__()
            self.root, self.env, self.image = root, env, image

    @work(thread=True, group="image-check")
    def check_image(self, root: str) -> None:
        """Whether the image of the environment now in force for ``root`` is on this machine
        (an environment on another host has its image there: not asked)."""
        try:
            row = next((r for r in self.engine.repositories() if r.root == root), None)
            if row is None or not row.environment or row.broken or row.environment.startswith("."):
                return  # (unbound meanwhile; broken: the row says why; a .qpod.yaml: its own build or image)
            env = self.engine.load_environment(row.environment)
            if getattr(env, "host", None) or not env.image or self.engine.image_present(env.image):
                return
        except QpodError:
            return  # podman cannot be asked: the containers view says so
        self.post_message(self.ImageMissing(root, row.environment, env.image))

    @on(ImageMissing)
    def _image_missing(self, msg: ImageMissing) -> None:
        from ..screens.pull import PullScreen

        self.confirm(
            f"The image of environment {visible(msg.env)} is not on this machine:\n{visible(msg.image)}\n\n"
            f"The next command in {visible(msg.root)} pulls it first, and fails if it cannot.\n"
            "Pull it now?",
            lambda: self.app.push_screen(PullScreen(self.engine, msg.image, on_done=lambda _ok: self.load())),
        )

    def _need_selection(self) -> RepoRow | None:
        r = self.selected
        if r is None:
            self.notify("No repository selected", severity="warning")
        return r

    def action_change_environment(self) -> None:
        r = self._need_selection()
        if r is None:
            return

        def chosen(env: str | None) -> None:
            if env:
                self.call_engine(
                    lambda: self.engine.set_environment(r.root, env),
                    f"{visible(r.root)}: environment {visible(env)} for any branch",
                    lambda: self.check_image(r.root),
                )

        self.app.push_screen(
            PickEnvironmentScreen(self.engine, f"Environment of {visible(r.root)}", r.default_environment), chosen
        )

    def action_add_rule(self) -> None:
        r = self._need_selection()
        if r is not None:
            self.app.push_screen(BranchRuleScreen(self.engine, r.root, r.branch), self._bound_rule)

    def _bound_rule(self, done: str | None) -> None:
        if done:
            self.notify(done)
            self.load()

    def action_remove_rule(self) -> None:
        r = self._need_selection()
        if r is None:
            return
        if not r.branches:
            self.notify(f"{visible(r.root)} has no branch rules", severity="warning")
            return

        def chosen(glob: str | None) -> None:
            if glob is None:
                return
            last = len(r.branches) == 1 and not r.default_environment
            note = " (its last rule: the repository is unbound)" if last else ""
            self.call_engine(
                lambda: self.engine.remove_branch_rule(r.root, glob),
                f"removed branch rule {visible(glob)} of {visible(r.root)}{note}",
            )

        options = [(f"{visible(g)} → {visible(e)}", g) for g, e in r.branches.items()]
        self.app.push_screen(PickScreen(f"Remove a branch rule of {visible(r.root)}", options), chosen)

    def action_unbind(self) -> None:
        roots = [k for k in self.targets() if k in self.repos]
        if len(roots) > 1:  # the marked ones, under one confirmation

            def unbind_all() -> None:
                for root in roots:
                    self.engine.unbind(root)

            self.confirm(
                f"Unbind these {len(roots)} repositories? Their commands will run on the host again.\n\n"
                + "\n".join(f"  {visible(root)}" for root in roots),
                lambda: self.call_engine(
                    unbind_all,
                    f"unbound {len(roots)} repositories",
                    self.unmark,
                ),
                review=True,
            )
            return
        r = self._need_selection()
        if r is not None:
            self.confirm(
                f"Unbind {visible(r.root)}?\nIts commands will run on the host again.",
                lambda: self.call_engine(lambda: self.engine.unbind(r.root), f"unbound {visible(r.root)}"),
            )

    def action_allow(self) -> None:
        r = self._need_selection()
        if r is not None:
            self._read_file(r.root)

    @work(thread=True, group="action")
    def _read_file(self, root: str) -> None:
        try:
            sha, risky, info = self.engine.repo_file_summary(root)
            changes = self.engine.repo_file_changes(root)
        except QpodError as err:
            self.post_message(self.Done("", str(err), None))
            return
        self.post_message(self.FileRead(root, sha, risky, info, changes))

    @on(FileRead)
    def _ask_allow(self, msg: FileRead) -> None:
        """What the file asks for, literally (ConfirmScreen shows the text as text), then allow
        exactly that content (refused if the file changed since it was read)."""
        lines = [f"Allow this .qpod.yaml of {msg.root}?", f"sha256 {msg.sha}", "", *msg.info]
        if msg.risky:
            lines += ["", "It asks for access beyond the repository:", *(f"! {line}" for line in msg.risky)]
        if msg.changes:  # a review of a changed file: what changed since the version allowed last
            lines += ["", *msg.changes]
        self.confirm(
            "\n".join(visible(line) for line in lines),
            lambda: self.call_engine(
                lambda: self.engine.allow_repo_file(msg.root, msg.sha), f"allowed the .qpod.yaml of {visible(msg.root)}"
            ),
            review=True,  # read in full: wrapped, scrolled, never cut
        )

    def action_build(self) -> None:
        r = self._need_selection()
        if r is not None:
            self.app.push_screen(BuildScreen(self.engine, r.root), lambda _: self.load())
