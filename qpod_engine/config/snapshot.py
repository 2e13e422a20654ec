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

from qpod_engine.base import paths
from qpod_engine.base.paths import REPO_FILE
from qpod_engine.config import containers as naming
from qpod_engine.config.bindings import Binding

# typing is imported for type checkers only: the launcher's hot path imports this module
# and ``import typing`` costs ~2 ms a command
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Target:
    """A bound repository as it stands now: its root, the environment in force (None when
    its branch rules do not apply), that environment's command list, and why.
    (A plain class, not a dataclass: the launcher's hot path saves ~5 ms of imports.)"""

    __slots__ = ("root", "environment", "commands", "why", "branch")

    def __init__(
        self, root: str, environment: str | None, commands: tuple[str, ...], why: str, branch: str | None = None
    ) -> None:
        self.root = root
        self.environment = environment
        self.commands = commands
        self.why = why  # how the environment was chosen (or why none applies)
        self.branch = branch

    def __repr__(self) -> str:
        return f"Target({self.root!r}, {self.environment!r}, {self.commands!r}, {self.why!r}, {self.branch!r})"


SNAPSHOT_VERSION = 7  # bump when the snapshot layout or a default it holds changes: old ones are recompiled
RULES_VERSION = 1


def _sources(watch: Sequence[str] = ()) -> dict[str, list[int] | None]:
    """Every file (and the environments folder) the compiled config depends on, with its stamp;
    ``watch``: the repository files it read (``.qpod.yaml`` of registered repositories, their
    Containerfiles and build contexts), so a checkout or an edit there recompiles it."""
    env_dir = paths.environments_dir()
    files = [paths.repositories_file(), paths.settings_file(), paths.trust_file(), env_dir]
    try:
        files += sorted(os.path.join(env_dir, n) for n in os.listdir(env_dir) if n.endswith(".yaml"))
    except OSError:
        pass
    files += [w for w in watch if w not in files]
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
    from qpod_engine.base.errors import QpodError
    from qpod_engine.base.fileio import write_atomic

    try:
        write_atomic(path, text)
    except OSError as err:
        raise QpodError(f"{path}: cannot write qpod's state: {err.strerror or err}", 125) from None


def compile_config() -> dict[str, Any]:
    """Validate every config file and write the snapshot and the rules file. Raises ConfigError
    for a broken repositories.yaml or settings.yaml; a broken environment file is recorded as
    that environment's error so only the repositories using it fail."""
    from dataclasses import asdict

    from qpod_engine.base.errors import QpodError
    from qpod_engine.config import bindings as bindings_mod
    from qpod_engine.config import environments as config
    from qpod_engine.config import repo_file as repo_env
    from qpod_engine.config import trust

    sources = _sources()
    binds = bindings_mod.load_bindings()
    # the repositories registered for their own file (qpod allow), read and watched
    records = trust.load()

    def read_repo_files() -> tuple[dict[str, Any], list[str]]:
        out: dict[str, Any] = {}
        seen: list[str] = []
        for b in binds.values():
            if paths.REPO_FILE in b.referenced_environments():
                root = os.path.realpath(b.root)
                out[root], watched = repo_env.compile_root(root, records)
                out[root]["commands_known"] = trust.known_commands(records, root)
                seen += watched
        return out, seen

    repo_envs, watch = read_repo_files()
    if watch:
        # stamped first, then read again: a checkout under way leaves stamps older than what
        # was compiled, so the next command recompiles (never newer stamps on older content)
        stamped = _sources(watch)
        repo_envs, again = read_repo_files()
        if again != watch:
            watch, stamped = again, _sources(again)
        sources.update((w, stamped[w]) for w in watch)
    settings = config.load_settings()
    envs: dict[str, Any] = {}
    for name in config.environment_names():
        try:
            env = config.load_environment(name)
            envs[name] = {**asdict(env), "hash": env.config_hash()}
        except QpodError as err:
            envs[name] = {"error": str(err)}
    snap: dict[str, Any] = {
        "version": SNAPSHOT_VERSION,
        "layout": naming.CONTAINER_LAYOUT,  # precomputed container hashes depend on it
        "sources": sources,
        "settings": asdict(settings),
        # routing compares real paths (getcwd() never shows a symlink): a root typed by hand
        # through a symlink must still match
        "repos": [
            {
                "root": os.path.realpath(b.root),
                "environment": b.environment,
                "branches": list(b.branches.items()),
                "envs": b.referenced_environments(),
            }
            for b in binds.values()
        ],
        "envs": envs,
        "repo_envs": repo_envs,  # root -> the environment of its .qpod.yaml (see repo_env.compile_root)
        "watch": watch,
    }
    # container names and config hashes need hashlib: computed here, not on every launch
    snap["containers"] = {}
    for repo in snap["repos"]:
        for env_name in repo.pop("envs"):
            entry = environment_entry(snap, env_name, repo["root"])
            if entry is not None and "error" not in entry and "absent" not in entry:
                snap["containers"][f"{env_name}\t{repo['root']}"] = [
                    naming.container_name(env_name, repo["root"]),
                    naming.container_hash(entry, repo["root"]),
                ]
    # the rules first, then the snapshot that names their stamp: rules rewritten or damaged
    # since (a well-formed but wrong file too) no longer match it and are compiled again
    _write(paths.rules_file(), rules_text(snap))
    snap["rules_stamp"] = _stamp(paths.rules_file())
    _write(paths.snapshot_file(), json.dumps(snap))
    return snap


def rules_current() -> bool:
    """Whether the rules file is the one the snapshot on disk was compiled with."""
    try:
        with open(paths.snapshot_file(), encoding="utf-8") as f:
            stamp = json.load(f).get("rules_stamp")
    except (OSError, ValueError, AttributeError):
        return False
    return stamp is not None and stamp == _stamp(paths.rules_file())


def _stamp(path: str) -> list[int] | None:
    """What changes whenever a file is replaced or rewritten (inode, size, change time)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_ctime_ns]


def rules_text(snap: dict[str, Any]) -> str:
    """The preload library's rules: tab-separated lines, no quoting (paths with tabs or
    newlines are left out: the shim could not match them anyway)."""
    from qpod_engine.config.fields import DEFAULT_COMMANDS

    lines = [
        f"qpod-rules\t{RULES_VERSION}",
        "\t".join(["launcher", sys.executable, "-I", "-S", paths.LAUNCH_SCRIPT]),
        "\t".join(["client", naming.client_program()]),
    ]
    for repo in snap["repos"]:
        root = repo["root"]
        if "\t" in root or "\n" in root:
            continue
        names: list[str] = []
        env_names = ([repo["environment"]] if repo["environment"] else []) + [e for _, e in repo["branches"]]
        for env_name in env_names:
            env = environment_entry(snap, env_name, root)
            # an unknown or broken environment still routes the default commands, so that the
            # user sees the launcher's error instead of a silent host build
            cmds = env["commands"] if env and "commands" in env else DEFAULT_COMMANDS
            if env_name == REPO_FILE and (env is None or "error" in env or env.get("absent")):
                # no usable file on this tree (gated, broken, none): what every allowed version
                # routes goes to the launcher, which fails or runs it on the host; with a usable
                # file the list is exact, since the client trusts the library's choice
                cmds = list(dict.fromkeys([*DEFAULT_COMMANDS, *(env or {}).get("commands_known", ())]))
            names += [c for c in cmds if c not in names]
        lines.append("\t".join(["root", root, *names]))
    from qpod_engine.config.rules import seal_rules

    return seal_rules("\n".join(lines) + "\n")


def load() -> dict[str, Any]:
    """The current compiled config, recompiling when any source changed."""
    try:
        with open(paths.snapshot_file(), encoding="utf-8") as f:
            snap: dict[str, Any] = json.load(f)  # written by compile_config
        if (
            snap.get("version") == SNAPSHOT_VERSION
            and snap.get("layout") == naming.CONTAINER_LAYOUT
            and snap.get("sources") == _sources(snap.get("watch", ()))
            and snap.get("rules_stamp") == _stamp(paths.rules_file())
        ):
            return snap
    except (OSError, ValueError):
        pass
    return compile_config()


def targets(snap: dict[str, Any], near: Sequence[str] | None = None) -> list[Target]:
    """The bound repositories with the environment in force on their current branch; with
    ``near``, only those holding one of these paths (the launcher reads no other HEAD)."""
    from qpod_engine.base.gitinfo import current_branch, is_within

    out = []
    for repo in snap["repos"]:
        if near is not None and not any(is_within(p, repo["root"]) for p in near):
            continue
        branch = current_branch(repo["root"]) if repo["branches"] else None
        binding = Binding(repo["root"], repo["environment"], dict(repo["branches"]))
        env_name, why = binding.environment_for(branch)
        env = environment_entry(snap, env_name, repo["root"]) if env_name else None
        if env_name == REPO_FILE:
            # the explicit binding did not apply: the checked-out tree's own file does, if any
            why = env["why"] if env else f"repository file {REPO_FILE}: not compiled"
            if env is None or env.get("absent"):
                env_name, env = None, None
        if env is not None and "commands" in env:
            commands = tuple(env["commands"])
        elif env_name:
            # bound to an environment that is broken or does not exist (yet): the commands the
            # rules route for it fail with the launcher's one line (file and line), never
            # build on the host
            from qpod_engine.config.fields import DEFAULT_COMMANDS

            commands = tuple(DEFAULT_COMMANDS)
        else:
            commands = ()
        out.append(Target(repo["root"], env_name, commands, why, branch))
    return out


def environment_entry(snap: dict[str, Any], name: str, root: str) -> dict[str, Any] | None:
    """The compiled environment ``name`` as it applies to ``root``: a named one, or the
    repository's own file (``REPO_FILE``)."""
    if name == REPO_FILE:
        repo_envs: dict[str, dict[str, Any]] = snap.get("repo_envs", {})
        return repo_envs.get(root)
    envs: dict[str, dict[str, Any]] = snap["envs"]
    return envs.get(name)


def environment_problem(snap: dict[str, Any], name: str | None, root: str) -> str | None:
    """Why environment ``name`` cannot be used at ``root`` (a broken file, none of that name, a
    repository file not allowed), in one line: its routed commands fail with it (exit 125).
    None when it can be used, or for no environment."""
    if not name:
        return None
    env = environment_entry(snap, name, root)
    if env is None:
        if name == REPO_FILE:
            return None
        from qpod_engine.config.environments import unknown_environment_message

        return unknown_environment_message(name)
    return env.get("error")


def container_of(snap: dict[str, Any], env: dict[str, Any], root: str) -> tuple[str, str]:
    """(name, config hash) of the warm container of ``env`` x ``root``."""
    known = snap.get("containers", {}).get(f"{env['name']}\t{root}")
    if known:
        return known[0], known[1]
    return naming.container_name(env["name"], root), naming.container_hash(env, root)
