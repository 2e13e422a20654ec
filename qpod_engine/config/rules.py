"""The rules file: what the preload library routes by, compiled from the config by
``snapshot.compile_config`` (``rules_text``) and read here as the library reads it (doctor, the
shell's start, the C/Python agreement tests). Its format is specified in docs/formats.md.

Stdlib only: the launcher and the shell read it.
"""

from dataclasses import dataclass, field
from pathlib import Path

from qpod_engine.base import paths
from qpod_engine.base.fnv import fnv1a

RULES_HEADER = "qpod-rules\t1"
RULES_MAX = 1024 * 1024  # the library's RULES_MAX (preload/qpod_preload.c)


def rules_sum(body: bytes) -> str:
    """64-bit FNV-1a of the rules before their ``sum`` line, as 16 hex digits: the library uses
    a rules file only when its last line carries this, so a truncated, corrupted or hand-edited
    file is never taken for rules (it falls back to the rules it read before)."""
    return fnv1a(body)


def seal_rules(text: str) -> str:
    """``text`` (ending in a newline) with its ``sum`` line appended."""
    return f"{text}sum\t{rules_sum(text.encode())}\n"


@dataclass
class Rules:
    """What the library routes by: the launcher's argv and each watched root with its commands."""

    launcher: list[str] = field(default_factory=list)
    roots: list[tuple[str, list[str]]] = field(default_factory=list)  # (root, command names)


def read_rules(path: str | Path | None = None) -> Rules | None:
    """The rules file as the library reads it; None when missing, unreadable, not version 1 or
    not sealed by its ``sum`` line."""
    try:
        data = Path(path or paths.rules_file()).read_bytes()
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    lines = text.split("\n")
    if lines[0] != RULES_HEADER or len(data) >= RULES_MAX:  # the library ignores it too
        return None
    # sealed as the library wants it: the sum line last, exactly (preload/qpod_preload.c)
    body, _, last = data[:-1].rpartition(b"\n")
    if not data.endswith(b"\n") or last != b"sum\t" + rules_sum(body + b"\n").encode():
        return None
    rules = Rules()
    for line in lines[1:]:
        kind, *fields = line.split("\t")
        if kind == "launcher":
            rules.launcher = fields
        elif kind == "root" and fields and fields[0].startswith("/"):
            rules.roots.append((fields[0], fields[1:]))
    return rules
