"""Environments (one YAML file each) and qpod's own settings: models, validation, load and save.

Validation is strict: an unknown key is an error (a typo must not pass silently), and
every message names the file and the line.
"""

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from qpod_engine.base import yamlio

# yamlio (PyYAML) is imported by the functions that read or write files: the launcher's hot
# path imports this module for its constants and must not pay for PyYAML.

from qpod_engine.base import paths
from qpod_engine.base.errors import ConfigError, QpodError
from qpod_engine.config.fields import (  # noqa: F401 - re-exported
    BY_KEY,
    FIELDS,
    NAME_RE,
    ULIMIT_RE,
    check_value,
    parse_mount,
)

# the caller's environment, as toolbx and distrobox give it (make's MAKEFLAGS and command-line
# variables, CFLAGS for ./configure ...), minus containers.HOST_SPECIFIC unless named here
DEFAULT_PASSTHROUGH: list[str] = BY_KEY["passthrough"].default()
from qpod_engine.config.containers import ALWAYS_DENIED  # noqa: E402,F401 - re-exported: part of the config reference


def _default(key: str) -> Any:
    return field(default_factory=BY_KEY[key].default)


@dataclass
class Environment:
    """A container environment that repositories are bound to. Its options are declared in
    env_fields.FIELDS (validation, flags, form, docs); this mirrors them with their types."""

    name: str
    image: str
    mounts: list[str] = _default("mounts")
    share: list[str] = _default("share")
    env: dict[str, str] = _default("env")
    passthrough: list[str] = _default("passthrough")
    deny: list[str] = _default("deny")
    commands: list[str] = _default("commands")
    workdir_root: str | None = _default("workdir_root")
    run_as: str = _default("run_as")
    cap_add: list[str] = _default("cap_add")
    seccomp: str | None = _default("seccomp")
    ulimits: dict[str, str] = _default("ulimits")
    podman_options: dict[str, Any] = _default("podman_options")
    host: str | None = _default("host")
    distribute: list[str] = _default("distribute")

    def to_yaml_dict(self) -> dict[str, Any]:
        """What goes in the file: defaults left out so the file stays what the user wrote."""
        data = asdict(self)
        del data["name"]
        defaults = asdict(Environment(name=self.name, image=self.image))
        return {k: v for k, v in data.items() if k == "image" or v != defaults[k]}

    def config_hash(self) -> str:
        """Hash of everything that shapes the container; a change means the container is replaced."""
        data = asdict(self)
        for opt in FIELDS:
            if not opt.container:  # routing-only keys do not change the container
                data.pop(opt.key)
        if data["host"] is None:
            del data["host"]  # added later: local environments keep their hash (and containers)
        if not data["distribute"]:
            del data["distribute"]  # likewise: only an environment that distributes has it in its hash
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


assert [f for f in Environment.__dataclass_fields__ if f != "name"] == [o.key for o in FIELDS], (
    "Environment must mirror env_fields.FIELDS, in order"
)


def _expect(cond: bool, file: str, line: int | None, message: str) -> None:
    if not cond:
        raise ConfigError(file, message, line)


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name an environment (shown literally, cut when long), or None."""
    if NAME_RE.match(name):
        return None
    from qpod_engine.base.textsafe import visible

    shown = visible(name if len(name) <= 70 else name[:70] + "...")
    return (
        f"environment name '{shown}' must be letters, digits, '.', '_' or '-' (1 to 63 of them, starting "
        "with a letter or digit)"
    )


def check_environment(
    name: str, data: Any, file: str, lines: "yamlio.Lines | None" = None
) -> tuple[Environment, list[ConfigError]]:
    """Validate one environment's mapping: the environment (defaults where a value is wrong)
    and every problem, in the order of the fields, each naming file and line."""
    from qpod_engine.base import yamlio

    lines = lines or yamlio.Lines()
    problems: list[ConfigError] = []
    bad_name = name_problem(name)
    if bad_name:
        problems.append(ConfigError(file, bad_name, None, key="name"))
    if not isinstance(data, dict):
        problems.append(ConfigError(file, "an environment must be a mapping of keys", lines.get()))
        return Environment(name=name, image=""), problems
    for key in data:
        if key not in BY_KEY:
            hint = ", ".join(sorted(BY_KEY))
            problems.append(ConfigError(file, f"unknown key '{key}' (known keys: {hint})", lines.get(key), key=key))
    values: dict[str, Any] = {}
    for opt in FIELDS:
        if opt.key not in data:
            if opt.required:
                problems.append(ConfigError(file, f"missing required key '{opt.key}'", lines.get(), key=opt.key))
            continue
        value, found = check_value(opt, data[opt.key])
        problems.extend(
            ConfigError(file, msg, lines.get(key, *(() if at is None else (at,))), key=key) for key, at, msg in found
        )
        if value is not None:
            values[opt.key] = value
    if values.get("host") and values.get("distribute"):
        # the compilers' ssh would start on that host, with this machine's keys and paths
        problems.append(
            ConfigError(
                file,
                "'distribute' with 'host' is not supported: distribute from an environment on this machine",
                lines.get("distribute"),
                key="distribute",
            )
        )
        values.pop("distribute")
    image = values.pop("image", "")
    return Environment(name=name, image=image, **values), problems


def environment_from_dict(name: str, data: Any, file: str, lines: "yamlio.Lines | None" = None) -> Environment:
    """Validate one environment's mapping. Raises the first ConfigError (naming file and line)."""
    env, problems = check_environment(name, data, file, lines)
    if problems:
        raise problems[0]
    return env


def load_environment(name: str) -> Environment:
    from pathlib import Path

    from qpod_engine.base import yamlio

    path = Path(paths.environment_file(name))
    try:
        data, lines = yamlio.load(path)
    except FileNotFoundError:
        raise QpodError(unknown_environment_message(name), status=2) from None
    return environment_from_dict(name, data, str(path), lines)


def environment_names() -> list[str]:
    from pathlib import Path

    d = Path(paths.environments_dir())
    if not d.is_dir():
        return []
    return sorted(p.stem for p in d.glob("*.yaml") if not p.name.startswith("."))


def load_environments() -> dict[str, Environment]:
    return {name: load_environment(name) for name in environment_names()}


def unknown_environment_message(name: str) -> str:
    known = environment_names()
    listed = ", ".join(known) if known else "none yet; add one with 'qpod env add NAME --image IMG'"
    return f"unknown environment '{name}' (known: {listed})"


def save_environment(env: Environment) -> "Path":
    from pathlib import Path

    from qpod_engine.base import yamlio

    path = Path(paths.environment_file(env.name))
    # validate what we are about to write, so the file on disk is always loadable
    environment_from_dict(env.name, env.to_yaml_dict(), str(path))
    yamlio.write_atomic(path, yamlio.dump_text(env.to_yaml_dict()))
    return path


@dataclass
class Settings:
    """qpod's own settings (``settings.yaml``): how podman is driven, log size, key map."""

    runtime: str = "auto"  # auto: runc where installed (crun fails on cgroups hybrid hosts)
    ulimits: dict[str, str] = field(default_factory=dict)  # defaults for every environment
    log_max_bytes: int = 20 * 1024 * 1024
    log_keep: int = 3
    service_idle_seconds: int = 3600  # the API service started on demand exits after this idle time
    keymap: dict[str, str] = field(default_factory=dict)  # TUI binding id -> key
    theme: str = ""  # the dashboard's theme ("": Textual's default); the palette's pick is kept here


def load_settings() -> Settings:
    from pathlib import Path

    from qpod_engine.base import yamlio

    path = Path(paths.settings_file())
    try:
        data, lines = yamlio.load(path)
    except FileNotFoundError:
        return Settings()
    file = str(path)
    if data is None:
        return Settings()
    _expect(isinstance(data, dict), file, lines.get(), "settings must be a mapping of keys")
    settings = Settings()
    for key, value in data.items():
        if key not in Settings.__dataclass_fields__:
            known = ", ".join(Settings.__dataclass_fields__)
            raise ConfigError(file, f"unknown key '{key}' (known keys: {known})", lines.get(key))
        default = getattr(settings, key)
        if isinstance(default, dict):
            _expect(isinstance(value, dict), file, lines.get(key), f"'{key}' must be a mapping")
            value = {str(k): str(v) for k, v in value.items()}
        elif isinstance(default, int):
            _expect(isinstance(value, int) and value > 0, file, lines.get(key), f"'{key}' must be a positive integer")
        else:
            _expect(isinstance(value, str), file, lines.get(key), f"'{key}' must be a string")
        setattr(settings, key, value)
    for k, v in settings.ulimits.items():
        _expect(
            bool(ULIMIT_RE.match(v)), file, lines.get("ulimits", k), f"'ulimits': '{k}' must be SOFT[:HARD], not '{v}'"
        )
    return settings


def set_setting(key: str, value: str) -> "Path":
    """Write one top-level string setting into settings.yaml, keeping the rest of the file as
    the user wrote it (comments too): the line ``key: ...`` is replaced, or appended. The result
    is validated before it replaces the file; the caller holds the config lock."""
    import json
    import re
    from pathlib import Path

    from qpod_engine.base import yamlio

    assert key in Settings.__dataclass_fields__ and isinstance(getattr(Settings(), key), str)
    path = Path(paths.settings_file())
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    line = f"{key}: {json.dumps(value)}"  # a JSON string is a YAML scalar: any name, safely quoted
    pattern = re.compile(rf"^{re.escape(key)}\s*:.*$", re.MULTILINE)
    if pattern.search(text):
        new = pattern.sub(lambda _m: line, text, count=1)
    else:
        new = text + ("" if not text or text.endswith("\n") else "\n") + line + "\n"
    data, lines = yamlio.loads(new, str(path))
    if not isinstance(data, dict) or data.get(key) != value:  # e.g. a key inside a block, not top-level
        raise ConfigError(
            str(path), f"cannot set '{key}' here without rewriting the file: edit it by hand", lines.get(key)
        )
    yamlio.write_atomic(path, new)
    return path
