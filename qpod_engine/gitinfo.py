"""Git facts: discovering the repository around a directory (pygit2) and, on the hot path,
reading the checked-out branch straight from HEAD (no pygit2 import, ~20 us)."""

import os

from .errors import QpodError


def discover_root(start: str) -> str:
    """The work tree root of the git repository containing ``start`` (worktrees included)."""
    import pygit2  # imported here: ~90 ms, only the CLI's binding commands need it

    found = None
    try:
        found = pygit2.discover_repository(start)
        if not found:
            raise QpodError(f"{start}: not inside a git repository (run 'git init' or cd into one)", status=2)
        repo = pygit2.Repository(found)
    except pygit2.GitError as err:
        owner = _owner(found) if found else None
        if owner is not None and owner != os.geteuid():
            # git's safe.directory rule, in qpod's words (checked here, not read from the error)
            raise QpodError(f"{start}: the repository belongs to another user (uid {owner}) and git refuses it: "
                            f"run qpod as its owner, or trust it with 'git config --global --add safe.directory "
                            f"{os.path.dirname(found.rstrip('/'))}'", status=2) from None
        raise QpodError(f"{start}: cannot read git repository: {' '.join(str(err).split())}", status=2) from None
    if repo.is_bare or not repo.workdir:
        raise QpodError(f"{start}: is a bare git repository; bind a work tree instead", status=2)
    return os.path.realpath(repo.workdir.rstrip("/")) or "/"


def _owner(path: str) -> int | None:
    try:
        return os.stat(path).st_uid
    except OSError:
        return None


def git_dir(root: str) -> str | None:
    """The git dir of the work tree at ``root`` (``.git`` or where a worktree's ``.git`` file points)."""
    dotgit = os.path.join(root, ".git")
    if os.path.isdir(dotgit):
        return dotgit
    try:
        with open(dotgit, encoding="utf-8") as f:
            first = f.readline().strip()
    except OSError:
        return None
    if first.startswith("gitdir:"):
        target = first[len("gitdir:"):].strip()
        return os.path.normpath(os.path.join(root, target))
    return None


def common_dir(gitdir: str) -> str:
    """For a linked worktree, the main repository's git dir (objects, refs live there)."""
    try:
        with open(os.path.join(gitdir, "commondir"), encoding="utf-8") as f:
            return os.path.normpath(os.path.join(gitdir, f.read().strip()))
    except OSError:
        return gitdir


def current_branch(root: str) -> str | None:
    """Branch checked out in the work tree at ``root``; None when detached or unreadable."""
    gd = git_dir(root)
    if gd is None:
        return None
    try:
        with open(os.path.join(gd, "HEAD"), encoding="utf-8") as f:
            head = f.read().strip()
    except OSError:
        return None
    prefix = "ref: refs/heads/"
    return head[len(prefix):] if head.startswith(prefix) else None


def is_within(path: str, root: str) -> bool:
    """True when ``path`` is ``root`` or below it (plain string test on normalised absolute paths)."""
    if root == "/":
        return path.startswith("/")
    return path == root or path.startswith(root + "/")


def exists(root: str) -> bool:
    return os.path.isdir(root)
