"""``qpod which`` and ``qpod exec``: where a command runs, and running it there. ``exec`` has a
fast path without argparse: a build runs it thousands of times."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from qpod_engine.base.errors import EXIT_QPOD, QpodError
from qpod_engine.cli.common import current_dir, out_json

if TYPE_CHECKING:
    import argparse


def cmd_which(a: argparse.Namespace) -> int:
    from qpod_engine.base.paths import find_program
    from qpod_engine.config import snapshot
    from qpod_engine.routing.policy import decide

    if not a.argv:
        raise QpodError("usage: qpod which [--] CMD [ARGS...]", 2)
    cwd = current_dir()
    path = find_program(a.argv[0]) or a.argv[0]
    snap = snapshot.load()
    d = decide(path, a.argv, cwd, snapshot.targets(snap))
    data = {
        "where": d.where,
        "reason": d.reason,
        "path": path,
        "cwd": cwd,
        "repository": d.target.root if d.target else None,
        "environment": d.target.environment if d.target and d.in_container else None,
        "in_image": None,
    }
    blocked = None
    routed = d.target if d.in_container else None  # a container decision names a repository and its environment
    env_name = routed.environment if routed else None
    env_entry = (snapshot.environment_entry(snap, env_name, routed.root) or {}) if routed and env_name else {}
    if routed:
        # a broken or unknown environment, a repository file not allowed: the command would
        # fail (125), say so and why
        blocked = snapshot.environment_problem(snap, routed.environment, routed.root)
        data["blocked"] = blocked
    if not blocked:
        if env_entry.get("host"):
            from qpod_engine.podman.remote import DIFFERENCES

            data["host"] = env_entry["host"]
            data["differences"] = DIFFERENCES
    if routed and env_name and "/" not in a.argv[0] and not blocked:
        from qpod_engine.podman.lifecycle import command_in_container

        data["in_image"] = command_in_container(env_name, routed.root, a.argv[0])
    if routed and env_name and env_entry.get("distribute") and not blocked:
        from qpod_engine.podman.lifecycle import command_in_container

        data["distribute"] = list(env_entry["distribute"])
        # None: no running container to ask (yet)
        data["distcc"] = command_in_container(env_name, routed.root, "distcc")
    if a.json:
        out_json(data)
    else:
        from qpod_engine.base.textsafe import visible

        env = f" ({visible(data['environment'])})" if data["environment"] else ""
        found = data["in_image"]
        there = (
            ""
            if found is None
            else f"; in the container: {visible(found)}"
            if found
            else "; not found in the container: it would exit 127"
        )
        but = f"; it would fail (exit 125): {visible(blocked)}" if blocked else ""
        host = f"; on host {visible(data['host'])} over ssh ({data['differences']})" if data.get("host") else ""
        spread = ""
        if data.get("distribute"):
            hosts = " ".join(visible(h) for h in env_entry["distribute"])
            spread = (
                f"; distribute ({hosts}): the image has no distcc, every compile runs here"
                if data["distcc"] is False
                else f"; compiles spread by distcc over build hosts {hosts} (over ssh)"
            )
        print(f"{d.where}{env}: {visible(d.reason)}{there}{but}{host}{spread}")
    return 0


def cmd_exec(a: argparse.Namespace) -> int:
    from qpod_engine.base.paths import find_program
    from qpod_engine.launch.launcher import launch

    argv = list(a.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise QpodError("usage: qpod exec [--env NAME] [--] CMD [ARGS...]", 2)
    path = find_program(argv[0]) or argv[0]
    try:
        return launch(path, argv, current_dir(), explicit=True, env_name=a.env, tty=getattr(a, "tty", None))
    except QpodError as err:
        err.status = EXIT_QPOD
        raise


if TYPE_CHECKING:  # to the type checker, argparse's (the same constructor, any attribute)
    from argparse import Namespace as Namespace
else:

    class Namespace:
        """Parsed arguments for the paths that skip argparse (importing it costs milliseconds)."""

        def __init__(self, **kw: Any) -> None:
            self.__dict__.update(kw)


def exec_fast_path(argv: Sequence[str]) -> int | None:
    """``qpod exec [--env NAME] [--] CMD...`` without argparse; None when anything else is asked."""
    if not argv or argv[0] != "exec":
        return None
    rest, env, tty = list(argv[1:]), None, None
    while (
        rest[:1] and rest[0] in ("-t", "--tty", "-T", "--no-tty", "--env") or rest[:1] and rest[0].startswith("--env=")
    ):
        if rest[0] in ("-t", "--tty", "-T", "--no-tty"):
            tty, rest = rest[0] in ("-t", "--tty"), rest[1:]
        elif rest[0] == "--env" and len(rest) > 1:
            env, rest = rest[1], rest[2:]
        elif rest[0].startswith("--env="):
            env, rest = rest[0][len("--env=") :], rest[1:]
        else:
            break
    if rest[:1] == ["--"]:
        rest = rest[1:]
    elif rest[:1] and rest[0].startswith("-"):
        return None  # --help and friends: let argparse answer
    if not rest:
        return None
    return cmd_exec(Namespace(argv=rest, env=env, tty=tty))


def add_parsers(sub: Any) -> None:
    """The ``running`` commands on the parser."""
    import argparse

    wh = sub.add_parser("which", help="where a command would run, and why")
    wh.add_argument("--json", action="store_true")
    wh.add_argument("argv", nargs=argparse.REMAINDER)
    wh.set_defaults(func=cmd_which)
    ex = sub.add_parser("exec", help="run a command in the repository's environment")
    ex.add_argument("--env", metavar="NAME", help="use this environment whatever the binding says")
    tty = ex.add_mutually_exclusive_group()
    tty.add_argument(
        "-t",
        "--tty",
        dest="tty",
        action="store_const",
        const=True,
        default=None,
        help="give the command a terminal of its own (a pty), as for an interactive program",
    )
    tty.add_argument(
        "-T",
        "--no-tty",
        dest="tty",
        action="store_const",
        const=False,
        help="never a pty: the command gets your descriptors only",
    )
    ex.add_argument("argv", nargs=argparse.REMAINDER)
    ex.set_defaults(func=cmd_exec)
