"""The ``qpod`` command line: the parser (each command group adds its own commands) and the
one place failures become one line on stderr and a non-zero status.

argparse and the command groups other than ``running`` are imported only when needed: ``qpod
exec`` takes a fast path without them (a build runs it thousands of times; see bench/bench_exec.py).
"""

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from qpod_engine.base.environ import restore_locale
from qpod_engine.base.errors import EXIT_QPOD, QpodError
from qpod_engine.cli.running import Namespace, exec_fast_path

if TYPE_CHECKING:
    import argparse


def build_parser() -> "argparse.ArgumentParser":
    import argparse

    from qpod_engine import __version__
    from qpod_engine.cli import activation, containers, environments, logs, repositories, running, tools

    p = argparse.ArgumentParser(
        prog="qpod", description="Run a repository's build and debug commands in its podman environment, transparently."
    )
    p.add_argument("--version", action="version", version=f"qpod {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    environments.add_parsers(sub)
    repositories.add_parsers(sub)
    running.add_parsers(sub)
    containers.add_parsers(sub)
    logs.add_parsers(sub)
    tools.add_parsers(sub)
    activation.add_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    restore_locale()  # what qpod starts gets the caller's environment, not Python's coerced one
    if argv[:1] == ["--slow-exec"]:  # the native-exec client's way back (see front.py)
        argv[0] = "exec"
    try:
        fast = exec_fast_path(argv)
        if fast is not None:
            return fast
        if argv[:1] == ["tui"]:  # every option after 'tui' is the TUI's own
            from qpod_engine.cli.tools import cmd_plugin

            return cmd_plugin(Namespace(plugin="tui", rest=argv[1:]))
        parser = build_parser()
        if "_ARGCOMPLETE" in os.environ:  # shell completion (qpod completion bash): answers and exits
            from qpod_engine.cli.completion import autocomplete

            autocomplete(parser)
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except QpodError as err:
        from qpod_engine.base.textsafe import visible

        print(f"qpod: {visible(err)}", file=sys.stderr)  # errors quote paths, names and podman's words
        return err.status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as err:  # noqa: BLE001 - one line and a status, never a traceback
        from qpod_engine.base.errors import unexpected
        from qpod_engine.base.textsafe import visible

        print(f"qpod: {visible(unexpected(err))}", file=sys.stderr)
        return EXIT_QPOD


if __name__ == "__main__":
    sys.exit(main())
