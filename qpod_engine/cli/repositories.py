"""``qpod init|allow|deny|unbind|status|repos``: binding repositories, their own .qpod.yaml."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from qpod_engine.base import paths
from qpod_engine.base.errors import QpodError
from qpod_engine.base.paths import REPO_FILE
from qpod_engine.cli.common import current_dir, engine, out_json, repo_root, table

if TYPE_CHECKING:
    import argparse


def cmd_init(a: argparse.Namespace) -> int:
    from qpod_engine.base.textsafe import visible

    if a.env is None:
        # no ENV: the repository's own .qpod.yaml, shown, allowed and bound in one step
        if a.branch or a.dir:
            raise QpodError(
                "usage: qpod init ENV [--branch GLOB | --dir PATH] (only the repository's own "
                ".qpod.yaml is used without ENV)",
                2,
            )
        return _allow(a.path or current_dir(), yes=a.yes, take_over=True)
    root = engine().bind(a.dir or a.path or current_dir(), a.env, a.branch, directory=a.dir is not None)
    scope = f" on branches matching '{visible(a.branch)}'" if a.branch else ""
    print(f"bound {visible(root)} to environment '{visible(a.env)}'{scope}")
    return 0


def _show_repo_file(rf: Any) -> list[str]:
    """Print what the repository file asks for, literally; returns the requests that reach
    beyond the repository."""
    from qpod_engine.base.textsafe import visible
    from qpod_engine.config import repo_file

    print(f"{visible(rf.path)} (sha256 {rf.sha[:16]}):")
    if rf.problems:
        for err in rf.problems:
            print(f"  error: {visible(err)}")
        return []
    risky, info = repo_file.requests(rf)
    for line in info:
        print(f"  {visible(line)}")
    if risky:
        print("  it asks for access beyond the repository:")
        for line in risky:
            print(f"  ! {visible(line)}")
    from qpod_engine.config import allow

    for line in allow.changes(rf):
        print(f"  {visible(line)}")
    return risky


def _allow(start: str, yes: bool, take_over: bool, show_only: bool = False) -> int:
    from qpod_engine.base.textsafe import visible

    root = repo_root(start)
    rf = engine().repo_file(root)
    if rf is None:
        raise QpodError(
            f"{visible(root)}: no {paths.REPO_FILE} at the repository's root"
            + ("; bind an environment with: qpod init ENV" if take_over else ""),
            2,
        )
    risky = _show_repo_file(rf)
    if show_only:
        return 1 if rf.problems else 0
    # 'qpod init' binds the repository to its file even when the file is not allowed now: its
    # routed commands then fail (125, naming the file) until 'qpod allow' or 'qpod deny'
    pending = (
        (f"; {visible(root)} is bound to it: its build commands fail until 'qpod allow' (or 'qpod deny': the host)")
        if take_over
        else ""
    )
    if rf.problems:
        if take_over:
            engine().register_file(root)
        raise QpodError(f"{visible(rf.path)}: not allowed: fix the problems above first{pending}", 2)
    if risky and not yes:
        answer = input("allow it? [y/N] ").strip().lower() if sys.stdin.isatty() else ""
        if answer not in ("y", "yes"):
            if take_over:
                engine().register_file(root)
            if not sys.stdin.isatty():
                raise QpodError(
                    "not allowed: the file asks for access beyond the repository (above); once you "
                    f"trust it: qpod allow --yes{pending}",
                    1,
                )
            print(f"not allowed{pending}")
            return 1
    wins = engine().allow_file(rf, take_over=take_over)
    if wins:
        print(
            f"allowed; the explicit binding to environment '{visible(wins)}' still wins here "
            f"('qpod init' with no ENV uses the file instead)"
        )
    else:
        print(f"allowed: {visible(root)} uses its {paths.REPO_FILE} (a changed file needs 'qpod allow' again)")
    return 0


def cmd_allow(a: argparse.Namespace) -> int:
    return _allow(a.path or current_dir(), yes=a.yes, take_over=False, show_only=a.show)


def cmd_deny(a: argparse.Namespace) -> int:
    from qpod_engine.base.textsafe import visible

    root = repo_root(a.path or current_dir())
    gone, unregistered = engine().deny_file(root)
    if not gone and not unregistered:
        print(f"{visible(root)}: nothing was allowed here")
    else:
        print(
            f"denied: {visible(root)} no longer uses its {paths.REPO_FILE}"
            + ("; its commands run on the host" if unregistered else "")
        )
    return 0


def cmd_unbind(a: argparse.Namespace) -> int:
    from qpod_engine.base import gitinfo
    from qpod_engine.config import bindings

    start = os.path.abspath(a.path or current_dir())
    binds = bindings.load_bindings()
    b = bindings.find_binding(binds, os.path.realpath(start)) or bindings.find_binding(binds, start)
    root = b.root if b else gitinfo.discover_root(start)
    if a.branch:
        engine().remove_branch_rule(root, a.branch)
    else:
        engine().unbind(root)
    from qpod_engine.base.textsafe import visible

    print(f"unbound {visible(root)}" + (f" (branch rule '{visible(a.branch)}')" if a.branch else ""))
    return 0


def container_states() -> dict[str, str]:
    """Container name -> state, or {} when podman cannot be asked (status still works)."""
    try:
        return engine().container_states()
    except QpodError:
        return {}


def repo_rows(states: dict[str, str] | None) -> list[dict[str, Any]]:
    return [r.to_dict() for r in engine().repositories(states)]


def cmd_status(a: argparse.Namespace) -> int:
    from qpod_engine.activation import state
    from qpod_engine.base import gitinfo
    from qpod_engine.base.textsafe import visible

    cwd = current_dir()
    act = state.status()
    activation = {"on": act.on, "shells": sorted(act.shells), "desktop": bool(act.on and act.generator)}
    rows = repo_rows(container_states())
    here = gitinfo.innermost_root(cwd, (r["repository"] for r in rows))
    row = next((r for r in rows if r["repository"] == here), None)
    if row is None:
        try:
            root = gitinfo.discover_root(cwd)
        except QpodError:
            root = None
        data = {"repository": root, "bound": False, "cwd": cwd, "activation": activation}
        if a.json:
            out_json(data)
        elif root and os.path.exists(os.path.join(root, REPO_FILE)):
            print(f"{visible(root)}: not bound; its {REPO_FILE} is not allowed (review and use it with: qpod allow)")
        else:
            print(
                f"{visible(root)}: not bound (bind with: qpod init ENV)"
                if root
                else f"{visible(cwd)}: not in a git repository"
            )
        if not a.json:
            print(f"activation: {visible(act.summary())}")
        return 0
    row = {**row, "bound": True, "cwd": cwd, "activation": activation}
    if a.json:
        out_json(row)
    else:
        print(f"repository:   {visible(row['repository'])}")
        branch, how = gitinfo.head_state(row["repository"])
        if how == "unknown":
            shown = "- (not a git work tree)"
        elif not how:
            shown = visible(branch or "-")
        elif branch:
            shown = f"{visible(branch)} ({how}: HEAD is detached, the branch's rules apply)"
        else:
            shown = "(detached HEAD: only the rules for any branch apply)"
        print(f"branch:       {shown}")
        if row["environment"] == REPO_FILE:
            from qpod_engine.config import snapshot

            print(f"environment:  {visible(row['why'])}")
            env = snapshot.environment_entry(snapshot.load(), REPO_FILE, row["repository"]) or {}
            if env.get("image"):
                built = env.get("build")
                how = f" (built from {os.path.relpath(built['containerfile'], row['repository'])})" if built else ""
                print(f"image:        {visible(env['image'])}{visible(how)}")
        else:
            # an explicit binding wins over the repository's own file: say so
            over = (
                f", wins over its {REPO_FILE}"
                if row["environment"] and os.path.exists(os.path.join(row["repository"], REPO_FILE))
                else ""
            )
            print(f"environment:  {visible(row['environment'] or '-')} ({visible(row['why'])}{over})")
        if row["broken"] or row["waiting"]:
            print(f"problem:      {visible(row['broken'] or row['waiting'])} (its routed commands fail with exit 125)")
        print(f"container:    {visible(row['container'] or '-')} ({visible(row['container_state'])})")
        print(f"activation:   {visible(act.summary())}")
    return 0


def cmd_repos(a: argparse.Namespace) -> int:
    rows = repo_rows(container_states() if not a.no_podman else None)
    if a.json:
        out_json(rows)
    elif not rows:
        print("no bound repositories; bind one with: cd REPO && qpod init ENV")
    else:
        table(
            [
                [
                    r["repository"] + ("" if r["exists"] else " (missing)"),
                    r["branch"] or "-",
                    (r["environment"] or "-") + (" (broken)" if r["broken"] else ""),
                    ", ".join(f"{g}->{e}" for g, e in r["branches"].items()) or "-",
                    r["container_state"],
                ]
                for r in rows
            ],
            ["REPOSITORY", "BRANCH", "ENVIRONMENT", "BRANCH RULES", "CONTAINER"],
        )
    return 0


def add_parsers(sub: Any) -> None:
    """The ``repositories`` commands on the parser."""
    import argparse

    init = sub.add_parser(
        "init",
        help="bind the repository around the cwd to an environment (no ENV: to its own .qpod.yaml, shown and allowed)",
    )
    init.add_argument("env", nargs="?")
    init.add_argument(
        "--yes",
        action="store_true",
        help="without ENV: allow a .qpod.yaml that asks for access beyond the repository without asking",
    )
    init.add_argument("--branch", metavar="GLOB", help="only while the checked-out branch matches")
    init.add_argument(
        "--dir",
        metavar="PATH",
        help="bind this directory tree itself, git or not (an out-of-tree "
        "build directory: configure and make there go to the environment)",
    )
    init.add_argument("--path", help=argparse.SUPPRESS)
    init.set_defaults(func=cmd_init)
    alw = sub.add_parser("allow", help="show the repository's .qpod.yaml and allow this content of it")
    alw.add_argument("--yes", action="store_true", help="allow even what reaches beyond the repository, without asking")
    alw.add_argument("--show", action="store_true", help="only show what the file asks for")
    alw.add_argument("--path", help=argparse.SUPPRESS)
    alw.set_defaults(func=cmd_allow)
    dny = sub.add_parser("deny", help="stop using the repository's .qpod.yaml (every allowed version)")
    dny.add_argument("--path", help=argparse.SUPPRESS)
    dny.set_defaults(func=cmd_deny)
    unb = sub.add_parser("unbind", help="remove the binding of the repository around the cwd")
    unb.add_argument("--branch", metavar="GLOB")
    unb.add_argument("--path", help=argparse.SUPPRESS)
    unb.set_defaults(func=cmd_unbind)
    st = sub.add_parser("status", help="binding and container of the repository around the cwd")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
    rp = sub.add_parser("repos", help="all bound repositories")
    rp.add_argument("--json", action="store_true")
    rp.add_argument("--no-podman", action="store_true", help="do not ask podman for container states")
    rp.set_defaults(func=cmd_repos)
