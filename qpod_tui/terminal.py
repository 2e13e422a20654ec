"""A program in the dashboard's own terminal: the app suspends (as for a shell), the program
runs there, and the dashboard comes back when it ends, after a key when its output should be
read first (a command run again from its record)."""

import signal
import subprocess
from collections.abc import Callable

from textual.app import App


def status_line(status: int, signal: str | None) -> str:
    if status < 0:  # (subprocess's way of saying a signal ended it)
        return f"qpod: ended by signal {-status}"
    return f"qpod: exit {status}" + (f" ({signal})" if signal else "")


def run_in_terminal(
    app: App[object],
    header: str,
    argv: list[str],
    env: dict[str, str],
    cwd: str | None,
    wait_key: bool,
    signal_of: Callable[[int], str | None] | None = None,
) -> int:
    """Run ``argv`` in the terminal the app suspends from; its exit status. ``header`` is said
    first (qpod's own words, its values escaped by the caller); with ``wait_key`` the status is
    said and Enter brings the dashboard back. Raises what ``App.suspend`` raises where the app
    cannot step aside (SuspendNotSupported), or OSError when the program cannot start."""
    with app.suspend():
        # Ctrl-C and Ctrl-\ typed now are for the program (the terminal signals its whole
        # foreground group, the dashboard too): a handler that does nothing, not SIG_IGN, which
        # the program would inherit (a handler is reset to the default by exec)
        kept = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGINT, signal.SIGQUIT)}
        try:
            print(header, flush=True)
            status = subprocess.run(argv, env=env, cwd=cwd, check=False).returncode
            if wait_key:
                name = signal_of(status) if signal_of is not None else None
                print(f"{status_line(status, name)}; press Enter to return to qpod tui", flush=True)
                try:
                    input()
                except EOFError:
                    pass
        finally:
            for sig, handler in kept.items():
                signal.signal(sig, handler)
    return status


def _ignore(_sig: int, _frame: object) -> None:
    pass
