"""One exception type for every user-facing failure: a one-line message and an exit status."""

# Exit status for "qpod could not decide or launch" (same convention as podman/env/chroot).
EXIT_QPOD = 125


class QpodError(Exception):
    """A failure the user can act on. ``str(err)`` is the one line printed."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def unexpected(err: BaseException) -> str:
    """The one line for a failure nobody anticipated (QPOD_DEBUG=1 shows the traceback)."""
    import os

    if os.environ.get("QPOD_DEBUG"):
        import traceback

        traceback.print_exception(err)
    where = f": {err.filename}" if isinstance(err, OSError) and err.filename else ""
    detail = err.strerror if isinstance(err, OSError) and err.strerror else str(err) or type(err).__name__
    return f"unexpected error{where}: {detail} (QPOD_DEBUG=1 shows where)"


class ConfigError(QpodError):
    """Invalid configuration: the message names the file and, where known, the line."""

    def __init__(self, path: str, message: str, line: int | None = None, key: str | None = None) -> None:
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {message}", status=2)
        self.path = str(path)
        self.line = line
        self.detail = message
        self.key = key  # the option it is about, where there is one (a form shows it there)


class InUse(QpodError):
    """An environment still bound to repositories (``users``): removing it is refused."""

    def __init__(self, message: str, users: list[str]) -> None:
        super().__init__(message, status=2)
        self.users = users


class FieldError(QpodError):
    """A validation failure that belongs to one input field of a form."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message, status=2)
        self.field = field_name
        self.message = message
