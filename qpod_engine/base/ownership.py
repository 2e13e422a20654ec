"""Whether a directory or file is the user's alone: qpod trusts its state and config only then
(another local user able to write there could decide where the user's commands run, or what
they load). One line naming the path, its owner and mode when it is not.
"""

import os


def _refuse(path: str, st: os.stat_result, what: str) -> Exception:
    from qpod_engine.base.errors import EXIT_QPOD, QpodError

    return QpodError(
        f"{what} {path} is not yours (owner uid {st.st_uid}, mode {st.st_mode & 0o7777:04o}): "
        "another user could steer your commands through it; remove or rename it (as its owner or "
        "root), or set QPOD_STATE_DIR to a directory of your own",
        EXIT_QPOD,
    )


def check_private_dir(d: str, what: str = "qpod's state dir", closed: int = 0o077) -> bool:
    """Whether the directory ``d`` exists, once it is known to be the effective user's own and
    closed to others. One of ours open to group or others (an older qpod, umask 000) is closed
    (0700 at most). Raises QpodError (status 125, one line naming ``d``, its owner and mode)
    when ``d`` (or a link at ``d``) belongs to another user, is not a directory, or cannot be
    looked at (EACCES): its content could have been written by anyone and is never used."""
    import stat

    from qpod_engine.base.errors import EXIT_QPOD, QpodError

    try:
        st = os.lstat(d)
        if stat.S_ISLNK(st.st_mode):
            if st.st_uid != os.geteuid():
                raise _refuse(d, st, what)
            st = os.stat(d)
    except PermissionError as err:  # another user's, most likely: not an empty state
        raise QpodError(
            f"{what} {d}: cannot use it: {err.strerror} (qpod uses only a directory of its own "
            "user: set QPOD_STATE_DIR to a directory of yours)",
            EXIT_QPOD,
        ) from None
    except OSError:
        return False  # not there (or a file in the way): making it says why, if it cannot be made
    if not stat.S_ISDIR(st.st_mode):
        raise QpodError(
            f"{what} {d} is not a directory (mode {st.st_mode & 0o7777:04o}): remove it or set "
            "QPOD_STATE_DIR to a directory of yours",
            EXIT_QPOD,
        )
    if st.st_uid != os.geteuid():
        raise _refuse(d, st, what)
    if st.st_mode & closed:
        try:
            os.chmod(d, st.st_mode & ~closed & 0o7777)
        except OSError as err:
            raise QpodError(
                f"{what} {d} is open to others (mode {st.st_mode & 0o7777:04o}) and cannot be closed: {err.strerror}",
                EXIT_QPOD,
            ) from None
    return True


def check_config_dir(d: str) -> bool:
    """Whether the config directory ``d`` exists, once it is known to be the user's own and
    writable by nobody else (one of ours that others may write, left by an older qpod under
    umask 000, loses those bits: a file another user dropped there would decide where your
    commands run). Raises QpodError as check_private_dir does."""
    return check_private_dir(d, "qpod's config dir", closed=0o022)


def check_config_fd(fd: int, path: str) -> None:
    """Raises QpodError (125, one line) unless the open config file ``fd`` is the user's own and
    writable by nobody else: content another user could have written is never used."""
    from qpod_engine.base.errors import EXIT_QPOD, QpodError

    st = os.fstat(fd)
    if st.st_uid != os.geteuid():
        raise _refuse(path, st, "config file")
    if st.st_mode & 0o022:
        raise QpodError(
            f"config file {path} is writable by others (mode {st.st_mode & 0o7777:04o}): check what "
            f"it says, then 'chmod go-w {path}'",
            EXIT_QPOD,
        )


def check_private_fd(fd: int, path: str) -> None:
    """Raises QpodError unless the open file ``fd`` (read from ``path`` in the state dir) is a
    regular file of the effective user, writable by nobody else: only then is its content ours."""
    import stat

    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise _refuse(path, st, "qpod's state file")
