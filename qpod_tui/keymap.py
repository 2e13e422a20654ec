"""The user's keymap (settings.yaml ``keymap: {binding_id: key}``) checked against the binding
ids qpod tui has: an id that names nothing, or an empty key, is reported once, naming the file
and its line, instead of being ignored silently."""

import importlib
import pkgutil
import re

from textual.binding import Binding


def known_binding_ids() -> set[str]:
    """Every binding id of every class in qpod_tui (views, tables, dialogs, the app)."""
    import qpod_tui

    ids: set[str] = set()
    for mod in pkgutil.walk_packages(qpod_tui.__path__, "qpod_tui."):
        module = importlib.import_module(mod.name)
        for value in vars(module).values():
            if isinstance(value, type) and value.__module__ == mod.name:
                ids.update(b.id for b in value.__dict__.get("BINDINGS", []) if isinstance(b, Binding) and b.id)
    return ids


def line_of(text: str, key: str) -> int | None:
    """The line (1-based) of ``key:`` in a YAML file's text, plain or quoted."""
    pattern = re.compile(r"^\s*(['\"]?)" + re.escape(key) + r"\1\s*:")
    for n, line in enumerate(text.splitlines(), 1):
        if pattern.match(line):
            return n
    return None


def keymap_problems(keymap: dict[str, str], settings_text: str, settings_path: str) -> list[str]:
    """One line per entry qpod tui cannot use: ``PATH:LINE: keymap: ...``."""
    known = known_binding_ids()
    out = []
    for binding_id, key in keymap.items():
        if binding_id not in known:
            why = f"unknown binding id '{binding_id}' (? lists them)"
        elif not str(key).strip():
            why = f"'{binding_id}' has no key"
        else:
            continue
        line = line_of(settings_text, binding_id)
        out.append(f"{settings_path}{f':{line}' if line else ''}: keymap: {why}; ignored")
    return out


def usable(keymap: dict[str, str]) -> dict[str, str]:
    """The entries Textual can apply."""
    known = known_binding_ids()
    return {k: v for k, v in keymap.items() if k in known and str(v).strip()}
