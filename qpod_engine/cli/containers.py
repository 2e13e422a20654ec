"""``qpod ps|stop|prune``: this config's containers, on every host, and the images built for it."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from qpod_engine.base.errors import QpodError
from qpod_engine.cli.common import engine, out_json, table, uptime_text

if TYPE_CHECKING:
    import argparse


def cmd_ps(a: argparse.Namespace) -> int:
    from qpod_engine.base.textsafe import visible

    rows, unreachable = engine().container_list(all_configs=a.all_configs)
    for why in unreachable:
        print(f"qpod: host {visible(why)}", file=sys.stderr)
    if a.json:
        out_json(rows)
    elif not rows:
        print("no qpod containers")
    else:
        table(
            [
                [
                    c["name"],
                    c["environment"],
                    c["repository"] or (f"({c['role']})" if c.get("role") else ""),
                    c["image"],
                    c["state"] + (" (outdated)" if c.get("outdated") else ""),
                    uptime_text(c["started"]),
                    c["host"] or "local",
                ]
                for c in rows
            ],
            ["NAME", "ENVIRONMENT", "REPOSITORY", "IMAGE", "STATE", "UPTIME", "HOST"],
        )
    return 1 if unreachable else 0


def cmd_stop(a: argparse.Namespace) -> int:
    from qpod_engine.base.textsafe import visible

    if not a.all and not a.env:
        raise QpodError("usage: qpod stop ENV | --all", 2)
    stopped, unreachable = engine().stop_running(None if a.all else a.env, all_configs=a.all_configs)
    for why in unreachable:
        print(f"qpod: host {visible(why)}", file=sys.stderr)
    for name, host in stopped:
        print(f"stopped {visible(name)}" + (f" on host {visible(host)}" if host else ""))
    if not stopped:
        print("nothing to stop")
    return 1 if unreachable else 0


def cmd_prune(a: argparse.Namespace) -> int:
    """Images built from repository files that no checked-out file of a registered repository
    uses any more (other branches' recipes included: a checkout builds them again)."""
    from qpod_engine.base.textsafe import visible

    removed, in_use = engine().prune_images(dry_run=a.dry_run)
    for ref in removed:
        print(f"{'would remove' if a.dry_run else 'removed'} {visible(ref)}")
    for ref in in_use:
        print(f"kept {visible(ref)} (a container uses it; 'qpod stop' and 'podman rm' it first)")
    if not removed and not in_use:
        print("no unused built images")
    return 0


def add_parsers(sub: Any) -> None:
    """The ``containers`` commands on the parser."""

    prn = sub.add_parser("prune", help="remove images built from repository files that no checked-out .qpod.yaml uses")
    prn.add_argument("--dry-run", action="store_true", help="only list them")
    prn.set_defaults(func=cmd_prune)
    ps = sub.add_parser("ps", help="this config's containers")
    ps.add_argument("--json", action="store_true")
    ps.add_argument(
        "--all-configs", action="store_true", help="every qpod container of this podman (other users', other configs')"
    )
    ps.set_defaults(func=cmd_ps)
    sp = sub.add_parser("stop", help="stop this config's containers")
    sp.add_argument("env", nargs="?")
    sp.add_argument("--all", action="store_true")
    sp.add_argument("--all-configs", action="store_true", help="also other configs' containers (an admin's tool)")
    sp.set_defaults(func=cmd_stop)
