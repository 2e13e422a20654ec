"""``qpod env add|set|list|show|rm``: environments, their options from the option table."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from qpod_engine.base import paths
from qpod_engine.base.errors import QpodError
from qpod_engine.cli.common import engine, out_json, table

if TYPE_CHECKING:
    import argparse


def _first_problem(name: str, problems: list[Any]) -> None:
    if problems:
        key, _at, message = problems[0]
        raise QpodError(f"environment '{name}': {message}", 2)


def cmd_env_add(a: argparse.Namespace) -> int:
    from pathlib import Path

    from qpod_engine.config import environments as config
    from qpod_engine.config import fields as env_fields

    problem = config.name_problem(a.name)
    if problem:  # before any path is made of it (300 characters: file name too long)
        raise QpodError(problem, 2)
    path = Path(paths.environment_file(a.name))
    if path.exists() and not a.replace:
        raise QpodError(
            f"environment '{a.name}' exists ({path}); use --replace to overwrite it, or "
            f"'qpod env set {a.name} KEY=VALUE' to change one option",
            2,
        )
    data, problems = env_fields.from_flags(a)
    _first_problem(a.name, problems)
    env = config.environment_from_dict(a.name, data, "command line")
    written = engine().save_environment(env, create=False)
    print(f"environment '{a.name}' saved to {written}")
    _warn_unknown_host(env.host)
    return 0


def _warn_unknown_host(host: str | None) -> None:
    """Saved all the same (the connection may be added next): a word now spares a failed build."""
    if not host:
        return
    from qpod_engine.base.textsafe import visible
    from qpod_engine.podman import remote

    try:
        known = remote.connections()
    except QpodError:
        return
    if host not in known:
        print(
            f"qpod: note: host '{visible(host)}' is not a podman ssh connection yet (podman system connection "
            "add NAME ssh://USER@HOST/PATH/podman.sock --identity KEY)",
            file=sys.stderr,
        )


def cmd_env_set(a: argparse.Namespace) -> int:
    """``qpod env set NAME KEY=VALUE...``: change options of an environment, keeping the rest.
    VALUE is read as the TUI form reads it: an empty list is empty (share= : nothing shared), an
    empty text option returns to its default."""
    from qpod_engine.config import fields as env_fields

    changes: dict[str, Any] = {}
    for item in a.assignments:
        key, sep, text = item.partition("=")
        opt = env_fields.BY_KEY.get(key.strip())
        if not sep or opt is None:
            raise QpodError(f"'{item}': expected KEY=VALUE with KEY one of {', '.join(env_fields.BY_KEY)}", 2)
        value, why = env_fields.from_text(opt, text)
        if why:
            raise QpodError(f"environment '{a.name}': {why}", 2)
        changes[opt.key] = opt.default() if value is None else value
    written = engine().set_options(a.name, changes)
    print(f"environment '{a.name}' saved to {written} ({', '.join(changes)} changed)")
    _warn_unknown_host(changes.get("host"))
    return 0


def _env_dict(env: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(env)


def cmd_env_list(a: argparse.Namespace) -> int:
    from qpod_engine.config import environments as config

    envs = config.load_environments()
    rows = [{**_env_dict(e), "repositories": engine().bound_to(n)} for n, e in envs.items()]
    if a.json:
        out_json(rows)
    elif not rows:
        print("no environments yet; add one with: qpod env add NAME --image IMAGE")
    else:
        table(
            [[r["name"], r["image"], str(len(r["repositories"])), ",".join(r["commands"])] for r in rows],
            ["NAME", "IMAGE", "REPOS", "COMMANDS"],
        )
    return 0


def cmd_env_show(a: argparse.Namespace) -> int:
    from qpod_engine.base.textsafe import visible
    from qpod_engine.config import environments as config

    env = config.load_environment(a.name)
    data = {**_env_dict(env), "file": str(paths.environment_file(a.name)), "repositories": engine().bound_to(a.name)}
    if a.json:
        out_json(data)
    else:
        for k, v in data.items():
            if isinstance(v, dict):
                v = ", ".join(f"{x}={y}" for x, y in v.items()) or "-"
            elif isinstance(v, list):
                v = ", ".join(v) or "-"
            print(f"{k + ':':16}{visible(v) if v is not None else '-'}")
    return 0


def cmd_env_rm(a: argparse.Namespace) -> int:
    from qpod_engine.base.errors import InUse

    try:
        engine().delete_environment(a.name, force=a.force)
    except InUse as err:
        err.args = (f"{err}, or use --force",)
        raise
    print(f"environment '{a.name}' removed")
    return 0


def add_parsers(sub: Any) -> None:
    """The ``environments`` commands on the parser."""

    from qpod_engine.config import fields as env_fields

    env = sub.add_parser("env", help="manage environments").add_subparsers(
        dest="env_cmd", required=True, metavar="ACTION"
    )
    add = env.add_parser("add", help="define an environment")
    add.add_argument("name")
    env_fields.add_flags(add)
    add.add_argument(
        "--replace",
        action="store_true",
        help="overwrite an existing environment (options not given return to their defaults)",
    )
    add.set_defaults(func=cmd_env_add)
    st_ = env.add_parser("set", help="change options of an environment, keeping the others")
    st_.add_argument("name")
    st_.add_argument(
        "assignments",
        nargs="+",
        metavar="KEY=VALUE",
        help="an option and its value as the TUI form takes it (lists: space separated, "
        "KEY= empties one; a text option given empty returns to its default)",
    )
    st_.set_defaults(func=cmd_env_set)
    ls = env.add_parser("list", help="list environments")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_env_list)
    show = env.add_parser("show", help="show one environment")
    show.add_argument("name")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_env_show)
    rm = env.add_parser("rm", help="remove an environment")
    rm.add_argument("name")
    rm.add_argument("--force", action="store_true")
    rm.set_defaults(func=cmd_env_rm)
