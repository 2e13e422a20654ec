"""YAML read with line numbers (so errors say file:line) and atomic write (a failed write loses nothing)."""

import os
from pathlib import Path
from typing import Any

import yaml

from qpod_engine.base.errors import ConfigError, QpodError

try:  # libyaml is ten times faster; fall back to the pure-Python loader where it is missing
    from yaml import CSafeDumper as _Dumper
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on the PyYAML build
    from yaml import SafeDumper as _Dumper  # type: ignore[assignment]
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]


class Lines:
    """Line numbers (1-based) of the keys of a loaded YAML document, by key path."""

    def __init__(self) -> None:
        self._lines: dict[tuple[Any, ...], int] = {}

    def set(self, path: tuple[Any, ...], line: int) -> None:
        self._lines[path] = line

    def get(self, *path: Any) -> int | None:
        while path:
            if path in self._lines:
                return self._lines[path]
            path = path[:-1]
        return self._lines.get(())


def _to_python(node: yaml.Node, path: tuple[Any, ...], lines: Lines, file: str) -> Any:
    lines.set(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.load(yaml.serialize(key_node), Loader=_Loader)  # scalars only in our files
            if key in out:
                raise ConfigError(file, f"duplicate key '{key}'", key_node.start_mark.line + 1)
            lines.set(path + (key,), key_node.start_mark.line + 1)
            out[key] = _to_python(value_node, path + (key,), lines, file)
            lines.set(path + (key,), key_node.start_mark.line + 1)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, path + (i,), lines, file) for i, item in enumerate(node.value)]
    return yaml.load(yaml.serialize(node), Loader=_Loader)


MAX_DEPTH = 64  # qpod's files nest three or four levels; libyaml's composer recurses in C (a segfault at ~10,000)


def _line(event: yaml.Event) -> int | None:
    """The 1-based line of a parser's event (the parser always sets its mark)."""
    return event.start_mark.line + 1 if event.start_mark is not None else None


def _check_events(text: str, file: str) -> None:
    """Refuse an alias (``*name``): qpod's files never need one, and a few hundred bytes of
    nested aliases expand to billions of nodes (a "billion laughs" bomb would hang every qpod
    command and qpod-shell start). Anchors alone are harmless and allowed. Refuse nesting
    deeper than MAX_DEPTH too: composing it would crash the process."""
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.AliasEvent):
            raise ConfigError(
                file, f"YAML aliases are not supported (*{event.anchor}): write the value out", _line(event)
            )
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise ConfigError(file, f"invalid YAML: nested deeper than {MAX_DEPTH} levels", _line(event))
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def loads(text: str, file: str) -> tuple[Any, Lines]:
    """Parse YAML ``text`` (from ``file``, named in errors): a syntax error, an alias or a
    document nested absurdly deep becomes a ConfigError naming file and line."""
    lines = Lines()
    try:
        _check_events(text, file)
        node = yaml.compose(text, Loader=_Loader)
        if node is None:
            return None, lines
        return _to_python(node, (), lines, file), lines
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError(file, f"invalid YAML: {err.problem or err.context}", line) from None
    except yaml.YAMLError as err:
        raise ConfigError(file, f"invalid YAML: {err}") from None
    except RecursionError:
        raise ConfigError(file, "invalid YAML: nested too deeply") from None


def load(path: Path) -> tuple[Any, Lines]:
    """Parse ``path`` (see ``loads``); FileNotFoundError passes through, other read errors
    become a ConfigError."""
    from qpod_engine.base.ownership import check_config_fd

    file = str(path)
    try:
        with open(path, "rb") as f:
            check_config_fd(f.fileno(), file)  # another user's words never decide anything
            text = f.read().decode("utf-8")
    except FileNotFoundError:
        raise
    except OSError as err:
        raise ConfigError(file, f"cannot read: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(file, "not UTF-8 text") from None
    return loads(text, file)


def dump_text(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


def write_atomic(path: Path, text: str) -> None:
    """Write a user's config file atomically (see fileio.write_atomic); errors are one line."""
    from qpod_engine.base.fileio import write_atomic as _write

    if path.exists() and not os.access(path, os.W_OK):
        raise QpodError(f"{path}: cannot write: Permission denied")
    try:
        _write(str(path), text, durable=True)
    except OSError as err:
        raise QpodError(f"{path}: cannot write: {err.strerror or err}") from None
