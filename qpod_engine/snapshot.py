"""The compiled config: the YAML files validated once and saved as JSON (for the launcher's hot
path) and as the preload library's rules file. Both are recompiled whenever a source file
changes (checked by change time and size, so hand edits and chmods are picked up too).

This module imports only the stdlib at load time; compiling imports the YAML side lazily.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

from . import containers as naming
from . import paths
from .bindings import Binding
from .policy import Target

# typing is imported for type checkers only: the launcher's hot path imports this module
# and ``import typing`` costs ~2 ms a command
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SNAPSHOT_VERSION = 4  # bump when the snapshot layout or a default it holds changes: old ones are recompiled
RULES_VERSION = 1
LAUNCH_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "launch.py")


def _sources() -> dict[str, list[int] | None]:
    """Every file (and the environments folder) the compiled config depends on, with its stamp."""
    env_dir = paths.environments_dir()
    files = [paths.repositories_file(), paths.settings_file(), env_dir]
    try:
        files += sorted(os.path.join(env_dir, n) for n in os.listdir(env_dir) if n.endswith(".yaml"))
    except OSError:
        pass
    out: dict[str, list[int] | None] = {}
    for f in files:
        try:
            st = os.stat(f)
            # the change time: a chmod (a file made readable again) counts, not only edits
            out[f] = [st.st_ctime_ns, st.st_size]
        except OSError:
            out[f] = None
    return out


def _write(path: str, text: str) -> None:
    from .errors import QpodError
    from .fileio import write_atomic

    try:
        write_atomic(path, text)
    except OSError as err:
        raise QpodError(f"{path}: cannot write qpod's state: {err.strerror or err}", 125) from None


def compile_config() -> dict[str, Any]:
    """Validate every config file and write the snapshot and the rules file. Raises ConfigError
    for a broken repositories.yaml or settings.yaml; a broken environment file is recorded as
    that environment's error so only the repositories using it fail."""
    from dataclasses import asdict

    from . import bindings as bindings_mod
    from . import config
    from .errors import QpodError

    sources = _sources()
    settings = config.load_settings()
    binds = bindings_mod.load_bindings()
    envs: dict[str, Any] = {}
    for name in config.environment_names():
        try:
            env = config.load_environment(name)
            envs[name] = {**asdict(env), "hash": env.config_hash()}
        except QpodError as err:
            envs[name] = {"error": str(err)}
    snap = {
        "version": SNAPSHOT_VERSION,
        "layout": naming.CONTAINER_LAYOUT,  # precomputed container hashes depend on it
        "sources": sources,
        "settings": asdict(settings),
        # routing compares real paths (getcwd() never shows a symlink): a root typed by hand
        # through a symlink must still match
        "repos": [
            {"root": os.path.realpath(b.root), "environment": b.environment,
             "branches": list(b.branches.items()), "envs": b.referenced_environments()}
            for b in binds.values()
        ],
        "envs": envs,
    }
    # container names and config hashes need hashlib: computed here, not on every launch
    snap["containers"] = {
        f"{env_name}\t{repo['root']}": [naming.container_name(env_name, repo["root"]),
                                         naming.container_hash(envs[env_name], repo["root"])]
        for repo in snap["repos"] for env_name in repo.pop("envs")
        if env_name in envs and "error" not in envs[env_name]
    }
    _write(paths.snapshot_file(), json.dumps(snap))
    _write(paths.rules_file(), rules_text(snap))
    return snap


def rules_text(snap: dict[str, Any]) -> str:
    """The preload library's rules: tab-separated lines, no quoting (paths with tabs or
    newlines are left out: the shim could not match them anyway)."""
    from .config import DEFAULT_COMMANDS

    lines = [f"qpod-rules\t{RULES_VERSION}",
             "\t".join(["launcher", sys.executable, "-S", LAUNCH_SCRIPT]),
             "\t".join(["client", naming.client_program()])]
    for repo in snap["repos"]:
        root = repo["root"]
        if "\t" in root or "\n" in root:
            continue
        names: list[str] = []
        env_names = ([repo["environment"]] if repo["environment"] else []) + [e for _, e in repo["branches"]]
        for env_name in env_names:
            env = snap["envs"].get(env_name)
            # an unknown or broken environment still routes the default commands, so that the
            # user sees the launcher's error instead of a silent host build
            cmds = env["commands"] if env and "commands" in env else DEFAULT_COMMANDS
            names += [c for c in cmds if c not in names]
        lines.append("\t".join(["root", root, *names]))
    return "\n".join(lines) + "\n"


def load() -> dict[str, Any]:
    """The current compiled config, recompiling when any source changed."""
    try:
        with open(paths.snapshot_file(), encoding="utf-8") as f:
            snap = json.load(f)
        if (snap.get("version") == SNAPSHOT_VERSION and snap.get("layout") == naming.CONTAINER_LAYOUT
                and snap.get("sources") == _sources() and os.path.exists(paths.rules_file())):
            return snap
    except (OSError, ValueError):
        pass
    return compile_config()


def targets(snap: dict[str, Any], near: Sequence[str] | None = None) -> list[Target]:
    """The bound repositories with the environment in force on their current branch; with
    ``near``, only those holding one of these paths (the launcher reads no other HEAD)."""
    from .gitinfo import current_branch, is_within

    out = []
    for repo in snap["repos"]:
        if near is not None and not any(is_within(p, repo["root"]) for p in near):
            continue
        branch = current_branch(repo["root"]) if repo["branches"] else None
        binding = Binding(repo["root"], repo["environment"], dict(repo["branches"]))
        env_name, why = binding.environment_for(branch)
        env = snap["envs"].get(env_name) if env_name else None
        commands = tuple(env.get("commands", ())) if env else ()
        out.append(Target(repo["root"], env_name, commands, why, branch))
    return out


def container_of(snap: dict[str, Any], env: dict[str, Any], root: str) -> tuple[str, str]:
    """(name, config hash) of the warm container of ``env`` x ``root``."""
    known = snap.get("containers", {}).get(f"{env['name']}\t{root}")
    if known:
        return known[0], known[1]
    return naming.container_name(env["name"], root), naming.container_hash(env, root)
