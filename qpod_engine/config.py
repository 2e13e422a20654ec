"""Environments (one YAML file each) and qpod's own settings: models, validation, load and save.

Validation is strict: an unknown key is an error (a typo must not pass silently), and
every message names the file and the line.
"""

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from . import yamlio

# yamlio (PyYAML) is imported by the functions that read or write files: the launcher's hot
# path imports this module for its constants and must not pay for PyYAML.

from . import paths
from .errors import ConfigError, QpodError

DEFAULT_COMMANDS = ["make", "waf", "gdb"]
# the caller's environment, as toolbx and distrobox give it (make's MAKEFLAGS and command-line
# variables, CFLAGS for ./configure ...), minus containers.HOST_SPECIFIC unless named here
DEFAULT_PASSTHROUGH = ["*"]
from .containers import ALWAYS_DENIED  # noqa: E402,F401 - re-exported: part of the config reference

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
ULIMIT_RE = re.compile(r"^(\d+|-1)(:(\d+|-1))?$")
COMMAND_RE = re.compile(r"^[^/\s\t]+$")


@dataclass
class Environment:
    """A container environment that repositories are bound to."""

    name: str
    image: str
    mounts: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    passthrough: list[str] = field(default_factory=lambda: list(DEFAULT_PASSTHROUGH))
    deny: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=lambda: list(DEFAULT_COMMANDS))
    workdir_root: str | None = None
    run_as: str = "user"
    cap_add: list[str] = field(default_factory=list)
    seccomp: str | None = None
    ulimits: dict[str, str] = field(default_factory=dict)
    podman_options: dict[str, Any] = field(default_factory=dict)

    def to_yaml_dict(self) -> dict[str, Any]:
        """What goes in the file: defaults left out so the file stays what the user wrote."""
        data = asdict(self)
        del data["name"]
        defaults = asdict(Environment(name=self.name, image=self.image))
        return {k: v for k, v in data.items() if k == "image" or v != defaults[k]}

    def config_hash(self) -> str:
        """Hash of everything that shapes the container; a change means the container is recreated."""
        data = asdict(self)
        # routing-only keys do not change the container
        for key in ("commands", "passthrough", "deny", "env"):
            data.pop(key)
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def parse_mount(spec: str) -> tuple[str, str, bool]:
    """``HOST:CONTAINER[:ro|rw]`` -> (host, container, read_only); raises ValueError with the reason."""
    parts = spec.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"mount '{spec}' is not HOST:CONTAINER[:ro]")
    host, target = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise ValueError(f"mount '{spec}': mode must be ro or rw, not '{mode}'")
    for side, p in (("host", host), ("container", target)):
        if not p.startswith("/"):
            raise ValueError(f"mount '{spec}': {side} path must be absolute")
    return host, target, mode == "ro"


def _expect(cond: bool, file: str, line: int | None, message: str) -> None:
    if not cond:
        raise ConfigError(file, message, line)


def _str_list(value: Any, key: str, file: str, lines: "yamlio.Lines") -> list[str]:
    _expect(isinstance(value, list), file, lines.get(key), f"'{key}' must be a list")
    for i, item in enumerate(value):
        _expect(isinstance(item, str) and item != "", file, lines.get(key, i),
                f"'{key}' entries must be non-empty strings")
    return list(value)


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name an environment (shown literally, cut when long), or None."""
    if NAME_RE.match(name):
        return None
    from .textsafe import visible

    shown = visible(name if len(name) <= 70 else name[:70] + "...")
    return (f"environment name '{shown}' must be letters, digits, '.', '_' or '-' (1 to 63 of them, starting "
            "with a letter or digit)")


def environment_from_dict(name: str, data: Any, file: str, lines: "yamlio.Lines | None" = None) -> Environment:
    """Validate one environment's mapping. Raises ConfigError naming file and line."""
    from . import yamlio

    lines = lines or yamlio.Lines()
    problem = name_problem(name)
    _expect(problem is None, file, None, problem or "")
    _expect(isinstance(data, dict), file, lines.get(), "an environment must be a mapping of keys")
    known = {f for f in Environment.__dataclass_fields__ if f != "name"}
    for key in data:
        if key not in known:
            hint = ", ".join(sorted(known))
            raise ConfigError(file, f"unknown key '{key}' (known keys: {hint})", lines.get(key))
    _expect("image" in data, file, lines.get(), "missing required key 'image'")
    image = data["image"]
    _expect(isinstance(image, str) and image.strip() != "", file, lines.get("image"),
            "'image' must be a non-empty string")
    env = Environment(name=name, image=image.strip())
    if "mounts" in data:
        env.mounts = _str_list(data["mounts"], "mounts", file, lines)
        for i, spec in enumerate(env.mounts):
            try:
                parse_mount(spec)
            except ValueError as err:
                raise ConfigError(file, str(err), lines.get("mounts", i)) from None
    if "env" in data:
        value = data["env"] or {}
        _expect(isinstance(value, dict), file, lines.get("env"), "'env' must be a mapping NAME: value")
        for k, v in value.items():
            _expect(isinstance(k, str) and re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k) is not None, file,
                    lines.get("env", k), f"'env': '{k}' is not a valid variable name")
            _expect(isinstance(v, (str, int, float, bool)), file, lines.get("env", k),
                    f"'env': value of '{k}' must be a scalar")
        env.env = {k: str(v) for k, v in value.items()}
    for key in ("passthrough", "deny", "cap_add"):
        if key in data:
            setattr(env, key, _str_list(data[key] or [], key, file, lines))
    if "commands" in data:
        env.commands = _str_list(data["commands"] or [], "commands", file, lines)
        for i, c in enumerate(env.commands):
            _expect(bool(COMMAND_RE.match(c)), file, lines.get("commands", i),
                    f"'commands': '{c}' must be a bare command name (no '/' or spaces)")
    if data.get("workdir_root") is not None:
        root = data["workdir_root"]
        _expect(isinstance(root, str) and root.startswith("/"), file, lines.get("workdir_root"),
                "'workdir_root' must be an absolute path")
        env.workdir_root = root.rstrip("/") or "/"
    if "run_as" in data:
        _expect(data["run_as"] in ("user", "root"), file, lines.get("run_as"),
                "'run_as' must be 'user' (files belong to you) or 'root'")
        env.run_as = data["run_as"]
    if data.get("seccomp") is not None:
        _expect(isinstance(data["seccomp"], str), file, lines.get("seccomp"),
                "'seccomp' must be 'unconfined' or a profile path")
        env.seccomp = data["seccomp"]
    if "ulimits" in data:
        value = data["ulimits"] or {}
        _expect(isinstance(value, dict), file, lines.get("ulimits"),
                "'ulimits' must be a mapping like {nofile: '1024:1024'}")
        for k, v in value.items():
            _expect(bool(ULIMIT_RE.match(str(v))), file, lines.get("ulimits", k),
                    f"'ulimits': '{k}' must be SOFT[:HARD], not '{v}'")
        env.ulimits = {str(k): str(v) for k, v in value.items()}
    if "podman_options" in data:
        value = data["podman_options"] or {}
        _expect(isinstance(value, dict), file, lines.get("podman_options"),
                "'podman_options' must be a mapping of podman create options")
        env.podman_options = dict(value)
    return env


def load_environment(name: str) -> Environment:
    from pathlib import Path

    from . import yamlio

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

    from . import yamlio

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


def load_settings() -> Settings:
    from pathlib import Path

    from . import yamlio

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
            _expect(isinstance(value, int) and value > 0, file, lines.get(key),
                    f"'{key}' must be a positive integer")
        else:
            _expect(isinstance(value, str), file, lines.get(key), f"'{key}' must be a string")
        setattr(settings, key, value)
    for k, v in settings.ulimits.items():
        _expect(bool(ULIMIT_RE.match(v)), file, lines.get("ulimits", k),
                f"'ulimits': '{k}' must be SOFT[:HARD], not '{v}'")
    return settings
