"""Git facts: discovering the repository around a directory (pygit2) and, on the hot path,
reading the checked-out branch straight from HEAD (no pygit2 import, ~20 us).

A checkout's git metadata (``.git``, HEAD, commondir, gitdir, rebase ``head-name``,
BISECT_START) is the checkout's to write: any of them can be a FIFO, a link to /dev/zero or a
huge file. It is read with ``read_small`` only, which never blocks and never reads more than
a few KiB."""

import os

from qpod_engine.base.errors import QpodError

TYPE_CHECKING = False  # typing is not imported on the launcher's path
if TYPE_CHECKING:
    from collections.abc import Iterable


def discover_root(start: str) -> str:
    """The work tree root of the git repository containing ``start`` (worktrees included)."""
    import pygit2  # imported here: ~90 ms, only the CLI's binding commands need it

    found = None
    _check_dotgit_files(start)
    try:
        found = pygit2.discover_repository(start)
        if not found:
            raise QpodError(f"{start}: not inside a git repository (run 'git init' or cd into one)", status=2)
        _check_libgit2_files(found)
        repo = pygit2.Repository(found)
    except pygit2.GitError as err:
        owner = _owner(found) if found else None
        if found and owner is not None and owner != os.geteuid():
            # git's safe.directory rule, in qpod's words (checked here, not read from the error)
            raise QpodError(
                f"{start}: the repository belongs to another user (uid {owner}) and git refuses it: "
                f"run qpod as its owner, or trust it with 'git config --global --add safe.directory "
                f"{os.path.dirname(found.rstrip('/'))}'",
                status=2,
            ) from None
        raise QpodError(f"{start}: cannot read git repository: {' '.join(str(err).split())}", status=2) from None
    if repo.is_bare or not repo.workdir:
        raise QpodError(f"{start}: is a bare git repository; bind a work tree instead", status=2)
    return os.path.realpath(repo.workdir.rstrip("/")) or "/"


MAX_GIT_CONFIG_BYTES = 16 << 20


def _refuse(path: str, limit: int) -> None:
    """QpodError when ``path`` exists but is not a regular file of at most ``limit`` bytes:
    libgit2 opens such files with a blocking open and reads them whole, so a FIFO there would
    hang qpod and a huge (sparse) file exhaust its memory."""
    import stat

    try:
        st = os.stat(path)
    except OSError:
        return
    if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
        what = "not a regular file" if not stat.S_ISREG(st.st_mode) else f"larger than {limit} bytes"
        raise QpodError(f"{path}: {what}: qpod does not read this repository", status=2)


def _check_dotgit_files(start: str) -> None:
    """The ``.git`` file libgit2's discovery would read (the innermost ``.git`` above ``start``)."""
    d = os.path.abspath(start)
    while True:
        dotgit = os.path.join(d, ".git")
        if os.path.lexists(dotgit):
            if not os.path.isdir(dotgit):
                _refuse(dotgit, SMALL_FILE_BYTES)
            return
        parent = os.path.dirname(d)
        if parent == d:
            return
        d = parent


def _check_libgit2_files(gitdir: str) -> None:
    """What opening the repository at ``gitdir`` reads: its config, a worktree's gitdir and
    commondir, the common dir's config."""
    gitdir = gitdir.rstrip("/") or "/"
    for name in ("gitdir", "commondir"):
        _refuse(os.path.join(gitdir, name), SMALL_FILE_BYTES)
    for d in dict.fromkeys((gitdir, common_dir(gitdir))):
        _refuse(os.path.join(d, "config"), MAX_GIT_CONFIG_BYTES)


def _owner(path: str) -> int | None:
    try:
        return os.stat(path).st_uid
    except OSError:
        return None


SMALL_FILE_BYTES = 4096  # git's metadata files hold one line: a ref, a commit id, a path


def read_small(path: str, limit: int = SMALL_FILE_BYTES, follow: bool = True) -> bytes:
    """The bytes of the regular file at ``path``, for a file a checkout (or anyone but qpod)
    may have planted: never blocks (opened O_NONBLOCK, so a FIFO cannot hang the open, and
    only a regular file is read: a FIFO, a device such as /dev/zero or a socket is refused
    before any read) and never reads more than ``limit`` bytes. ``follow=False`` refuses a
    symbolic link too (ELOOP). Raises OSError: the open's, or EINVAL "not a regular file",
    or EFBIG "larger than N bytes"."""
    import errno
    import stat

    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    # stat first: a device is not even opened (opening one can have effects of its own)
    if not stat.S_ISREG((os.stat if follow else os.lstat)(path).st_mode):
        raise OSError(errno.EINVAL, "not a regular file", path)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped since the stat
            raise OSError(errno.EINVAL, "not a regular file", path)
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", path)
    return b"".join(chunks)


def _read_text(path: str) -> str | None:
    """``read_small`` as text (git's bytes kept, surrogate-escaped), None when it cannot be read."""
    try:
        return read_small(path).decode("utf-8", "surrogateescape")
    except OSError:
        return None


def git_dir(root: str) -> str | None:
    """The git dir of the work tree at ``root`` (``.git`` or where a worktree's ``.git`` file points)."""
    dotgit = os.path.join(root, ".git")
    if os.path.isdir(dotgit):
        return dotgit
    text = _read_text(dotgit)
    if text is None:
        return None
    first = text.split("\n", 1)[0].strip()
    if first.startswith("gitdir:"):
        target = first[len("gitdir:") :].strip()
        return os.path.normpath(os.path.join(root, target))
    return None


def common_dir(gitdir: str) -> str:
    """For a linked worktree, the main repository's git dir (objects, refs live there)."""
    text = _read_text(os.path.join(gitdir, "commondir"))
    if text is None:
        return gitdir
    return os.path.normpath(os.path.join(gitdir, text.strip()))


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
        return head[len(prefix) :], ""
    assert gd is not None
    for how, file in (
        ("rebasing", "rebase-merge/head-name"),
        ("rebasing", "rebase-apply/head-name"),
        ("bisecting", "BISECT_START"),
    ):
        recorded = _read_line(os.path.join(gd, file))
        if recorded:
            name = recorded[len("refs/heads/") :] if recorded.startswith("refs/heads/") else recorded
            # BISECT_START holds a commit id when the bisect began detached: no branch then
            if name and not (len(name) in (40, 64) and all(c in "0123456789abcdef" for c in name)):
                return name, how
    return None, "detached"


def _read_line(path: str) -> str | None:
    text = _read_text(path)
    return None if text is None else text.split("\n", 1)[0].strip()


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
