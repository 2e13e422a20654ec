"""Create or edit an environment. Validation is the engine's (the same as for the YAML file):
every problem at once, each under the field it is about, focus on the first.

A file qpod cannot parse is never rewritten from the form (its content would be lost for what
the empty form holds): the form says why, Save is refused, and ctrl+e opens the file in the
user's $EDITOR (the dashboard steps aside meanwhile); the form reads it again afterwards."""

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Label, Select, TextArea

from qpod_engine.api import OPTIONS, Engine, QpodError

from ..safe import literal
from .bind import FieldForm, FieldProblems

# (field, label, widget, hint, choices), from the engine's one table of environment options:
# widget is "input", "text" (several lines) or "select"
FIELDS = (
    ("name", "Name", "input", "letters, digits, . _ -", ()),
    *(
        (
            opt.key,
            opt.label,
            "select" if opt.kind == "choice" else "text" if opt.multiline else "input",
            opt.hint or opt.help,
            opt.choices,
        )
        for opt in OPTIONS
    ),
)
CHOICE_LABELS = {"user": "user (files belong to you)"}


class EnvFormScreen(FieldForm):
    """``name`` None creates a new environment; otherwise edits that one (its name is fixed)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "ctrl+e",
            "open_editor",
            "Open in $EDITOR",
            id="form.editor",
            tooltip="Open the environment file in your editor",
        ),
    ]

    def __init__(self, engine: Engine, name: str | None) -> None:
        super().__init__(engine)
        self.env_name = name
        self.broken: str | None = None  # why the file cannot be read: the form must not save over it

    def compose(self) -> ComposeResult:
        title = f"Edit environment {self.env_name}" if self.env_name else "New environment"
        with Vertical(classes="dialog form"):
            yield Label(literal(title), classes="title")
            with VerticalScroll():
                for name, label, kind, hint, choices in FIELDS:
                    with Horizontal(classes="field-row"):
                        yield Label(label, classes="field-label")
                        if kind == "text":
                            yield TextArea(id=f"field-{name}", classes="field-text", tab_behavior="focus", compact=True)
                        elif kind == "select":
                            yield Select(
                                [(CHOICE_LABELS.get(c, c), c) for c in choices],
                                id=f"field-{name}",
                                allow_blank=False,
                                value=choices[0],
                                compact=True,
                            )
                        else:
                            yield Input(placeholder=hint, id=f"field-{name}", compact=True)
                    if kind == "text":
                        yield Label(hint, classes="field-hint")
                    yield self.error_label(name)
            yield from self.buttons("Save (ctrl+s)")
            if self.env_name:
                yield Button("Open in $EDITOR (ctrl+e)", id="editor", classes="hidden")

    def on_mount(self) -> None:
        if self.env_name:
            name = self.query_one("#field-name", Input)
            name.value = self.env_name
            name.disabled = True
            self._load()  # fill() focuses the first field once the values are in
        else:
            self.fill(self.engine.environment_form(None))

    def _load(self) -> None:
        self.run_worker(self._read_environment, thread=True, exclusive=True, group="read")

    def _read_environment(self) -> None:
        try:
            form = self.engine.environment_form(self.engine.load_environment(self.env_name or ""))
        except QpodError as err:
            self.app.call_from_thread(self._unreadable, str(err))
            return
        self.app.call_from_thread(self._readable, form)

    def _unreadable(self, error: str) -> None:
        self.broken = error
        self.field_error(
            "form",
            f"{error}\nqpod cannot read this file, so this form will not save over it "
            "(what it could not read would be lost): ctrl+e opens it in your editor.",
        )
        self.query_one("#submit", Button).disabled = True
        editor = self.query_one("#editor", Button)
        editor.remove_class("hidden")
        editor.focus()

    def _readable(self, form: dict[str, str]) -> None:
        if self.broken is not None:
            self.broken = None
            self.clear_errors()
            self.query_one("#submit", Button).disabled = False
            self.query_one("#editor", Button).add_class("hidden")
        self.fill(form)

    @on(Button.Pressed, "#editor")
    def action_open_editor(self) -> None:
        """Suspend the dashboard, edit the file in $EDITOR, come back and read it again."""
        if not self.env_name:
            return
        import subprocess

        path = self.engine.environment_path(self.env_name)
        try:
            with self.app.suspend():
                subprocess.run(self.engine.editor_command(path), check=False)
        except Exception as err:  # noqa: BLE001 - SuspendNotSupported (e.g. textual-web), editor not found
            self.notify(f"cannot open an editor here: {err}", severity="error")
            return
        self.refresh()
        self._load()

    def fill(self, form: dict[str, str]) -> None:
        for name, _label, _kind, _hint, choices in FIELDS:
            if name == "name" and self.env_name:
                continue
            widget = self.query_one(f"#field-{name}")
            value = form.get(name, "")
            if isinstance(widget, TextArea):
                widget.load_text(value)
            elif isinstance(widget, Select):
                widget.value = value or choices[0]
            else:
                widget.value = value  # type: ignore[attr-defined]
        self.query_one("#field-image" if self.env_name else "#field-name").focus()

    def values(self) -> dict[str, str]:
        out = {}
        for name, *_ in FIELDS:
            widget = self.query_one(f"#field-{name}")
            if isinstance(widget, TextArea):
                out[name] = widget.text
            else:
                value = widget.value  # type: ignore[attr-defined]
                out[name] = value if isinstance(value, str) else ""
        return out

    def submit(self) -> None:
        if self.broken is not None:
            self.field_error(
                "form", f"{self.broken}\nNot saved: qpod cannot read this file; ctrl+e opens it in your editor."
            )
            return
        form = self.values()
        create = self.env_name is None

        def call() -> str:
            env, problems = self.engine.check_form(form)
            if problems:
                raise FieldProblems(problems)
            path = self.engine.save_environment(env, create=create, edit=not create)
            return f"environment {env.name} saved to {path}"

        self.run_submit(call)
