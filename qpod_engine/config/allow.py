"""Allowing, registering and denying a repository's own file (``qpod allow``, ``qpod init``
with no ENV, ``qpod deny``): the allow records and the bindings change under the config lock,
then the config is compiled again. Above both ``repo_file`` (what the file says) and
``snapshot`` (what is compiled from it), so neither needs the other's writer.
"""

from __future__ import annotations

from qpod_engine.base.fileio import config_lock
from qpod_engine.base.paths import REPO_FILE
from qpod_engine.config import bindings, snapshot, trust
from qpod_engine.config.repo_file import RepoFile


def allow(rf: RepoFile, take_over: bool = False) -> str | None:
    """Record the file's content as allowed in its repository and register the repository
    for it (a binding whose environment is REPO_FILE), unless an explicit binding for any
    branch exists and ``take_over`` (``qpod init`` with no ENV) is not asked. Returns the
    explicit environment that still wins, or None."""
    assert rf.env is not None and not rf.problems
    with config_lock():
        trust.allow(rf.root, rf.sha, rf.env.commands, _text_of(rf))
        binds = bindings.load_bindings()
        b = binds.get(rf.root)
        wins = b.environment if b is not None and b.environment not in (None, REPO_FILE) else None
        if wins is None or take_over:
            bindings.bind(binds, rf.root, REPO_FILE, None)
            bindings.save_bindings(binds)
            wins = None
        snapshot.compile_config()
    return wins


def _text_of(rf: RepoFile) -> str | None:
    """The file's text, when it is still the content the user was shown (same sha256) and text."""
    import hashlib

    try:
        with open(rf.path, "rb") as f:
            data = f.read(trust.TEXT_MAX + 1)
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() != rf.sha:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def changes(rf: RepoFile) -> list[str]:
    """What changed in the file since the newest version allowed here (a unified diff, its
    first line saying which version), or [] when this content is allowed or none was kept."""
    import difflib

    records = trust.load()
    if trust.is_allowed(records, rf.root, rf.sha):
        return []
    last = trust.last_allowed(records, rf.root)
    now = _read_text(rf.path)
    if last is None or now is None:
        return []
    sha, when, text = last
    diff = difflib.unified_diff(text.splitlines(), now.splitlines(), f"allowed {when}", "now", n=1, lineterm="")
    lines = [ln for ln in diff if not ln.startswith(("---", "+++"))]
    return [f"changed since the version allowed {when} (sha256 {sha[:16]}):", *lines] if lines else []


def _read_text(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read(trust.TEXT_MAX + 1).decode("utf-8", "replace")
    except OSError:
        return None


def register(root: str) -> None:
    """Register the repository for its file without allowing it (``qpod init`` declined, or the
    file is broken): its routed commands then fail with exit 125 and one line naming the file
    until ``qpod allow`` (or ``qpod deny``: the host), never build on the host unannounced."""
    with config_lock():
        binds = bindings.load_bindings()
        bindings.bind(binds, root, REPO_FILE, None)
        bindings.save_bindings(binds)
        snapshot.compile_config()


def deny(root: str) -> tuple[int, bool]:
    """Forget the allowed versions of the root's file and unregister the repository for it
    (its commands run on the host again; an explicit binding stays). Returns (versions
    forgotten, whether the registration was removed)."""
    with config_lock():
        gone = trust.deny(root)
        binds = bindings.load_bindings()
        b = binds.get(root)
        unregistered = b is not None and b.environment == REPO_FILE
        if b is not None and unregistered:
            b.environment = None
            if not b.branches:
                del binds[root]
            bindings.save_bindings(binds)
        snapshot.compile_config()
    return gone, unregistered
