"""The engine's public facade for front ends that are not the CLI (the TUI).

Every method wraps existing engine functions: the same validation as ``qpod init``,
``qpod env add`` and ``qpod env rm``, the same compiled snapshot. Methods may block on
podman or the disk: a UI calls them from worker threads. Never imports a UI toolkit.

``LogIndex`` (qpod_engine/log/index.py) holds byte offsets of every command-log record, so a
viewer can show 100,000 records while holding only the few it draws, and the commands running now.
"""

import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from qpod_engine.base import gitinfo, paths
from qpod_engine.base.errors import ConfigError, FieldError, InUse, QpodError
from qpod_engine.base.fileio import config_lock
from qpod_engine.base.textsafe import visible
from qpod_engine.config import bindings, snapshot
from qpod_engine.config import environments as config
from qpod_engine.config.containers import container_name
from qpod_engine.config.environments import Environment, Settings
from qpod_engine.config.fields import FIELDS as OPTIONS
from qpod_engine.config.form import check_form, environment_to_form
from qpod_engine.log import cmdlog
from qpod_engine.log.cmdlog import Filter
from qpod_engine.log.index import LogIndex, Running
from qpod_engine.rows import ContainerInfo, ContainerRow, EnvRow, ImageRow, RepoRow, Stats, human_bytes, uptime

if TYPE_CHECKING:
    from qpod_engine.config.repo_file import RepoFile

# What a front end needs besides the Engine, from this one module: the UI imports nothing
# else of the engine (checked by an import contract, see pyproject.toml)
__all__ = [
    "ContainerInfo",
    "ContainerRow",
    "Engine",
    "EnvRow",
    "Environment",
    "FieldError",
    "Filter",
    "ImageRow",
    "LogIndex",
    "OPTIONS",
    "QpodError",
    "RepoRow",
    "Running",
    "Stats",
    "format_argv",
    "human_bytes",
    "uptime",
    "visible",
]


# --- the facade ---------------------------------------------------------------------------


class Engine:
    """What the TUI may ask of the engine. Config and state locations come from the usual
    environment variables (QPOD_CONFIG_DIR, QPOD_STATE_DIR)."""

    # build hosts the last containers() could not reach, each with why (their containers are
    # missing from it; this machine's are there)
    unreachable_hosts: list[str] = []

    def now(self) -> float:
        return time.time()

    def settings(self) -> Settings:
        return config.load_settings()

    def keymap(self) -> dict[str, str]:
        """Key overrides from ``settings.yaml`` (``keymap: {binding_id: key}``)."""
        return dict(self.settings().keymap)

    def config_dir(self) -> str:
        return paths.config_dir()

    def default_bind_path(self) -> str:
        from qpod_engine.launch.launcher import cwd_or_pwd

        return cwd_or_pwd()

    # --- repositories

    def container_states(self) -> dict[str, str]:
        """Container name -> state. Raises QpodError when podman cannot be asked."""
        from qpod_engine.podman.lifecycle import list_containers

        return {c["name"]: c["state"] for c in list_containers()}

    def activation(self) -> str:
        """Whether ``qpod activate`` is on for this user, in one line (as ``qpod status`` says it)."""
        from qpod_engine.activation import state

        return state.status().summary()

    def repositories(self, states: dict[str, str] | None = None) -> list[RepoRow]:
        """Every bound repository; container states from ``states`` ("unknown" when None)."""
        from qpod_engine.config import repo_file as repo_env

        snap = snapshot.load()
        waiting = dict(repo_env.waiting(snap))
        rows = []
        for t, repo in zip(snapshot.targets(snap), snap["repos"], strict=True):
            exists = gitinfo.exists(t.root)
            name = container_name(t.environment, t.root) if t.environment else None
            rows.append(
                RepoRow(
                    root=t.root,
                    exists=exists,
                    branch=gitinfo.current_branch(t.root) if exists else None,
                    environment=t.environment,
                    why=t.why if exists else "repository path is missing (moved or deleted?)",
                    default_environment=repo["environment"],
                    branches=dict(repo["branches"]),
                    container=name,
                    container_state=states.get(name or "", "none") if states is not None else "unknown",
                    waiting=waiting.get(t.root),
                    broken=snapshot.environment_problem(snap, t.environment, t.root)
                    if t.environment != paths.REPO_FILE
                    else None,  # the file's own problems: waiting
                )
            )
        return rows

    def bind(self, path: str, env: str, branch: str | None = None, directory: bool = False) -> str:
        """Bind the repository around ``path`` as ``qpod init`` does (``directory``: the tree at
        ``path`` itself, git or not, e.g. an out-of-tree build directory); returns its root.
        FieldError names the field at fault: "path", "environment" or "branch"."""
        branch = (branch or "").strip() or None
        self._check_environment(env)
        where = os.path.abspath(os.path.expanduser(path.strip() or "."))
        try:
            root = bindings.directory_root(where) if directory else gitinfo.discover_root(where)
        except QpodError as err:
            raise FieldError("path", str(err)) from None
        if directory and branch:
            raise FieldError("branch", "a directory bound with --dir has no branches: bind it for any branch")
        self._update(lambda b: bindings.bind(b, root, env, branch))
        return root

    def set_environment(self, root: str, env: str) -> None:
        """The repository's environment for any branch (its branch rules stay)."""
        self._check_environment(env)
        self._update(lambda b: bindings.bind(b, root, env, None))

    def add_branch_rule(self, root: str, glob: str, env: str) -> None:
        if not glob.strip():
            raise FieldError("branch", "a branch rule needs a glob, e.g. release/2018.*")
        self._check_environment(env)
        self._update(lambda b: bindings.bind(b, root, env, glob.strip()))

    def remove_branch_rule(self, root: str, glob: str) -> None:
        """As ``qpod unbind --branch``: the last rule of a repository without its own
        environment takes the binding with it."""
        self._update(lambda b: bindings.unbind(b, root, glob))

    def unbind(self, root: str) -> None:
        self._update(lambda b: bindings.unbind(b, root, None))

    # --- a repository's own .qpod.yaml (see repo_env): what waits for an allow, and allowing it

    def waiting_files(self) -> dict[str, str]:
        """Registered repositories whose checked-out .qpod.yaml cannot be used now (changed
        since it was allowed, or broken): root -> the one-line reason (RepoRow.waiting too)."""
        from qpod_engine.config import repo_file as repo_env

        return dict(repo_env.waiting(snapshot.load()))

    def repo_file_summary(self, root: str) -> tuple[str, list[str], list[str]]:
        """(sha256 of the file as checked out now, what it asks beyond the repository, what it
        sets up besides), lines not yet escaped. QpodError when there is none or it is broken."""
        from qpod_engine.config import repo_file as repo_env

        rf = repo_env.load(root)
        if rf is None:
            raise QpodError(f"{root}: no {paths.REPO_FILE} at the repository's root")
        if rf.problems or rf.env is None:
            raise QpodError(str(rf.problems[0]) if rf.problems else f"{rf.path}: cannot be used")
        risky, info = repo_env.requests(rf)
        return rf.sha, risky, info

    def repo_file_changes(self, root: str) -> list[str]:
        """What changed in the repository's file since the newest version allowed there (a diff,
        lines not yet escaped; [] when its content is allowed or no allowed text was kept)."""
        from qpod_engine.config import allow
        from qpod_engine.config import repo_file as repo_env

        rf = repo_env.load(root)
        return allow.changes(rf) if rf is not None else []

    def allow_repo_file(self, root: str, sha: str) -> None:
        """Allow the content the user was shown (``sha``): refused when the file changed since."""
        rf = self.repo_file(root)
        if rf is None or rf.sha != sha or rf.problems or rf.env is None:
            raise QpodError(f"{root}: {paths.REPO_FILE} changed since it was shown: look again before allowing")
        self.allow_file(rf)

    def repo_file(self, root: str) -> "RepoFile | None":
        """The repository's own file as checked out now (None: there is none). QpodError when it
        cannot be read; its problems are in ``problems``."""
        from qpod_engine.config import repo_file

        return repo_file.load(root)

    def allow_file(self, rf: "RepoFile", take_over: bool = False) -> str | None:
        """Allow this content of the file and use it (``take_over``: over an explicit binding, as
        ``qpod init`` with no ENV does). Returns the explicit environment that still wins."""
        from qpod_engine.config import allow

        return allow.allow(rf, take_over)

    def register_file(self, root: str) -> None:
        """Bind the repository to its file without allowing it: its routed commands fail until
        allowed or denied."""
        from qpod_engine.config import allow

        allow.register(root)

    def deny_file(self, root: str) -> tuple[int, bool]:
        """Forget every allowed version of the file (its commands run on the host again).
        Returns (versions forgotten, whether the binding to it was removed)."""
        from qpod_engine.config import allow

        return allow.deny(root)

    def _check_environment(self, env: str) -> None:
        if env not in config.environment_names():
            raise FieldError("environment", config.unknown_environment_message(env))
        try:
            config.load_environment(env)  # refuse to bind to a broken environment file
        except QpodError as err:
            raise FieldError("environment", str(err)) from None

    def _update(self, change: Callable[[dict[str, bindings.Binding]], Any]) -> None:
        """Read, change and write repositories.yaml, then compile, all under the config lock:
        a concurrent ``qpod init`` reads what this one wrote (none is lost), and compiles
        run in order (a late compile of stale bindings cannot overwrite a newer one)."""
        with config_lock():
            binds = bindings.load_bindings()
            change(binds)
            bindings.save_bindings(binds)
            snapshot.compile_config()

    # --- environments

    def environment_names(self) -> list[str]:
        return config.environment_names()

    def environments(self) -> list[EnvRow]:
        snap = snapshot.load()
        users: dict[str, list[str]] = {}
        for repo in snap["repos"]:
            for name in dict.fromkeys([repo["environment"], *(e for _, e in repo["branches"])]):
                if name:
                    users.setdefault(name, []).append(repo["root"])
        rows = []
        for name, env in sorted(snap["envs"].items()):
            if "error" in env:
                rows.append(EnvRow(name, "", users.get(name, []), error=env["error"]))
            else:
                settings = {k: v for k, v in env.items() if k != "hash"}
                rows.append(EnvRow(name, env["image"], users.get(name, []), settings=settings))
        return rows

    def load_environment(self, name: str) -> Environment:
        return config.load_environment(name)

    def image_present(self, ref: str) -> bool:
        """Raises QpodError when podman cannot be asked."""
        from qpod_engine.podman.lifecycle import image_present

        return image_present(ref)

    def check_form(self, form: dict[str, str]) -> tuple[Environment, list[FieldError]]:
        """The environment the form describes and all its problems, in screen order."""
        return check_form(form)

    def environment_from_form(self, form: dict[str, str]) -> Environment:
        """Validate the form as an environment file is validated; the first FieldError (in
        screen order) is raised."""
        env, problems = check_form(form)
        if problems:
            raise problems[0]
        return env

    def environment_form(self, env: Environment | None = None) -> dict[str, str]:
        """Form fields for ``env``, or the defaults of a new environment."""
        return environment_to_form(env or Environment(name="", image=""))

    def save_environment(self, env: Environment, create: bool, edit: bool = False) -> str:
        """Write the environment file (``create`` refuses to overwrite one) and recompile.
        ``edit``: the form edits the file as it was read, so a file qpod cannot parse (broken
        before, or by hand while the form was open) is never replaced by the form's content,
        which would lose what qpod could not read."""
        path = paths.environment_file(env.name)
        with config_lock():
            if create and os.path.exists(path):
                raise FieldError("name", f"environment '{env.name}' exists ({path})")
            if edit:
                self.check_editable(env.name)
            written = config.save_environment(env)
            snapshot.compile_config()
        return str(written)

    def set_options(self, name: str, changes: dict[str, Any]) -> str:
        """Change some options of an environment, keeping the others (read, changed and written
        under the config lock: a concurrent edit of another option is not lost)."""
        from dataclasses import asdict

        with config_lock():
            data = asdict(config.load_environment(name))
            del data["name"]
            data.update(changes)
            env = config.environment_from_dict(name, data, "command line")
            written = config.save_environment(env)
            snapshot.compile_config()
        return str(written)

    def check_editable(self, name: str) -> None:
        """Raises QpodError when the environment file exists but qpod cannot parse it: such a
        file is fixed in an editor (``editor_command``), never rewritten by a form."""
        try:
            config.load_environment(name)
        except ConfigError as err:
            raise QpodError(
                f"{err}; qpod cannot read this file, so it will not rewrite it: open it in your "
                f"editor ({self.environment_path(name)})"
            ) from None
        except QpodError:
            pass  # no such file (removed meanwhile): saving creates it, nothing is lost

    def environment_path(self, name: str) -> str:
        return paths.environment_file(name)

    def editor_command(self, path: str) -> list[str]:
        """argv that opens ``path`` in the user's editor ($VISUAL, $EDITOR, else vi)."""
        import shlex

        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        try:
            argv = shlex.split(editor)
        except ValueError:
            argv = [editor]
        return [*(argv or ["vi"]), path]

    def bound_to(self, name: str) -> list[str]:
        return [b.root for b in bindings.load_bindings().values() if name in b.referenced_environments()]

    def delete_environment(self, name: str, force: bool = False) -> None:
        """Remove an environment file; refused while a repository uses it unless ``force``."""
        path = paths.environment_file(name)
        with config_lock():  # a binding made meanwhile must not be left pointing at nothing
            if not os.path.exists(path):
                raise QpodError(config.unknown_environment_message(name), 2)
            bound = self.bound_to(name)
            if bound and not force:
                raise InUse(f"environment '{name}' is used by {', '.join(bound)}; unbind first", bound)
            try:
                os.unlink(path)
            except OSError as err:
                raise QpodError(f"{path}: cannot remove: {err.strerror}") from None
            snapshot.compile_config()

    def pull_image(self, ref: str, progress: Callable[[str, int, int], None] | None = None) -> None:
        from qpod_engine.podman.lifecycle import pull_image

        pull_image(ref, progress)

    # --- containers

    def containers(self) -> list[ContainerRow]:
        """qpod's containers (``rows.ContainerInfo``: with ``outdated`` and
        ``commands_running`` where the backend gives them). Raises QpodError when podman
        cannot be asked."""
        from qpod_engine.podman.lifecycle import list_containers
        from qpod_engine.rows import container_info

        self.unreachable_hosts = []
        return [container_info(c) for c in list_containers(unreachable=self.unreachable_hosts)]

    def container_list(self, all_configs: bool = False) -> tuple[list[dict[str, Any]], list[str]]:
        """(every container of this config, or of all configs, on every host, as ``qpod ps
        --json`` shows them; the hosts that could not be reached, with why)."""
        from qpod_engine.podman.lifecycle import list_containers

        unreachable: list[str] = []
        return list_containers(all_configs=all_configs, unreachable=unreachable), unreachable

    def stop_running(self, env: str | None, all_configs: bool = False) -> tuple[list[tuple[str, str]], list[str]]:
        """Stop the running containers of environment ``env`` (None: all of them). Returns
        ((name, host) stopped; the hosts that could not be reached)."""
        from qpod_engine.podman.lifecycle import stop_containers

        rows, unreachable = self.container_list(all_configs)
        running = {
            c["name"]: c["host"] for c in rows if c["state"] == "running" and (env is None or c["environment"] == env)
        }
        return [(n, running[n]) for n in stop_containers(list(running))], unreachable

    def stop_container(self, name: str) -> None:
        from qpod_engine.podman.lifecycle import stop_containers

        stop_containers([name])

    def restart_container(self, name: str) -> None:
        from qpod_engine.podman.lifecycle import restart_container

        restart_container(name)

    def stop_container_by(self, name: str, by: str) -> None:
        """Stop the container; a command it was running ends saying it was stopped ``by`` whom
        (``qpod tui``), in its record's ``ended``."""
        from qpod_engine.podman.lifecycle import stop_containers

        stop_containers([name], by=by)

    def restart_container_by(self, name: str, by: str) -> None:
        """Restart the container (stopped, then started), a command it was running ending as
        ``stop_container_by`` says."""
        from qpod_engine.podman.lifecycle import restart_container, stop_containers

        try:
            stop_containers([name], by=by)
        except QpodError:
            pass  # a stopped container is not stopped again (podman says so): the restart starts it
        restart_container(name)

    def container_logs(self, name: str, tail: int = 200) -> str:
        from qpod_engine.podman.lifecycle import container_logs

        return container_logs(name, tail)

    def shell_command(self, name: str) -> tuple[list[str], dict[str, str]]:
        """argv and environment of an interactive /bin/sh in a container through podman exec: the
        fallback of ``repo_shell_command`` for a container qpod cannot tie to a repository. qpod
        is switched off in it (QPOD_OFF, no LD_PRELOAD) so the shell's own commands are not
        redirected again."""
        from qpod_engine.podman.service import podman_binary, podman_env

        return [podman_binary(), "exec", "-it", name, "/bin/sh"], podman_env()

    # --- the command log

    def log_path(self) -> str:
        return paths.log_file()

    def open_log(self) -> LogIndex:
        return LogIndex(self.log_path())

    def log_filter(
        self, text: str = "", repo: str | None = None, env: str | None = None, failed: bool = False
    ) -> cmdlog.Filter:
        return cmdlog.Filter(repo=repo or None, env=env or None, failed=failed, text=text.strip() or None)

    # --- acting on what runs (the log's start records), and on a record

    def signal_names(self) -> tuple[str, ...]:
        """The signals a running command may be sent, the default (Ctrl-C's INT) first."""
        from qpod_engine.log.signals import SIGNALS

        return SIGNALS

    def signal_command(self, rec: dict[str, Any], name: str, by: str = "qpod tui") -> str:
        """Send signal ``name`` to the running command of start record ``rec``: to its process
        group in its container, here or on another host, through its qpod client (checked to
        be that client first: a recycled pid is never signalled). Returns what was done;
        QpodError says why nothing was. SIGKILL writes the command's end record."""
        from qpod_engine.log import signals

        return signals.send(rec, name, by, self.log_path())

    def status_signal(self, status: object) -> str | None:
        """``SIGINT`` for status 130: the signal a status past 128 names, else None."""
        from qpod_engine.log.signals import signal_name

        return signal_name(status)

    def record_cwd(self, rec: dict[str, Any]) -> str | None:
        """Where a record's command ran, if that directory is still here, else its repository's
        root if that is; None when neither is."""
        for where in (rec.get("cwd"), rec.get("repo")):
            if isinstance(where, str) and where and os.path.isdir(where):
                return where
        return None

    def rerun_command(self, rec: dict[str, Any]) -> tuple[list[str], dict[str, str], str]:
        """argv, environment and cwd that run a record's command again, as typed in its cwd:
        ``qpod exec -- ARGV`` there (the repository's environment in force now, logged like any
        redirected command). QpodError when the record has no command or its directory is gone."""
        import sys

        argv = [str(a) for a in rec.get("argv") or []]
        if not argv:
            raise QpodError("the record has no command line")
        cwd = self.record_cwd(rec)
        if cwd is None:
            raise QpodError(f"{rec.get('cwd') or rec.get('repo')}: the directory is gone")
        env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "QPOD_OFF")}
        return [sys.executable, "-I", "-m", "qpod_engine.cli", "exec", "--", *argv], env, cwd

    def record_shell_command(self, rec: dict[str, Any]) -> tuple[list[str], dict[str, str], str]:
        """Your shell in a record's environment, in its cwd (``repo_shell_command``, in the
        record's directory rather than the repository's root). QpodError when it cannot be."""
        cwd = self.record_cwd(rec)
        repo, env_name = rec.get("repo"), rec.get("env")
        if cwd is None or not isinstance(repo, str) or not isinstance(env_name, str):
            raise QpodError(f"{rec.get('cwd') or rec.get('repo') or 'the record'}: no directory to open a shell in")
        found = self.repo_shell_command(repo, env_name)
        if found is None:
            raise QpodError(f"{repo}: the repository is gone")
        argv, env, _root = found
        return argv, env, cwd

    # --- path completion (for the bind dialog)

    def complete_path(self, text: str, limit: int = 50) -> list[str]:
        """Directories whose path starts with ``text`` (``~`` kept as typed), each ending in '/'."""
        expanded = os.path.expanduser(text)
        head, tail = os.path.split(expanded)
        try:
            names = sorted(
                n
                for n in os.listdir(head or ".")
                if n.startswith(tail) and (tail.startswith(".") or not n.startswith("."))
            )
        except OSError:
            return []
        out = []
        for n in names:
            if os.path.isdir(os.path.join(head or ".", n)):
                full = os.path.join(head, n) + "/"
                if text.startswith("~") and expanded != text:
                    full = text[: len(text) - len(tail)] + n + "/"
                out.append(full)
                if len(out) >= limit:
                    break
        return out

    # --- container figures, the dashboard's own preferences

    def container_stats(self, ids: list[str], hosts: dict[str, str] | None = None) -> "dict[str, Any]":
        """CPU %, memory and pids of the running containers ``ids`` (``rows.Stats``
        by 12-digit id), one call to each podman (``hosts``: the host of a container on
        another machine, by id). Raises QpodError when this machine's podman cannot be asked;
        a build host that cannot be leaves its containers without figures."""
        from qpod_engine.podman.stats import container_stats

        by_host: dict[str, list[str]] = {}
        for cid in ids:
            by_host.setdefault((hosts or {}).get(cid, ""), []).append(cid)
        out = container_stats(by_host.pop("", []))
        for host, group in by_host.items():
            try:
                out.update(container_stats(group, host))
            except QpodError:
                continue
        return out

    def stats_unavailable(self, stats_error: str | None = None) -> str:
        """Why running containers have no CPU and memory figures, in one line: the stats call's
        error when it failed, else what this machine lacks (rootless podman measures containers
        only on cgroups v2, with the cpu and memory controllers delegated to the user)."""
        if stats_error:
            return f"podman stats failed: {stats_error}"
        if os.geteuid() != 0:
            if not os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
                return "rootless podman on cgroups v1 has no per-container stats"
            try:
                uid = os.getuid()
                path = f"/sys/fs/cgroup/user.slice/user-{uid}.slice/user@{uid}.service/cgroup.controllers"
                with open(path, encoding="ascii") as f:
                    controllers = f.read().split()
            except OSError:
                controllers = []
            missing = [c for c in ("cpu", "memory") if c not in controllers]
            if missing:
                return f"rootless podman: the {' and '.join(missing)} controller is not delegated to this user"
        return "podman gave no figures for them"

    def repo_shell_command(self, repository: str, environment: str) -> tuple[list[str], dict[str, str], str] | None:
        """argv, environment and cwd of your shell in the container of (``environment``,
        ``repository``) through qpod's own launcher, ``qpod exec --env E -t``, run in the
        repository: a redirected command like any other (as you, in the mapped cwd, with the
        environment's variables, logged). $SHELL when the image has it, else /bin/sh. None when
        the repository is gone (``shell_command`` then). May ask podman: call from a worker."""
        import sys

        if not (repository and environment and os.path.isdir(repository)):
            return None
        shell = os.environ.get("SHELL") or "/bin/sh"
        if shell != "/bin/sh":
            from qpod_engine.podman.lifecycle import command_in_container

            if not command_in_container(environment, repository, shell):
                shell = "/bin/sh"
        env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "QPOD_OFF")}
        return (
            [sys.executable, "-I", "-m", "qpod_engine.cli", "exec", "--env", environment, "-t", "--", shell],
            env,
            repository,
        )

    def settings_path(self) -> str:
        """settings.yaml (the dashboard names it when a keymap entry is unusable)."""
        return paths.settings_file()

    def images(self) -> list[ImageRow]:
        """The images qpod's environments name (and the ones this config built from repository
        files), with size and what uses them. Raises QpodError when podman cannot be asked."""
        from qpod_engine.config.containers import config_id
        from qpod_engine.podman.imagebuild import LABEL_BUILD_CONFIG
        from qpod_engine.podman.lifecycle import client, list_containers

        snap = snapshot.load()
        wanted: dict[str, list[str]] = {}
        for name, env in snap["envs"].items():
            if env.get("image"):
                wanted.setdefault(env["image"], []).append(f"environment {name}")
        for root, env in snap.get("repo_envs", {}).items():
            ref = (env.get("build") or {}).get("tag") or env.get("image")
            if ref and "error" not in env:
                wanted.setdefault(ref, []).append(f".qpod.yaml of {root}")
        users: dict[str, list[str]] = {}
        for c in list_containers():
            users.setdefault(c["image"], []).append(f"container {c['name']}")
        try:
            found = client().images.list()
        except Exception as err:  # noqa: BLE001 - podman-py raises several types: one line
            raise QpodError(f"podman: {err}") from None
        rows = []
        for img in found:
            attrs = img.attrs
            tags = [t for t in attrs.get("RepoTags") or [] if t]
            names = set(tags) | {t.removesuffix(":latest") for t in tags}
            built = (attrs.get("Labels") or {}).get(LABEL_BUILD_CONFIG) == config_id()
            used = [u for ref in sorted(names) for u in wanted.get(ref, []) + users.get(ref, [])]
            if used or built:
                rows.append(
                    ImageRow(
                        id=str(attrs.get("Id", ""))[:12],
                        tags=tags,
                        size=int(attrs.get("Size") or 0),
                        used_by=list(dict.fromkeys(used)),
                        built_here=built,
                    )
                )
        return sorted(rows, key=lambda r: (not r.used_by, r.tags))

    def build_repo_image(self, root: str, progress: Callable[[str], None]) -> bool:
        """Build the image the repository's .qpod.yaml gives (``build:``), each line of podman
        build's output to ``progress``; False when it exists already. QpodError when the file
        waits for an allow, is broken, or names an image instead of a Containerfile."""
        from qpod_engine.podman.imagebuild import ensure_built

        snap = snapshot.load()
        env = snapshot.environment_entry(snap, paths.REPO_FILE, root)
        if env is None or env.get("absent"):
            raise QpodError(f"{root}: no allowed {paths.REPO_FILE} in force here")
        if "error" in env:
            raise QpodError(str(env["error"]))
        if not env.get("build"):
            raise QpodError(f"{root}: its {paths.REPO_FILE} names an image ({env.get('image')}), not a build")
        return ensure_built(env["build"], snap["settings"], progress)

    def prune_images(self, dry_run: bool = False, only: set[str] | None = None) -> tuple[list[str], list[str]]:
        """Remove this config's images built from repository files that nothing uses now (no
        checked-out .qpod.yaml names them, other branches' included: a checkout builds them
        again), of the references in ``only`` when given (the rows marked in the dashboard).
        Returns (removed, or would be; kept because a container uses them)."""
        from qpod_engine.podman.imagebuild import prune, tags_in_use

        return prune(tags_in_use(snapshot.load()), dry_run=dry_run, only=only)

    def theme_file(self) -> str:
        """Where the dashboard keeps the theme picked in its palette: ``theme`` in settings.yaml."""
        return paths.settings_file()

    def tui_theme(self) -> str | None:
        name = self.settings().theme
        return name if name and name.isprintable() else None

    def save_tui_theme(self, name: str) -> None:
        """``theme`` in settings.yaml, the rest of the file untouched. Raises QpodError (the
        dashboard says so, the theme still applies this session)."""
        try:
            with config_lock():
                config.set_setting("theme", name)
        except OSError as err:
            raise QpodError(f"{self.theme_file()}: cannot save the theme: {err.strerror or err}") from None


def format_argv(argv: Sequence[str]) -> str:
    """A command line as a shell would need it typed (for copying)."""
    import shlex

    return shlex.join(argv)
