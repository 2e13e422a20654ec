"""Create or edit an environment. Validation is the engine's (the same as for the YAML file);
an error is shown under the field it is about."""

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Input, Label, Select, TextArea

from qpod_engine.api import Engine
from qpod_engine.errors import QpodError

from ..safe import literal
from .bind import FieldForm

# (field, label, kind, hint): kind is "input", "text" (several lines) or "run_as"
FIELDS = (
    ("name", "Name", "input", "letters, digits, . _ -"),
    ("image", "Image", "input", "e.g. docker.io/library/centos:7"),
    ("mounts", "Mounts", "text", "one per line: HOST:CONTAINER[:ro]"),
    ("env", "Env vars", "text", "one per line: NAME=VALUE"),
    ("passthrough", "Passthrough", "input", "host variables passed in (globs), space separated"),
    ("deny", "Deny", "input", "variables never passed in (globs)"),
    ("commands", "Commands", "input", "commands routed to the container, space separated"),
    ("workdir_root", "Workdir root", "input", "where the repository appears (empty: same path)"),
    ("run_as", "Run as", "run_as", ""),
    ("cap_add", "Capabilities", "input", "e.g. SYS_PTRACE (for gdb)"),
    ("seccomp", "Seccomp", "input", "unconfined or a profile path"),
    ("ulimits", "Ulimits", "input", "e.g. nofile=1024:4096 core=-1"),
    ("podman_options", "Podman options", "text", "YAML mapping of podman create options"),
)


class EnvFormScreen(FieldForm):
    """``name`` None creates a new environment; otherwise edits that one (its name is fixed)."""

    def __init__(self, engine: Engine, name: str | None) -> None:
        super().__init__(engine)
        self.env_name = name

    def compose(self) -> ComposeResult:
        title = f"Edit environment {self.env_name}" if self.env_name else "New environment"
        with Vertical(classes="dialog form"):
            yield Label(literal(title), classes="title")
            with VerticalScroll():
                for name, label, kind, hint in FIELDS:
                    with Horizontal(classes="field-row"):
                        yield Label(label, classes="field-label")
                        if kind == "text":
                            yield TextArea(id=f"field-{name}", classes="field-text", tab_behavior="focus", compact=True)
                        elif kind == "run_as":
                            yield Select([("user (files belong to you)", "user"), ("root", "root")],
                                         id=f"field-{name}", allow_blank=False, value="user", compact=True)
                        else:
                            yield Input(placeholder=hint, id=f"field-{name}", compact=True)
                    if kind == "text":
                        yield Label(hint, classes="field-hint")
                    yield self.error_label(name)
            yield from self.buttons("Save (ctrl+s)")

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
            self.app.call_from_thread(self.field_error, "form", str(err))
            return
        self.app.call_from_thread(self.fill, form)

    def fill(self, form: dict[str, str]) -> None:
        for name, _label, _kind, _hint in FIELDS:
            if name == "name" and self.env_name:
                continue
            widget = self.query_one(f"#field-{name}")
            value = form.get(name, "")
            if isinstance(widget, TextArea):
                widget.load_text(value)
            elif isinstance(widget, Select):
                widget.value = value or "user"
            else:
                widget.value = value  # type: ignore[attr-defined]
        self.query_one("#field-image" if self.env_name else "#field-name").focus()

    def values(self) -> dict[str, str]:
        out = {}
        for name, _label, _kind, _hint in FIELDS:
            widget = self.query_one(f"#field-{name}")
            if isinstance(widget, TextArea):
                out[name] = widget.text
            else:
                value = widget.value  # type: ignore[attr-defined]
                out[name] = value if isinstance(value, str) else ""
        return out

    def submit(self) -> None:
        form = self.values()
        create = self.env_name is None

        def call() -> str:
            env = self.engine.environment_from_form(form)
            path = self.engine.save_environment(env, create=create)
            return f"environment {env.name} saved to {path}"

        self.run_submit(call)
