"""The allow records of repository files (``.qpod.yaml``): which contents, by SHA-256, the user
allowed in which repository (``qpod allow``), so that a file changed by a commit, an edit or a
checkout is not used until it is allowed again.

Kept in the config dir (``allowed.json``, 0600): a repository file never writes anything else
there. Stdlib only: the snapshot compiler reads it on the launcher's slow path.
"""

from __future__ import annotations

import json
import os

from qpod_engine.base import paths

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

TRUST_VERSION = 1
KEEP_PER_ROOT = 32  # allowed versions kept per repository (branches switched back and forth stay allowed)
TEXT_MAX = 64 * 1024  # an allowed file's text is kept up to this size: the next review shows what changed


def load() -> dict[str, dict[str, dict[str, Any]]]:
    """root -> {sha256: record}. A missing or unreadable file allows nothing (fail closed), and
    so does one that another user owns or may write."""
    try:
        with open(paths.trust_file(), encoding="utf-8") as f:
            st = os.fstat(f.fileno())
            if st.st_uid != os.geteuid() or st.st_mode & 0o022:
                return {}
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != TRUST_VERSION or not isinstance(data.get("allowed"), dict):
        return {}
    return {root: recs for root, recs in data["allowed"].items() if isinstance(root, str) and isinstance(recs, dict)}


def is_allowed(records: dict[str, dict[str, dict[str, Any]]], root: str, sha: str) -> bool:
    return sha in records.get(root, {})


def last_allowed(records: dict[str, dict[str, dict[str, Any]]], root: str) -> tuple[str, str, str] | None:
    """(sha, time, text) of the newest allowed version of the root's file whose text was kept."""
    for sha, rec in reversed(list(records.get(root, {}).items())):
        text = rec.get("text")
        if isinstance(text, str):
            return sha, str(rec.get("time", "?")), text
    return None


def known_commands(records: dict[str, dict[str, dict[str, Any]]], root: str) -> list[str]:
    """Every command an allowed version of the root's file routes: the preload library watches
    them all, so a checkout of another allowed version routes its commands at once."""
    out: list[str] = []
    for rec in records.get(root, {}).values():
        out += [c for c in rec.get("commands", ()) if isinstance(c, str) and c not in out]
    return out


def _save(records: dict[str, dict[str, dict[str, Any]]]) -> None:
    from qpod_engine.base.errors import QpodError
    from qpod_engine.base.fileio import write_atomic

    path = paths.trust_file()
    try:
        write_atomic(
            path, json.dumps({"version": TRUST_VERSION, "allowed": records}, indent=1) + "\n", durable=True, mode=0o600
        )
    except OSError as err:
        raise QpodError(f"{path}: cannot write: {err.strerror or err}") from None


def allow(root: str, sha: str, commands: list[str], text: str | None = None) -> None:
    """Record ``sha`` as allowed in ``root`` (the caller holds the config lock), with the text
    that was allowed when it is small enough (the next review shows what changed since)."""
    import time

    records = load()
    mine = records.setdefault(root, {})
    mine.pop(sha, None)  # re-allowed: becomes the newest
    mine[sha] = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "commands": list(commands)}
    if text is not None and len(text) <= TEXT_MAX:
        mine[sha]["text"] = text
    while len(mine) > KEEP_PER_ROOT:
        del mine[next(iter(mine))]
    _save(records)


def deny(root: str) -> int:
    """Forget every allowed version of ``root``'s file; returns how many there were."""
    records = load()
    gone = len(records.pop(root, {}))
    if gone or os.path.exists(paths.trust_file()):
        _save(records)
    return gone
