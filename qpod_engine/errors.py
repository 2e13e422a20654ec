"""One exception type for every user-facing failure: a one-line message and an exit status."""

# Exit status for "qpod could not decide or launch" (same convention as podman/env/chroot).
EXIT_QPOD = 125


class QpodError(Exception):
    """A failure the user can act on. ``str(err)`` is the one line printed."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class ConfigError(QpodError):
    """Invalid configuration: the message names the file and, where known, the line."""

    def __init__(self, path: str, message: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {message}", status=2)
        self.path = str(path)
        self.line = line
        self.detail = message
