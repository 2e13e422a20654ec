"""``qpod doctor|demo|completion|tui``: checks, the demo, shell completion, plugins (the dashboard)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from qpod_engine.base.errors import QpodError

if TYPE_CHECKING:
    import argparse


def cmd_doctor(a: argparse.Namespace) -> int:
    from qpod_engine.base.textsafe import visible
    from qpod_engine.cli.doctor import run_checks

    problems = 0
    for ok, what, fix in run_checks():  # checks quote podman's errors and paths: escaped
        print(f"{'ok  ' if ok else 'FAIL'} {visible(what)}" + ("" if ok else f"\n     fix: {visible(fix)}"))
        problems += not ok
    return 1 if problems else 0


def cmd_demo(a: argparse.Namespace) -> int:
    from qpod_engine.cli.demo import run_demo

    return run_demo(a.dir)


def cmd_completion(a: argparse.Namespace) -> int:
    from qpod_engine.cli.completion import script

    sys.stdout.write(script(a.shell))
    return 0


def cmd_plugin(a: argparse.Namespace) -> int:
    """Sub-commands that live outside the engine (the TUI), found through entry points, so the
    engine never imports the UI."""
    from importlib.metadata import entry_points

    eps = [ep for ep in entry_points(group="qpod.commands") if ep.name == a.plugin]
    if not eps:
        raise QpodError(f"'qpod {a.plugin}' is not installed (pip install qpod)", 2)
    return int(eps[0].load()(a.rest) or 0)


def add_parsers(sub: Any) -> None:
    """The ``tools`` commands on the parser."""
    import argparse

    sub.add_parser("doctor", help="check podman, the API socket, the config").set_defaults(func=cmd_doctor)
    dm = sub.add_parser("demo", help="build a Debian 11 environment and build a sample repository in it")
    dm.add_argument("--dir", help="where to create the sample repository (default: a temp dir)")
    dm.set_defaults(func=cmd_demo)
    cp = sub.add_parser("completion", help='print shell completion code (bash: eval "$(qpod completion bash)")')
    cp.add_argument("shell", choices=["bash", "zsh", "fish"])
    cp.set_defaults(func=cmd_completion)
    tui = sub.add_parser("tui", help="the dashboard")
    tui.add_argument("rest", nargs=argparse.REMAINDER)
    tui.set_defaults(func=cmd_plugin, plugin="tui")
