"""Git facts: discovering the repository around a directory (pygit2) and, on the hot path,
reading the checked-out branch straight from HEAD (no pygit2 import, ~20 us)."""

import os

from .errors import QpodError

TYPE_CHECKING = False  # typing is not imported on the launcher's path
if TYPE_CHECKING:
    from collections.abc import Iterable


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


def head_state(root: str) -> tuple[str | None, str]:
    """(branch, how) of the work tree at ``root``: how is "" on a branch; "bisecting" or
    "rebasing" while git has HEAD detached for that branch (git records which: BISECT_START,
    rebase-merge/head-name, rebase-apply/head-name); "detached" otherwise; "unknown" when HEAD
    cannot be read."""
    gd = git_dir(root)
    head = _read_line(os.path.join(gd, "HEAD")) if gd else None
    if head is None:
        return None, "unknown"
    prefix = "ref: refs/heads/"
    if head.startswith(prefix):
        return head[len(prefix):], ""
    assert gd is not None
    for how, file in (("rebasing", "rebase-merge/head-name"), ("rebasing", "rebase-apply/head-name"),
                      ("bisecting", "BISECT_START")):
        recorded = _read_line(os.path.join(gd, file))
        if recorded:
            name = recorded[len("refs/heads/"):] if recorded.startswith("refs/heads/") else recorded
            # BISECT_START holds a commit id when the bisect began detached: no branch then
            if name and not (len(name) in (40, 64) and all(c in "0123456789abcdef" for c in name)):
                return name, how
    return None, "detached"


def _read_line(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.readline().strip()
    except OSError:
        return None


def current_branch(root: str) -> str | None:
    """The branch whose rules apply at ``root``: the checked-out one, or the one being bisected
    or rebased; None on any other detached HEAD, or unreadable."""
    return head_state(root)[0]


def is_within(path: str, root: str) -> bool:
    """True when ``path`` is ``root`` or below it (plain string test on normalised absolute paths)."""
    if root == "/":
        return path.startswith("/")
    return path == root or path.startswith(root + "/")


def innermost_root(path: str, roots: "Iterable[str]") -> str | None:
    """The innermost of ``roots`` that holds ``path`` (nested repositories: the inner one). The
    one way qpod picks a root for a path (the preload library and the client do the same in C)."""
    best = None
    for root in roots:
        if is_within(path, root) and (best is None or len(root) > len(best)):
            best = root
    return best


def exists(root: str) -> bool:
    return os.path.isdir(root)
