"""The launcher: decides where one command runs and prepares its container, then hands over
to the native-exec client (``preload/client.c``), which runs the command through the
container's agent with the caller's own file descriptors, signals and exit status.

The preload library goes to the client directly when the launch spec the launcher wrote for a
root is current (no Python at all); the launcher is the slow path: first command, changed
config or branch, stopped container, ``qpod exec``. Stdlib only on its way to the client:
podman-py is imported only to (re)create a container.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

from qpod_engine.base.environ import restore_locale
from qpod_engine.base.errors import EXIT_QPOD, QpodError
from qpod_engine.base.gitinfo import is_within
from qpod_engine.base.paths import REPO_FILE
from qpod_engine.config import containers as naming
from qpod_engine.config import snapshot
from qpod_engine.config.snapshot import Target
from qpod_engine.launch import spec as launchspec
from qpod_engine.routing.policy import Decision, decide

# typing is imported for type checkers only: the launcher's hot path imports this module
# and ``import typing`` costs ~2 ms a command
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _default_signals() -> None:
    """Python starts with SIGPIPE and SIGXFSZ ignored, and an exec keeps that: give the next
    program the defaults it would have had (else 'yes | head -1' never ends)."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)


def _host_exec(path: str | None, argv: Sequence[str], extra_env: dict[str, str] | None = None) -> int:
    """Become the program on the host, as if qpod were absent (errors as a shell reports them)."""
    env = dict(os.environ)
    if extra_env:
        env.update(extra_env)
    _default_signals()
    try:
        if path:
            os.execve(path, list(argv), env)
        os.execvpe(argv[0], list(argv), env)
    except FileNotFoundError:
        sys.stderr.write(f"{argv[0]}: command not found\n")
        return 127
    except PermissionError:
        sys.stderr.write(f"{argv[0]}: Permission denied\n")
        return 126
    except OSError as err:
        sys.stderr.write(f"{argv[0]}: {err.strerror}\n")
        return 126
    return 0  # not reached


def _resolve(
    path: str, argv: Sequence[str], cwd: str, explicit: bool, env_name: str | None
) -> tuple[dict[str, Any], Decision]:
    from qpod_engine.routing.policy import script_of, work_dirs

    snap = snapshot.load()
    script = script_of(os.path.basename(path), argv, cwd)
    # the repositories that can matter: the program's, its script's, the cwd's and the one a
    # build tool is told to work in (make -C DIR)
    near = (path, cwd, *work_dirs(os.path.basename(path), argv, cwd), *((script,) if script else ()))
    targets = snapshot.targets(snap, near=near)
    if env_name:
        if env_name not in snap["envs"]:
            from qpod_engine.config.environments import unknown_environment_message

            raise QpodError(unknown_environment_message(env_name), EXIT_QPOD)
        from qpod_engine.base.gitinfo import innermost_root

        found = innermost_root(cwd, (t.root for t in targets))
        if found is not None:
            root = found
        else:
            from qpod_engine.base.gitinfo import discover_root

            root = discover_root(cwd)
        env = snap["envs"][env_name]
        t = Target(root, env_name, tuple(env.get("commands", ())), "--env on the command line")
        return snap, Decision("container", f"qpod exec --env {env_name}", t)
    return snap, decide(path, argv, cwd, targets, explicit=explicit)


def environment_of(snap: dict[str, Any], name: str, root: str | None = None) -> dict[str, Any]:
    """The compiled environment ``name`` (at ``root``: the repository's own file when ``name`` is
    paths.REPO_FILE). A broken one, or a repository file not allowed, fails in one line."""
    env = snapshot.environment_entry(snap, name, root) if root is not None else snap["envs"].get(name)
    if env is None:
        from qpod_engine.config.environments import unknown_environment_message

        raise QpodError(unknown_environment_message(name), EXIT_QPOD)
    if "error" in env:
        raise QpodError(env["error"], EXIT_QPOD)
    return env


def ensure_facts(snap: dict[str, Any], env: dict[str, Any], root: str) -> dict[str, Any]:
    """Facts of the running warm container; podman-py is asked only when the cache is stale."""
    name, want = snapshot.container_of(snap, env, root)
    facts = naming.warm_facts(name, want, root)
    if facts is None:
        if env.get("build"):
            # a repository file's build: image, made (or found) before the container needs it;
            # the tag is in the container's hash, so a warm container never gets here for it
            from qpod_engine.podman.imagebuild import ensure_built

            ensure_built(env["build"], snap["settings"])
        from qpod_engine.base.fileio import locked
        from qpod_engine.podman.lifecycle import ensure_container

        # many launches at once (make -j, a loop of jobs) all find the container cold: one
        # creates or starts it, the others wait and find it warm
        try:
            with locked(naming.facts_lock(name)):
                facts = naming.warm_facts(name, want, root) or ensure_container(env, root, snap["settings"]).__dict__
        except OSError as err:
            raise QpodError(f"{err.filename}: cannot lock qpod's state: {err.strerror}", EXIT_QPOD) from None
    return facts


def _bind_build_dir(snap: dict[str, Any], path: str, argv: Sequence[str], cwd: str, root: str, env: str) -> None:
    """A configure step of ``root`` that sets up a build directory outside every bound tree
    binds that directory to the same environment (a directory binding, as ``qpod init ENV --dir``
    makes), so the ``make`` that follows there builds in the container too, not with the host's
    compiler. Not for a repository's own .qpod.yaml (the build dir has none)."""
    from qpod_engine.routing.policy import configured_build_dir

    build = configured_build_dir(path, argv, cwd, root)
    if build is None or env == REPO_FILE or any(is_within(build, r["root"]) for r in snap["repos"]):
        return
    from qpod_engine.base.fileio import config_lock, make_dirs
    from qpod_engine.config import bindings

    try:
        make_dirs(build)  # cmake -B and meson make it themselves: bound before they run
        with config_lock():
            binds = bindings.load_bindings()
            if bindings.find_binding(binds, build) is None:
                bindings.bind(binds, bindings.directory_root(build), env, None)
                bindings.save_bindings(binds)
                snapshot.compile_config()
    except (OSError, QpodError) as err:  # the configure step itself goes on; the next make says
        sys.stderr.write(f"qpod: {build}: not bound to environment '{env}': {err}\n")


def launch(
    path: str,
    argv: Sequence[str],
    cwd: str,
    explicit: bool = False,
    env_name: str | None = None,
    shim: bool = False,
    tty: bool | None = None,
) -> int:
    """Run one command where the policy says. Does not return when it runs (the client or the
    host program replaces this process); returns a status only when it cannot."""
    snap, decision = _resolve(path, argv, cwd, explicit, env_name)
    if not decision.in_container:
        if shim:
            # the library must not send this launch (or its children under the same root) back
            # here: name the root it matched, by its own rule (program's root, else cwd's root)
            from qpod_engine.routing.policy import redirected_root

            root = redirected_root(path, cwd, [repo["root"] for repo in snap["repos"]], argv)
            return _host_exec(path, argv, {"QPOD_HOST_ROOT": root} if root else None)
        return _host_exec(None, argv)
    target = decision.target
    assert target is not None and target.environment is not None
    env = environment_of(snap, target.environment, target.root)
    _bind_build_dir(snap, path, argv, cwd, target.root, target.environment)
    facts = ensure_facts(snap, env, target.root)
    if env.get("distribute"):
        # the build hosts' distccd containers, the compilers' wrapper and host list (its own
        # lines say what cannot serve; the command runs all the same, compiling here)
        from qpod_engine.podman import distribute

        distribute.ensure(env, facts)
    if facts.get("transport", naming.TRANSPORT_AGENT) != naming.TRANSPORT_AGENT:
        from qpod_engine.podman import exec_transport

        return exec_transport.run(decision, snap, env, facts, path, argv, cwd, tty)
    rules = any(r["root"] == target.root and r["branches"] for r in snap["repos"])
    text = launchspec.spec_text(snap, env, target.root, facts, rules)
    # the policy's own choice is what the preload library will ask for next time (by root);
    # an explicit --env gets a file of its own
    spec = launchspec.fast_path(target.root) if not env_name else launchspec.explicit_path(facts["name"])
    try:
        launchspec.write(spec, text)
    except OSError as err:
        raise QpodError(f"{spec}: cannot write qpod's state: {err.strerror}", EXIT_QPOD) from None
    client = naming.client_program()
    args = [client, "--spec", spec, "--reason", decision.reason]
    if tty is not None:
        args.append("--tty" if tty else "--no-tty")
    args += ["--shim", path, cwd, "--", *argv]
    _default_signals()
    try:
        os.execv(client, args)
    except OSError as err:
        raise QpodError(f"cannot start {client}: {err.strerror} (reinstall qpod: pip install .)", EXIT_QPOD) from None
    return EXIT_QPOD  # not reached


def cwd_or_pwd() -> str:
    """The working directory as the user sees it ($PWD when it names the same directory)."""
    cwd = os.getcwd()
    pwd = os.environ.get("PWD")
    if pwd and pwd != cwd:
        try:
            if os.path.samefile(pwd, cwd):
                return os.path.normpath(pwd)
        except OSError:
            pass
    return cwd


def shim_main(args: Sequence[str]) -> int:
    """Entry from the preload library: ``--shim PATH CWD -- ARGV...``."""
    restore_locale()  # the command gets the caller's environment, not Python's coerced one
    try:
        if len(args) < 4 or args[0] != "--shim" or args[3] != "--":
            raise QpodError("launcher: expected --shim PATH CWD -- ARGV...", EXIT_QPOD)
        path, cwd, argv = args[1], args[2], list(args[4:]) or [args[1]]
        return launch(path, argv, cwd, shim=True)
    except QpodError as err:
        from qpod_engine.base.textsafe import visible  # paths in the message are shown literally

        sys.stderr.write(f"qpod: {visible(err)}\n")
        return EXIT_QPOD
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # noqa: BLE001 - a redirected command fails in one line, never a traceback
        from qpod_engine.base.errors import unexpected
        from qpod_engine.base.textsafe import visible

        sys.stderr.write(f"qpod: {visible(unexpected(err))}\n")
        return EXIT_QPOD
