"""Bind a repository (path with completion, environment picker) and add a branch rule."""

import asyncio
from collections.abc import Callable
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.suggester import Suggester
from textual.widgets import Button, Input, Label, Select

from qpod_engine.api import Engine, FieldError, QpodError

from ..safe import literal, literal_lines


class PathSuggester(Suggester):
    """Completes directory paths; the directory is listed in a thread, never on the UI loop."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self.engine = engine

    async def get_suggestion(self, value: str) -> str | None:
        found = await asyncio.to_thread(self.engine.complete_path, value, 1)
        return found[0] if found else None


class PathInput(Input):
    """An Input whose Tab accepts the completion shown (instead of moving focus) when there is one."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("tab", "complete", "Complete", show=False, id="bind.complete"),
    ]

    def action_complete(self) -> None:
        if not self.tab_completes():
            self.screen.focus_next()

    def tab_completes(self) -> bool:
        """Tab (the app's, decided as the key is read): accept the completion shown, if any."""
        if self._suggestion and self._suggestion != self.value:
            self.value = self._suggestion
            self.cursor_position = len(self.value)
            return True
        return False


class FieldProblems(QpodError):
    """Every problem of a form at once (``FieldError`` each, in screen order)."""

    def __init__(self, problems: list[FieldError]) -> None:
        super().__init__("; ".join(p.message for p in problems), status=2)
        self.problems = problems


class FieldForm(ModalScreen[str | None]):
    """A dialog of fields with an error line under each; the engine call runs in a worker and its
    FieldError is shown beside the field it names. Dismisses with a success message."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="form.cancel"),
        Binding("ctrl+s", "submit", "Save", id="form.submit"),
    ]

    class Failed(Message):
        def __init__(self, error: QpodError) -> None:
            super().__init__()
            self.error = error

    class Succeeded(Message):
        def __init__(self, message: str) -> None:
            super().__init__()
            self.message = message

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine

    def field_error(self, name: str, message: str) -> None:
        label = self.query_one(f"#error-{name}", Label)
        label.update(literal_lines(message))  # errors quote paths and what was typed
        label.remove_class("hidden")

    def clear_errors(self) -> None:
        for label in self.query(".field-error"):
            label.add_class("hidden")

    def error_label(self, name: str) -> Label:
        return Label("", id=f"error-{name}", classes="field-error hidden")

    @work(thread=True, exclusive=True, group="submit")
    def run_submit(self, call: Callable[[], str]) -> None:
        try:
            message = call()
        except QpodError as err:
            self.post_message(self.Failed(err))
            return
        self.post_message(self.Succeeded(message))

    @on(Failed)
    def _failed(self, msg: Failed) -> None:
        """Every problem beside its field; focus goes to the first (they come in screen order)."""
        err = msg.error
        problems = err.problems if isinstance(err, FieldProblems) else [err]
        focused = False
        for problem in problems:
            if isinstance(problem, FieldError) and self.query(f"#error-{problem.field}"):
                self.field_error(problem.field, problem.message)
                if not focused:
                    try:
                        self.query_one(f"#field-{problem.field}").focus()
                        self.query_one(f"#error-{problem.field}").scroll_visible(animate=False)
                        focused = True
                    except Exception:  # noqa: BLE001 - not every error label has a focusable field
                        pass
            else:
                self.field_error("form", str(problem))

    @on(Succeeded)
    def _succeeded(self, msg: Succeeded) -> None:
        self.dismiss(msg.message)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#submit")
    @on(Input.Submitted)
    def action_submit(self) -> None:
        self.clear_errors()
        self.submit()

    def submit(self) -> None:
        raise NotImplementedError

    def buttons(self, label: str) -> ComposeResult:
        yield self.error_label("form")
        with Horizontal(classes="buttons"):
            yield Button(label, variant="primary", id="submit")
            yield Button("Cancel", id="cancel")

    @work(thread=True, exclusive=True, group="environments")
    def load_environments(self, current: str | None) -> None:
        try:
            names = self.engine.environment_names()
        except QpodError as err:
            self.app.call_from_thread(self.field_error, "environment", str(err))
            return
        self.app.call_from_thread(self._fill_environments, names, current)

    def _fill_environments(self, names: list[str], current: str | None) -> None:
        select = self.query_one("#field-environment", Select)
        select.set_options([(literal(n), n) for n in names])
        if current in names:
            select.value = current
        elif len(names) == 1:
            select.value = names[0]  # the only choice
        elif not names:
            self.field_error("environment", "no environments yet: create one in the Environments view (2)")

    def environment(self) -> str:
        value = self.query_one("#field-environment", Select).value
        return value if isinstance(value, str) else ""


class BindScreen(FieldForm):
    """``qpod init`` in a dialog: repository path, environment, optional branch glob."""

    def __init__(self, engine: Engine, path: str | None = None) -> None:
        super().__init__(engine)
        self.start_path = path

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Bind a repository", classes="title")
            yield Label("Repository path (Tab completes)")
            yield PathInput(self.start_path or "", id="field-path", suggester=PathSuggester(self.engine))
            yield self.error_label("path")
            yield Label("Environment")
            yield Select([], id="field-environment", prompt="choose an environment")
            yield self.error_label("environment")
            yield Label("Only on branches matching (optional glob)")
            yield Input(placeholder="e.g. release/2018.*", id="field-branch")
            yield self.error_label("branch")
            yield from self.buttons("Bind")

    def on_mount(self) -> None:
        self.load_environments(None)
        if self.start_path is None:
            self._default_path()
        self.query_one("#field-path").focus()

    @work(thread=True)
    def _default_path(self) -> None:
        path = self.engine.default_bind_path()
        self.app.call_from_thread(self._set_path, path)

    def _set_path(self, path: str) -> None:
        box = self.query_one("#field-path", Input)
        if not box.value:
            box.value = path

    def submit(self) -> None:
        path = self.query_one("#field-path", Input).value
        branch = self.query_one("#field-branch", Input).value
        env = self.environment()
        if not env:
            self.field_error("environment", "choose an environment")
            return

        def call() -> str:
            root = self.engine.bind(path, env, branch)
            return root

        self.run_submit(call)


class BranchRuleScreen(FieldForm):
    """Add a branch rule (glob -> environment) to a bound repository."""

    def __init__(self, engine: Engine, root: str, branch: str | None) -> None:
        super().__init__(engine)
        self.root, self.branch = root, branch

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(literal(f"Add a branch rule to {self.root}"), classes="title")
            yield Label("Branch glob (first matching rule wins)")
            yield Input(self.branch or "", placeholder="e.g. release/2018.*", id="field-branch")
            yield self.error_label("branch")
            yield Label("Environment")
            yield Select([], id="field-environment", prompt="choose an environment")
            yield self.error_label("environment")
            yield from self.buttons("Add rule")

    def on_mount(self) -> None:
        self.load_environments(None)
        self.query_one("#field-branch").focus()

    def submit(self) -> None:
        glob = self.query_one("#field-branch", Input).value.strip()
        env = self.environment()
        if not env:
            self.field_error("environment", "choose an environment")
            return

        def call() -> str:
            self.engine.add_branch_rule(self.root, glob, env)
            return f"{self.root}: branches matching {glob} use {env}"

        self.run_submit(call)
