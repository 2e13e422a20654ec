"""The ``qpod`` command line. Every failure is one line on stderr and a non-zero status."""

import json
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

# argparse and pathlib are imported where used: ``qpod exec`` takes a fast path without them
# (a build runs it thousands of times; see bench/bench_exec.py)

from . import __version__, paths
from .errors import EXIT_QPOD, QpodError

REPO_FILE = ".qpod.yaml"  # repo_env.REPO_FILE (not imported for qpod exec)


def _out_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


def _table(rows: list[list[str]], headers: list[str]) -> None:
    """Aligned columns; cells escaped (paths, image names and podman's labels are not ours)."""
    from .textsafe import cell_width, ljust, visible

    cells = [[visible(c) for c in row] for row in [headers, *rows]]
    widths = [max(cell_width(x) for x in col) for col in zip(*cells, strict=False)]
    for row in cells:
        print("  ".join(ljust(c, w) for c, w in zip(row, widths, strict=False)).rstrip())


def _engine() -> Any:
    """The engine facade the TUI uses too (imported here: ``qpod exec`` must not pay for it)."""
    from .api import Engine

    return Engine()


def _uptime(started: float | None) -> str:
    from .api import uptime

    return uptime(started, time.time())


# --- environments ---------------------------------------------------------------------------

def _first_problem(name: str, problems: list[Any]) -> None:
    if problems:
        key, _at, message = problems[0]
        raise QpodError(f"environment '{name}': {message}", 2)


def cmd_env_add(a: "argparse.Namespace") -> int:
    from pathlib import Path

    from . import config, env_fields

    problem = config.name_problem(a.name)
    if problem:  # before any path is made of it (300 characters: file name too long)
        raise QpodError(problem, 2)
    path = Path(paths.environment_file(a.name))
    if path.exists() and not a.replace:
        raise QpodError(f"environment '{a.name}' exists ({path}); use --replace to overwrite it, or "
                        f"'qpod env set {a.name} KEY=VALUE' to change one option", 2)
    data, problems = env_fields.from_flags(a)
    _first_problem(a.name, problems)
    env = config.environment_from_dict(a.name, data, "command line")
    written = _engine().save_environment(env, create=False)
    print(f"environment '{a.name}' saved to {written}")
    _warn_unknown_host(env.host)
    return 0


def _warn_unknown_host(host: str | None) -> None:
    """Saved all the same (the connection may be added next): a word now spares a failed build."""
    if not host:
        return
    from . import remote
    from .textsafe import visible

    try:
        known = remote.connections()
    except QpodError:
        return
    if host not in known:
        print(f"qpod: note: host '{visible(host)}' is not a podman ssh connection yet (podman system connection "
              "add NAME ssh://USER@HOST/PATH/podman.sock --identity KEY)", file=sys.stderr)


def cmd_env_set(a: "argparse.Namespace") -> int:
    """``qpod env set NAME KEY=VALUE...``: change options of an environment, keeping the rest.
    VALUE is read as the TUI form reads it: an empty list is empty (share= : nothing shared), an
    empty text option returns to its default."""
    from . import env_fields

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
    written = _engine().set_options(a.name, changes)
    print(f"environment '{a.name}' saved to {written} ({', '.join(changes)} changed)")
    _warn_unknown_host(changes.get("host"))
    return 0


def _env_dict(env: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(env)


def cmd_env_list(a: "argparse.Namespace") -> int:
    from . import config

    envs = config.load_environments()
    rows = [{**_env_dict(e), "repositories": _engine().bound_to(n)} for n, e in envs.items()]
    if a.json:
        _out_json(rows)
    elif not rows:
        print("no environments yet; add one with: qpod env add NAME --image IMAGE")
    else:
        _table([[r["name"], r["image"], str(len(r["repositories"])), ",".join(r["commands"])] for r in rows],
               ["NAME", "IMAGE", "REPOS", "COMMANDS"])
    return 0


def cmd_env_show(a: "argparse.Namespace") -> int:
    from . import config
    from .textsafe import visible

    env = config.load_environment(a.name)
    data = {**_env_dict(env), "file": str(paths.environment_file(a.name)), "repositories": _engine().bound_to(a.name)}
    if a.json:
        _out_json(data)
    else:
        for k, v in data.items():
            if isinstance(v, dict):
                v = ", ".join(f"{x}={y}" for x, y in v.items()) or "-"
            elif isinstance(v, list):
                v = ", ".join(v) or "-"
            print(f"{k + ':':16}{visible(v) if v is not None else '-'}")
    return 0


def cmd_env_rm(a: "argparse.Namespace") -> int:
    from .errors import InUse

    try:
        _engine().delete_environment(a.name, force=a.force)
    except InUse as err:
        err.args = (f"{err}, or use --force",)
        raise
    print(f"environment '{a.name}' removed")
    return 0


# --- bindings -------------------------------------------------------------------------------

def _cwd() -> str:
    """The physical cwd: bindings hold real paths and the preload library routes on getcwd(),
    so a symlinked checkout must route here exactly as it does there."""
    return os.getcwd()


def cmd_init(a: "argparse.Namespace") -> int:
    from .textsafe import visible

    if a.env is None:
        # no ENV: the repository's own .qpod.yaml, shown, allowed and bound in one step
        if a.branch or a.dir:
            raise QpodError("usage: qpod init ENV [--branch GLOB | --dir PATH] (only the repository's own "
                            ".qpod.yaml is used without ENV)", 2)
        return _allow(a.path or _cwd(), yes=a.yes, take_over=True)
    root = _engine().bind(a.dir or a.path or _cwd(), a.env, a.branch, directory=a.dir is not None)
    scope = f" on branches matching '{visible(a.branch)}'" if a.branch else ""
    print(f"bound {visible(root)} to environment '{visible(a.env)}'{scope}")
    return 0


def _repo_root(start: str) -> str:
    from . import gitinfo

    return gitinfo.discover_root(os.path.abspath(start))


def _show_repo_file(rf: Any) -> list[str]:
    """Print what the repository file asks for, literally; returns the requests that reach
    beyond the repository."""
    from . import repo_env
    from .textsafe import visible

    print(f"{visible(rf.path)} (sha256 {rf.sha[:16]}):")
    if rf.problems:
        for err in rf.problems:
            print(f"  error: {visible(err)}")
        return []
    risky, info = repo_env.requests(rf)
    for line in info:
        print(f"  {visible(line)}")
    if risky:
        print("  it asks for access beyond the repository:")
        for line in risky:
            print(f"  ! {visible(line)}")
    return risky


def _allow(start: str, yes: bool, take_over: bool, show_only: bool = False) -> int:
    from . import repo_env
    from .textsafe import visible

    root = _repo_root(start)
    rf = repo_env.load(root)
    if rf is None:
        raise QpodError(f"{visible(root)}: no {repo_env.REPO_FILE} at the repository's root" +
                        ("; bind an environment with: qpod init ENV" if take_over else ""), 2)
    risky = _show_repo_file(rf)
    if show_only:
        return 1 if rf.problems else 0
    # 'qpod init' binds the repository to its file even when the file is not allowed now: its
    # routed commands then fail (125, naming the file) until 'qpod allow' or 'qpod deny'
    pending = (f"; {visible(root)} is bound to it: its build commands fail until 'qpod allow' "
               "(or 'qpod deny': the host)") if take_over else ""
    if rf.problems:
        if take_over:
            repo_env.register(root)
        raise QpodError(f"{visible(rf.path)}: not allowed: fix the problems above first{pending}", 2)
    if risky and not yes:
        answer = input("allow it? [y/N] ").strip().lower() if sys.stdin.isatty() else ""
        if answer not in ("y", "yes"):
            if take_over:
                repo_env.register(root)
            if not sys.stdin.isatty():
                raise QpodError("not allowed: the file asks for access beyond the repository (above); once you "
                                f"trust it: qpod allow --yes{pending}", 1)
            print(f"not allowed{pending}")
            return 1
    wins = repo_env.allow(rf, take_over=take_over)
    if wins:
        print(f"allowed; the explicit binding to environment '{visible(wins)}' still wins here "
              f"('qpod init' with no ENV uses the file instead)")
    else:
        print(f"allowed: {visible(root)} uses its {repo_env.REPO_FILE} (a changed file needs 'qpod allow' again)")
    return 0


def cmd_allow(a: "argparse.Namespace") -> int:
    return _allow(a.path or _cwd(), yes=a.yes, take_over=False, show_only=a.show)


def cmd_deny(a: "argparse.Namespace") -> int:
    from . import repo_env
    from .textsafe import visible

    root = _repo_root(a.path or _cwd())
    gone, unregistered = repo_env.deny(root)
    if not gone and not unregistered:
        print(f"{visible(root)}: nothing was allowed here")
    else:
        print(f"denied: {visible(root)} no longer uses its {repo_env.REPO_FILE}"
              + ("; its commands run on the host" if unregistered else ""))
    return 0


def cmd_prune(a: "argparse.Namespace") -> int:
    """Images built from repository files that no checked-out file of a registered repository
    uses any more (other branches' recipes included: a checkout builds them again)."""
    from . import snapshot
    from .imagebuild import prune, tags_in_use
    from .textsafe import visible

    removed, in_use = prune(tags_in_use(snapshot.load()), dry_run=a.dry_run)
    for ref in removed:
        print(f"{'would remove' if a.dry_run else 'removed'} {visible(ref)}")
    for ref in in_use:
        print(f"kept {visible(ref)} (a container uses it; 'qpod stop' and 'podman rm' it first)")
    if not removed and not in_use:
        print("no unused built images")
    return 0


def cmd_unbind(a: "argparse.Namespace") -> int:
    from . import bindings, gitinfo

    start = os.path.abspath(a.path or _cwd())
    binds = bindings.load_bindings()
    b = bindings.find_binding(binds, os.path.realpath(start)) or bindings.find_binding(binds, start)
    root = b.root if b else gitinfo.discover_root(start)
    if a.branch:
        _engine().remove_branch_rule(root, a.branch)
    else:
        _engine().unbind(root)
    from .textsafe import visible

    print(f"unbound {visible(root)}" + (f" (branch rule '{visible(a.branch)}')" if a.branch else ""))
    return 0


def _container_states() -> dict[str, str]:
    """Container name -> state, or {} when podman cannot be asked (status still works)."""
    try:
        return _engine().container_states()
    except QpodError:
        return {}


def _repo_rows(states: dict[str, str] | None) -> list[dict[str, Any]]:
    return [r.to_dict() for r in _engine().repositories(states)]


def cmd_status(a: "argparse.Namespace") -> int:
    from . import gitinfo
    from .textsafe import visible

    cwd = _cwd()
    rows = _repo_rows(_container_states())
    here = gitinfo.innermost_root(cwd, (r["repository"] for r in rows))
    row = next((r for r in rows if r["repository"] == here), None)
    if row is None:
        try:
            root = gitinfo.discover_root(cwd)
        except QpodError:
            root = None
        data = {"repository": root, "bound": False, "cwd": cwd}
        if a.json:
            _out_json(data)
        elif root and os.path.exists(os.path.join(root, REPO_FILE)):
            print(f"{visible(root)}: not bound; its {REPO_FILE} is not allowed (review and use it with: qpod allow)")
        else:
            print(f"{visible(root)}: not bound (bind with: qpod init ENV)" if root
                  else f"{visible(cwd)}: not in a git repository")
        return 0
    row = {**row, "bound": True, "cwd": cwd}
    if a.json:
        _out_json(row)
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
            from . import snapshot

            print(f"environment:  {visible(row['why'])}")
            env = snapshot.environment_entry(snapshot.load(), REPO_FILE, row["repository"]) or {}
            if env.get("image"):
                built = env.get("build")
                how = f" (built from {os.path.relpath(built['containerfile'], row['repository'])})" if built else ""
                print(f"image:        {visible(env['image'])}{visible(how)}")
        else:
            # an explicit binding wins over the repository's own file: say so
            over = f", wins over its {REPO_FILE}" if row["environment"] and os.path.exists(
                os.path.join(row["repository"], REPO_FILE)) else ""
            print(f"environment:  {visible(row['environment'] or '-')} ({visible(row['why'])}{over})")
        if row["broken"] or row["waiting"]:
            print(f"problem:      {visible(row['broken'] or row['waiting'])} (its routed commands fail with exit 125)")
        print(f"container:    {visible(row['container'] or '-')} ({visible(row['container_state'])})")
    return 0


def cmd_repos(a: "argparse.Namespace") -> int:
    rows = _repo_rows(_container_states() if not a.no_podman else None)
    if a.json:
        _out_json(rows)
    elif not rows:
        print("no bound repositories; bind one with: cd REPO && qpod init ENV")
    else:
        _table([[r["repository"] + ("" if r["exists"] else " (missing)"), r["branch"] or "-",
                 (r["environment"] or "-") + (" (broken)" if r["broken"] else ""),
                 ", ".join(f"{g}->{e}" for g, e in r["branches"].items()) or "-",
                 r["container_state"]] for r in rows],
               ["REPOSITORY", "BRANCH", "ENVIRONMENT", "BRANCH RULES", "CONTAINER"])
    return 0


# --- routing and running --------------------------------------------------------------------

def cmd_which(a: "argparse.Namespace") -> int:
    from . import snapshot
    from .paths import find_program
    from .policy import decide

    if not a.argv:
        raise QpodError("usage: qpod which [--] CMD [ARGS...]", 2)
    cwd = _cwd()
    path = find_program(a.argv[0]) or a.argv[0]
    snap = snapshot.load()
    d = decide(path, a.argv, cwd, snapshot.targets(snap))
    data = {"where": d.where, "reason": d.reason, "path": path, "cwd": cwd,
            "repository": d.target.root if d.target else None,
            "environment": d.target.environment if d.target and d.in_container else None,
            "in_image": None}
    blocked = None
    env_entry = (snapshot.environment_entry(snap, d.target.environment, d.target.root) or {}
                 if d.in_container and d.target else {})
    if d.in_container and d.target:
        # a broken or unknown environment, a repository file not allowed: the command would
        # fail (125), say so and why
        blocked = snapshot.environment_problem(snap, d.target.environment, d.target.root)
        data["blocked"] = blocked
    if not blocked:
        if env_entry.get("host"):
            from .remote import DIFFERENCES

            data["host"] = env_entry["host"]
            data["differences"] = DIFFERENCES
    if d.in_container and d.target and "/" not in a.argv[0] and not blocked:
        from .podman_backend import command_in_container

        data["in_image"] = command_in_container(d.target.environment, d.target.root, a.argv[0])
    if a.json:
        _out_json(data)
    else:
        from .textsafe import visible

        env = f" ({visible(data['environment'])})" if data["environment"] else ""
        found = data["in_image"]
        there = "" if found is None else f"; in the container: {visible(found)}" if found else \
            "; not found in the container: it would exit 127"
        but = f"; it would fail (exit 125): {visible(blocked)}" if blocked else ""
        host = f"; on host {visible(data['host'])} over ssh ({data['differences']})" if data.get("host") else ""
        print(f"{d.where}{env}: {visible(d.reason)}{there}{but}{host}")
    return 0


def cmd_exec(a: "argparse.Namespace") -> int:
    from .launcher import launch
    from .paths import find_program

    argv = list(a.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise QpodError("usage: qpod exec [--env NAME] [--] CMD [ARGS...]", 2)
    path = find_program(argv[0]) or argv[0]
    try:
        return launch(path, argv, _cwd(), explicit=True, env_name=a.env, tty=getattr(a, "tty", None))
    except QpodError as err:
        err.status = EXIT_QPOD
        raise


# --- containers -----------------------------------------------------------------------------

def cmd_ps(a: "argparse.Namespace") -> int:
    from .podman_backend import list_containers

    unreachable: list[str] = []
    rows = list_containers(all_configs=a.all_configs, unreachable=unreachable)
    from .textsafe import visible

    for why in unreachable:
        print(f"qpod: host {visible(why)}", file=sys.stderr)
    if a.json:
        _out_json(rows)
    elif not rows:
        print("no qpod containers")
    else:
        _table([[c["name"], c["environment"], c["repository"], c["image"],
                 c["state"] + (" (outdated)" if c.get("outdated") else ""), _uptime(c["started"]),
                 c["host"] or "local"]
                for c in rows], ["NAME", "ENVIRONMENT", "REPOSITORY", "IMAGE", "STATE", "UPTIME", "HOST"])
    return 1 if unreachable else 0


def cmd_stop(a: "argparse.Namespace") -> int:
    from .podman_backend import list_containers, stop_containers

    if not a.all and not a.env:
        raise QpodError("usage: qpod stop ENV | --all", 2)
    unreachable: list[str] = []
    rows = [c for c in list_containers(all_configs=a.all_configs, unreachable=unreachable)
            if c["state"] == "running" and (a.all or c["environment"] == a.env)]
    names = [c["name"] for c in rows]
    where = {c["name"]: f" on host {c['host']}" if c["host"] else "" for c in rows}
    from .textsafe import visible

    for why in unreachable:
        print(f"qpod: host {visible(why)}", file=sys.stderr)
    for n in stop_containers(names):
        print(f"stopped {visible(n)}{visible(where[n])}")
    if not names:
        print("nothing to stop")
    return 1 if unreachable else 0


# --- log ------------------------------------------------------------------------------------

def _fmt_record(r: dict[str, Any]) -> str:
    """One line per record; every field escaped (argv and paths are not ours: an escape
    sequence in them must not reach the terminal, a newline must not fake a line)."""
    from .textsafe import visible

    state = r.get("state")
    status: Any = r.get("status")
    if state == "running":
        from .cmdlog import record_epoch

        started = record_epoch(r)
        status, took = "running", f"{max(0.0, time.time() - started):.2f}s" if started else "-"
    elif state == "lost":
        status, took = "lost", "-"
    else:
        took = f"{r['duration']:.2f}s" if r.get("duration") is not None else "-"
    argv = " ".join(visible(a) for a in r.get("argv") or [])
    return f"{visible((r.get('time') or '?')[:19])}  {'?' if status is None else status:>7}  {took:>9}  " \
           f"{visible(r.get('env') or '-')}  {visible(r.get('repo') or '-')}  {argv}"


def cmd_log(a: "argparse.Namespace") -> int:
    from . import cmdlog

    flt = cmdlog.Filter(repo=os.path.abspath(a.repo) if a.repo else None, env=a.env, failed=a.failed)
    follower = cmdlog.Follower() if a.follow else None  # opened first: nothing slips between read and follow
    stats = cmdlog.Stats()
    for r in cmdlog.recent(a.n, flt, stats=stats):
        print(json.dumps(r) if a.json else _fmt_record(r), flush=True)
    if stats.message():
        print(f"qpod: {stats.message()}", file=sys.stderr, flush=True)
    if follower is not None:
        skipped = 0
        try:
            while True:
                for r in follower.poll():
                    if flt.match(r):
                        r = cmdlog.shown(r)
                        print(json.dumps(r) if a.json else _fmt_record(r), flush=True)
                if follower.stats.malformed != skipped:
                    print(f"qpod: {follower.stats.malformed - skipped} malformed record(s) skipped", file=sys.stderr,
                          flush=True)
                    skipped = follower.stats.malformed
                time.sleep(0.2)
        except KeyboardInterrupt:
            return 0
    return 0


# --- doctor, demo, tui ----------------------------------------------------------------------

def cmd_doctor(a: "argparse.Namespace") -> int:
    from .doctor import run_checks
    from .textsafe import visible

    problems = 0
    for ok, what, fix in run_checks():  # checks quote podman's errors and paths: escaped
        print(f"{'ok  ' if ok else 'FAIL'} {visible(what)}" + ("" if ok else f"\n     fix: {visible(fix)}"))
        problems += not ok
    return 1 if problems else 0


def cmd_demo(a: "argparse.Namespace") -> int:
    from .demo import run_demo

    return run_demo(a.dir)


def cmd_completion(a: "argparse.Namespace") -> int:
    from .completion import script

    sys.stdout.write(script(a.shell))
    return 0


def cmd_plugin(a: "argparse.Namespace") -> int:
    """Sub-commands that live outside the engine (the TUI), found through entry points, so the
    engine never imports the UI."""
    from importlib.metadata import entry_points

    eps = [ep for ep in entry_points(group="qpod.commands") if ep.name == a.plugin]
    if not eps:
        raise QpodError(f"'qpod {a.plugin}' is not installed (pip install qpod)", 2)
    return int(eps[0].load()(a.rest) or 0)


def build_parser() -> "argparse.ArgumentParser":
    import argparse

    from . import env_fields

    p = argparse.ArgumentParser(prog="qpod", description="Run a repository's build and debug commands in its "
                                "podman environment, transparently.")
    p.add_argument("--version", action="version", version=f"qpod {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    env = sub.add_parser("env", help="manage environments").add_subparsers(dest="env_cmd", required=True,
                                                                            metavar="ACTION")
    add = env.add_parser("add", help="define an environment")
    add.add_argument("name")
    env_fields.add_flags(add)
    add.add_argument("--replace", action="store_true",
                     help="overwrite an existing environment (options not given return to their defaults)")
    add.set_defaults(func=cmd_env_add)
    st_ = env.add_parser("set", help="change options of an environment, keeping the others")
    st_.add_argument("name")
    st_.add_argument("assignments", nargs="+", metavar="KEY=VALUE",
                     help="an option and its value as the TUI form takes it (lists: space separated, "
                          "KEY= empties one; a text option given empty returns to its default)")
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

    init = sub.add_parser("init", help="bind the repository around the cwd to an environment (no ENV: to its "
                          "own .qpod.yaml, shown and allowed)")
    init.add_argument("env", nargs="?")
    init.add_argument("--yes", action="store_true", help="without ENV: allow a .qpod.yaml that asks for access "
                      "beyond the repository without asking")
    init.add_argument("--branch", metavar="GLOB", help="only while the checked-out branch matches")
    init.add_argument("--dir", metavar="PATH", help="bind this directory tree itself, git or not (an out-of-tree "
                      "build directory: configure and make there go to the environment)")
    init.add_argument("--path", help=argparse.SUPPRESS)
    init.set_defaults(func=cmd_init)
    alw = sub.add_parser("allow", help="show the repository's .qpod.yaml and allow this content of it")
    alw.add_argument("--yes", action="store_true", help="allow even what reaches beyond the repository, without "
                     "asking")
    alw.add_argument("--show", action="store_true", help="only show what the file asks for")
    alw.add_argument("--path", help=argparse.SUPPRESS)
    alw.set_defaults(func=cmd_allow)
    dny = sub.add_parser("deny", help="stop using the repository's .qpod.yaml (every allowed version)")
    dny.add_argument("--path", help=argparse.SUPPRESS)
    dny.set_defaults(func=cmd_deny)
    prn = sub.add_parser("prune", help="remove images built from repository files that no checked-out "
                         ".qpod.yaml uses")
    prn.add_argument("--dry-run", action="store_true", help="only list them")
    prn.set_defaults(func=cmd_prune)
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

    wh = sub.add_parser("which", help="where a command would run, and why")
    wh.add_argument("--json", action="store_true")
    wh.add_argument("argv", nargs=argparse.REMAINDER)
    wh.set_defaults(func=cmd_which)
    ex = sub.add_parser("exec", help="run a command in the repository's environment")
    ex.add_argument("--env", metavar="NAME", help="use this environment whatever the binding says")
    tty = ex.add_mutually_exclusive_group()
    tty.add_argument("-t", "--tty", dest="tty", action="store_const", const=True, default=None,
                     help="give the command a terminal of its own (a pty), as for an interactive program")
    tty.add_argument("-T", "--no-tty", dest="tty", action="store_const", const=False,
                     help="never a pty: the command gets your descriptors only")
    ex.add_argument("argv", nargs=argparse.REMAINDER)
    ex.set_defaults(func=cmd_exec)

    ps = sub.add_parser("ps", help="this config's containers")
    ps.add_argument("--json", action="store_true")
    ps.add_argument("--all-configs", action="store_true",
                    help="every qpod container of this podman (other users', other configs')")
    ps.set_defaults(func=cmd_ps)
    sp = sub.add_parser("stop", help="stop this config's containers")
    sp.add_argument("env", nargs="?")
    sp.add_argument("--all", action="store_true")
    sp.add_argument("--all-configs", action="store_true", help="also other configs' containers (an admin's tool)")
    sp.set_defaults(func=cmd_stop)

    lg = sub.add_parser("log", help="the log of redirected commands")
    lg.add_argument("-f", "--follow", action="store_true")
    lg.add_argument("-n", type=int, default=20, metavar="N")
    lg.add_argument("--repo", metavar="PATH")
    lg.add_argument("--env", metavar="NAME")
    lg.add_argument("--failed", action="store_true")
    lg.add_argument("--json", action="store_true")
    lg.set_defaults(func=cmd_log)

    sub.add_parser("doctor", help="check podman, the API socket, the config").set_defaults(func=cmd_doctor)
    dm = sub.add_parser("demo", help="build a Debian 11 environment and build a sample repository in it")
    dm.add_argument("--dir", help="where to create the sample repository (default: a temp dir)")
    dm.set_defaults(func=cmd_demo)
    cp = sub.add_parser("completion", help="print shell completion code (bash: eval \"$(qpod completion bash)\")")
    cp.add_argument("shell", choices=["bash", "zsh", "fish"])
    cp.set_defaults(func=cmd_completion)
    tui = sub.add_parser("tui", help="the dashboard")
    tui.add_argument("rest", nargs=argparse.REMAINDER)
    tui.set_defaults(func=cmd_plugin, plugin="tui")
    return p


class _Namespace:
    """Parsed arguments for the paths that skip argparse."""

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


def _exec_fast_path(argv: Sequence[str]) -> int | None:
    """``qpod exec [--env NAME] [--] CMD...`` without argparse; None when anything else is asked."""
    if not argv or argv[0] != "exec":
        return None
    rest, env, tty = list(argv[1:]), None, None
    while rest[:1] and rest[0] in ("-t", "--tty", "-T", "--no-tty", "--env") or rest[:1] and rest[0].startswith(
            "--env="):
        if rest[0] in ("-t", "--tty", "-T", "--no-tty"):
            tty, rest = rest[0] in ("-t", "--tty"), rest[1:]
        elif rest[0] == "--env" and len(rest) > 1:
            env, rest = rest[1], rest[2:]
        elif rest[0].startswith("--env="):
            env, rest = rest[0][len("--env="):], rest[1:]
        else:
            break
    if rest[:1] == ["--"]:
        rest = rest[1:]
    elif rest[:1] and rest[0].startswith("-"):
        return None  # --help and friends: let argparse answer
    if not rest:
        return None
    return cmd_exec(_Namespace(argv=rest, env=env, tty=tty))  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--slow-exec"]:  # the native-exec client's way back (see front.py)
        argv[0] = "exec"
    try:
        fast = _exec_fast_path(argv)
        if fast is not None:
            return fast
        if argv[:1] == ["tui"]:  # every option after 'tui' is the TUI's own
            return cmd_plugin(_Namespace(plugin="tui", rest=argv[1:]))
        parser = build_parser()
        if "_ARGCOMPLETE" in os.environ:  # shell completion (qpod completion bash): answers and exits
            from .completion import autocomplete

            autocomplete(parser)
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except QpodError as err:
        from .textsafe import visible

        print(f"qpod: {visible(err)}", file=sys.stderr)  # errors quote paths, names and podman's words
        return err.status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as err:  # noqa: BLE001 - one line and a status, never a traceback
        from .errors import unexpected
        from .textsafe import visible

        print(f"qpod: {visible(unexpected(err))}", file=sys.stderr)
        return EXIT_QPOD


if __name__ == "__main__":
    sys.exit(main())
