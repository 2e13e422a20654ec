"""Container lifecycle through podman-py: the API service, the warm container of each
(environment, repository), image pulls, listing and stopping.

Imported only off the hot path (``import podman`` costs ~150 ms): the launcher comes here
when its cached container facts are stale, the CLI and the TUI always.
"""

import os
import resource
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from qpod_engine.base.errors import EXIT_QPOD, QpodError
from qpod_engine.config import containers as naming
from qpod_engine.podman.service import ensure_service, is_rootless

_clients: dict[str | None, Any] = {}


def client(host: str | None = None) -> Any:
    """A connected podman-py client: this machine's (service started on demand), or the podman
    of connection ``host`` (an environment's ``host:``), through a socket ssh forwards (made
    again when that ssh has ended: a dropped connection, in a long-running dashboard)."""
    if host and host in _clients:
        from qpod_engine.podman import remote

        if not remote.forward_alive(host):
            del _clients[host]
    if host not in _clients:
        try:
            from podman import PodmanClient
        except ImportError:  # pragma: no cover - a dependency of the package
            raise QpodError("podman-py is not installed (pip install podman)", EXIT_QPOD) from None
        if host:
            from qpod_engine.podman import remote

            url = "unix://" + remote.api_socket(remote.connection(host))
        else:
            from qpod_engine.config import environments as config

            url = ensure_service(config.load_settings().service_idle_seconds)
        _clients[host] = PodmanClient(base_url=url, timeout=120)
    return _clients[host]


def _api_error(err: Exception) -> QpodError:
    from podman import errors as perr

    if isinstance(err, perr.APIError):
        return QpodError(f"podman: {err.explanation or err}", EXIT_QPOD)
    return QpodError(f"podman: {err}", EXIT_QPOD)


# --- container spec -------------------------------------------------------------------------


def runtime_name(setting: str) -> str | None:
    """``auto`` picks runc where installed: crun fails on cgroups-hybrid hosts like these."""
    if setting == "auto":
        return "runc" if shutil.which("runc") else None
    return setting or None


def _ulimit_pair(value: str) -> tuple[int, int]:
    soft, _, hard = value.partition(":")
    return int(soft), int(hard or soft)


def default_ulimits() -> dict[str, str]:
    """Limits podman can really set: podman's own defaults ask for more than these machines'
    hard limits and the container fails (setrlimit: Operation not permitted)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nofile = min(hard, 1048576) if hard != resource.RLIM_INFINITY else 1048576
    return {"nofile": f"{nofile}:{nofile}", "nproc": "8192:8192"}


def worktree_git_dirs(root: str) -> list[str]:
    """The git dirs outside ``root`` a linked worktree needs (its own and the main repository's),
    validated the way git links them: ``.git`` and ``commondir`` are files the repository's
    code can rewrite, so a path read from them is mounted only when it is really this
    worktree's entry (``<common>/worktrees/<id>``, whose ``gitdir`` names ``root/.git``).
    Anything else is refused: a repository never chooses a host directory to mount."""
    from qpod_engine.base.gitinfo import common_dir, git_dir, read_small

    gd = git_dir(root)
    if gd is None or gd == os.path.join(root, ".git"):
        return []
    cd = common_dir(gd)
    back = ""
    try:  # never blocking, a few KiB at most: a FIFO or /dev/zero there is refused below
        back = os.path.normpath(read_small(os.path.join(gd, "gitdir")).decode("utf-8", "replace").strip())
    except OSError:
        pass
    rroot = os.path.realpath(root)
    if (
        os.path.basename(os.path.dirname(gd)) != "worktrees"
        or os.path.realpath(cd) != os.path.realpath(os.path.dirname(os.path.dirname(gd)))
        or os.path.realpath(back) != os.path.join(rroot, ".git")
    ):
        raise QpodError(
            f"{root}/.git names {gd} (common dir {cd}), which is not a git worktree entry of this "
            "repository: refusing to mount it (run 'git worktree repair' if it moved)",
            EXIT_QPOD,
        )
    return [d for d in dict.fromkeys([gd, cd]) if not d.startswith(root + "/")]


def container_spec(
    env: dict[str, Any],
    root: str,
    settings: dict[str, Any],
    transport: str = naming.TRANSPORT_AGENT,
    remote_rootless: bool | None = None,
) -> dict[str, Any]:
    """podman-py ``containers.create`` keyword arguments for the warm container of ``env`` x ``root``:
    the agent is its main process (static, mounted read-only), listening in a directory of the
    user's state dir that only the user can open. With ``transport`` "exec" (the agent could not
    run in this image or under this environment's restrictions) the main process only waits,
    and commands go through ``podman exec``. ``remote_rootless``: made by the podman of the
    environment's host, rootless or not there (the paths are the same there)."""
    from qpod_engine.base.fileio import private_dir

    name = naming.container_name(env["name"], root)
    workdir = naming.container_root(env, root)
    chash = naming.container_hash(env, root)
    agent_dir = _forget_stop(private_dir(naming.agent_dir(name)))
    mounts = [{"type": "bind", "source": p, "target": p, "read_only": False} for p in naming.shared_paths(env)]
    mounts.append({"type": "bind", "source": root, "target": workdir, "read_only": False})
    if transport == naming.TRANSPORT_AGENT:
        mounts += [
            {"type": "bind", "source": agent_dir, "target": naming.AGENT_SOCKET_DIR, "read_only": False},
            {
                "type": "bind",
                "source": naming.agent_program_dir(),
                "target": naming.AGENT_PROGRAM_DIR,
                "read_only": True,
            },
        ]
    if remote_rootless is None and naming.host_terminals(env):
        mounts.append({"type": "bind", "source": "/dev/pts", "target": "/dev/pts", "read_only": False})
    for extra in worktree_git_dirs(root):
        mounts.append({"type": "bind", "source": extra, "target": extra, "read_only": False})
    for spec in env["mounts"]:
        host, target, ro = _parse_mount(spec)
        mounts.append({"type": "bind", "source": os.path.expanduser(host), "target": target, "read_only": ro})
    if env.get("distribute"):
        from qpod_engine.podman import distribute

        mounts += distribute.build_mounts(env, name)
    limits = {**default_ulimits(), **settings.get("ulimits", {}), **env["ulimits"]}
    kwargs: dict[str, Any] = {
        "image": env["image"],
        "name": name,
        "entrypoint": [f"{naming.AGENT_PROGRAM_DIR}/qpod-agent"],
        "command": ["--socket", naming.AGENT_SOCKET, "--hash", chash],
        "labels": {
            naming.LABEL: "1",
            naming.LABEL_ENV: env["name"],
            naming.LABEL_REPO: root,
            naming.LABEL_HASH: chash,
            naming.LABEL_ROOT_ID: naming.root_id(root),
            naming.LABEL_CONFIG: naming.config_id(),
            naming.LABEL_TRANSPORT: transport,
            **({naming.LABEL_HOST: env["host"]} if env.get("host") else {}),
        },
        "mounts": mounts,
        # the container's own pid namespace (the agent forwards signals inside it); host
        # network, as toolbx and distrobox do for dev shells
        "network_mode": "host",
        "ulimits": [
            {"Name": k, "Soft": s, "Hard": h} for k, (s, h) in ((k, _ulimit_pair(v)) for k, v in limits.items())
        ],
        "detach": True,
    }
    if env.get("distribute"):
        from qpod_engine.podman import distribute

        kwargs["environment"] = distribute.build_environment(_image_path(env["image"]))
    if transport != naming.TRANSPORT_AGENT:
        kwargs.pop("entrypoint")
        kwargs["command"] = ["sleep", "2147483647"]  # (as PID 1 it ignores SIGTERM: stop kills it)
    setting = settings.get("runtime", "auto")
    rt = runtime_name(setting) if remote_rootless is None else (None if setting == "auto" else setting)
    if rt:
        kwargs["runtime"] = rt
    if env["cap_add"]:
        kwargs["cap_add"] = list(env["cap_add"])
    if env["seccomp"]:
        kwargs["seccomp_profile_path"] = env["seccomp"]
    rootless = is_rootless() if remote_rootless is None else remote_rootless
    if rootless and env["run_as"] == "user":
        kwargs["userns_mode"] = "keep-id"  # the agent runs as the user, so do the commands
    else:
        kwargs["user"] = "0:0"  # rootful: the agent switches to the invoking user per command
    kwargs.update(env["podman_options"])
    return kwargs


def _image_path(image: str) -> str:
    """The PATH the image sets (the agent's default when it sets none)."""
    try:
        found = client().images.get(image).attrs.get("Config", {}).get("Env") or []
    except Exception:  # noqa: BLE001 - not there yet or podman busy: the default
        found = []
    for item in found:
        if isinstance(item, str) and item.startswith("PATH="):
            return item[len("PATH=") :]
    return "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _parse_mount(spec: str) -> tuple[str, str, bool]:
    from qpod_engine.config.fields import parse_mount

    return parse_mount(spec)


# --- images ---------------------------------------------------------------------------------


def image_present(ref: str) -> bool:
    try:
        return bool(client().images.exists(ref))
    except Exception as err:  # noqa: BLE001 - any API failure means "cannot tell": report it
        raise _api_error(err) from None


def pull_image(ref: str, progress: Callable[[str, int, int], None] | None = None) -> None:
    """Pull ``ref`` as ``podman pull`` would: the credentials podman would use for it
    (registry.credentials: REGISTRY_AUTH_FILE and the standard auth files), registries.conf's
    TLS settings. ``progress(layer, done, total)`` gets bytes where podman reports them (its
    Docker-compatible endpoint does, while a layer downloads; total 0: not known) and each
    step's text otherwise. A failure is one line naming the image, with a hint from the
    registry's own answer (registry.diagnose), not from podman's wording."""
    import json

    from qpod_engine.podman.registry import registry_auth_header, split_ref

    cl = client()
    _reg, _name, ver = split_ref(ref)
    # a digest goes whole; a tag apart (an implicit one is "latest")
    params = {"fromImage": ref} if "@" in ref else {"fromImage": ref.removesuffix(f":{ver}"), "tag": ver}
    last_error = None
    try:
        resp = cl.api.post(
            "/images/create", params=params, headers=registry_auth_header(ref), stream=True, compatible=True
        )
        if resp.status_code >= 400:
            last_error = _explanation(resp)
        else:
            for line in resp.iter_lines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(event, dict):
                    continue
                if event.get("error"):
                    last_error = event["error"]
                elif progress:
                    detail = event.get("progressDetail") or {}
                    layer = str(event.get("id") or "")
                    if detail.get("total"):
                        progress(layer, int(detail.get("current", 0)), int(detail["total"]))
                    elif event.get("status"):
                        progress(f"{layer} {event['status']}".strip(), 0, 0)
    except Exception as err:  # noqa: BLE001 - podman unreachable mid-pull: one line all the same
        last_error = str(err) or type(err).__name__
    if last_error or not cl.images.exists(ref):
        raise QpodError(pull_failure_message(ref, last_error or "image not found after pull"), EXIT_QPOD)


def _explanation(resp: Any) -> str:
    try:
        data = resp.json()
        return str(data.get("message") or data.get("cause") or data)
    except Exception:  # noqa: BLE001
        return f"HTTP {resp.status_code}"


def pull_failure_message(ref: str, detail: str) -> str:
    """``cannot pull image REF: podman's words; a hint`` (the hint from the registry's answer)."""
    from qpod_engine.podman.registry import diagnose, registry_of

    detail = " ".join(str(detail).split())
    registry = registry_of(ref)
    problem = diagnose(ref) if registry != "localhost" else None
    if problem is not None:
        hint = f"; {problem.hint}"
    elif registry != "localhost":
        hint = f"; check the name, or run 'podman login {registry}' if it needs credentials"
    else:
        hint = "; a localhost/ image is built here, not pulled (qpod demo, or podman build)"
    return f"cannot pull image {ref}: {detail}{hint}"


def _print_pull_progress(ref: str) -> Callable[[str, int, int], None]:
    """A one-line progress bar on stderr (only when stderr is a terminal)."""
    layers: dict[str, tuple[int, int]] = {}
    tty = sys.stderr.isatty()

    def show(layer: str, done: int, total: int) -> None:
        if total:
            layers[layer] = (done, total)
        d = sum(a for a, _ in layers.values())
        t = sum(b for _, b in layers.values()) or 1
        if tty:
            width = 30
            filled = int(width * d / t)
            sys.stderr.write(
                f"\rqpod: pulling {ref} [{'#' * filled}{'.' * (width - filled)}] {d / 1e6:.1f}/{t / 1e6:.1f} MB"
            )
            sys.stderr.flush()

    sys.stderr.write(f"qpod: pulling {ref}\n" if not tty else "")
    return show


# --- containers -----------------------------------------------------------------------------


@dataclass
class ContainerFacts:
    """What the launcher needs to exec into a warm container without asking podman."""

    name: str
    id: str
    pid: int
    pid_start: str
    hash: str
    root_id: str
    transport: str = naming.TRANSPORT_AGENT
    host: str = ""  # the connection of an environment on another host ("": this machine)
    ssh: list[str] | None = None  # there: what the client runs to reach the agent (remote.bridge_argv)


def ensure_container(env: dict[str, Any], root: str, settings: dict[str, Any]) -> ContainerFacts:
    """The running warm container of (env, root): reused, started, or (re)created when its
    config hash changed or it was removed behind qpod's back. Pulls the image if missing.
    On another host (``host:``) only after that host is seen to have this very tree."""
    from podman import errors as perr

    host = env.get("host") or None
    name = naming.container_name(env["name"], root)
    want_hash = naming.container_hash(env, root)
    if host:
        from qpod_engine.podman import remote

        conn = remote.connection(host)
        remote.check_tree(conn, root, [os.path.expanduser(_parse_mount(m)[0]) for m in env["mounts"]], name)
    cl = client(host)
    try:
        rid = naming.root_id(root)
        ctr = _reusable_container(cl, env, root, name, want_hash, rid)
        created = ctr is None
        if created:
            ctr = _create_container(cl, env, root, settings, host)
        ctr.reload()
        transport = ctr.labels.get(naming.LABEL_TRANSPORT, naming.TRANSPORT_AGENT)
        try:
            _start(ctr, name)
        except perr.APIError:
            if host or created:
                raise
            # a container left behind in a state podman cannot start from (its processes
            # killed with the session, a machine restored from a snapshot): made again
            ctr = _remake(cl, ctr, env, root, settings, name, transport)
        if host:
            # its agent's socket is on that host: the bridge waits for it (preload/bridge.c)
            if ctr.status != "running":
                raise QpodError(
                    f"container {name} did not start on host {host} (state {ctr.status}); see "
                    f"'podman --connection {host} logs {name}'",
                    EXIT_QPOD,
                )
            facts = ContainerFacts(name, ctr.id, 0, "", want_hash, rid, transport, host, remote.bridge_argv(conn, name))
            naming.write_facts(facts.__dict__)
            return facts
        ctr, transport = _reachable(cl, ctr, env, root, settings, name, transport)
    except QpodError:
        raise
    except perr.APIError as err:
        raise QpodError(
            f"cannot start container {name}: {' '.join(str(err.explanation or err).split())}", EXIT_QPOD
        ) from None
    pid = int(ctr.attrs.get("State", {}).get("Pid") or 0)
    facts = ContainerFacts(name, ctr.id, pid, naming.proc_start_time(pid) or "", want_hash, rid, transport)
    naming.write_facts(facts.__dict__)
    return facts


def _reusable_container(cl: Any, env: dict[str, Any], root: str, name: str, want_hash: str, rid: str) -> Any:
    """Container ``name`` when it can serve (env, root) as they are now, else None (after
    making way for a new one). Idle retired containers of (env, root) are removed on the way."""
    from podman import errors as perr

    try:
        ctr = cl.containers.get(name)
    except perr.NotFound:
        ctr = None
    if ctr is not None and (
        ctr.labels.get(naming.LABEL_HASH) != want_hash or ctr.labels.get(naming.LABEL_ROOT_ID) != rid
    ):
        # config changed, or the repository was re-created at this path: the old
        # container no longer matches (its bind mount would show a deleted directory);
        # commands running in it are never killed for that: it is retired, not removed
        _replace(ctr, name)
        ctr = None
    if _has_retired(name):
        _remove_idle_retired(cl, env["name"], root, name)
    if ctr is not None and ctr.status == "stopping":
        # left so by 'podman system migrate' after a reboot or a killed session
        # (podman_userns): nothing runs in it, and podman will not start it again
        ctr.remove(force=True)
        ctr = None
    return ctr


def _create_container(cl: Any, env: dict[str, Any], root: str, settings: dict[str, Any], host: str | None) -> Any:
    """A new container of (env, root), its image pulled first when missing (on another host,
    by that host's podman, which also says whether it runs rootless)."""
    if host:
        if not cl.images.exists(env["image"]):
            sys.stderr.write(f"qpod: pulling {env['image']} on host {host}\n")
            cl.images.pull(env["image"])
        rootless = bool(cl.info().get("host", {}).get("security", {}).get("rootless"))
        return cl.containers.create(**container_spec(env, root, settings, remote_rootless=rootless))
    if not cl.images.exists(env["image"]):
        pull_image(env["image"], _print_pull_progress(env["image"]))
        if sys.stderr.isatty():
            sys.stderr.write("\n")
    return cl.containers.create(**container_spec(env, root, settings))


def _start(ctr: Any, name: str) -> None:
    """Start the container unless it runs."""
    from qpod_engine.base.fileio import private_dir

    if ctr.status != "running":
        # the agent's socket dir is a mount source: recreated if the state dir was removed;
        # a note of the last stop is not this run's
        _forget_stop(private_dir(naming.agent_dir(name)))
        ctr.start()
        ctr.reload()


def _remake(
    cl: Any, ctr: Any, env: dict[str, Any], root: str, settings: dict[str, Any], name: str, transport: str
) -> Any:
    """The container removed and created again (with ``transport``), started."""
    ctr.remove(force=True)
    ctr = cl.containers.create(**container_spec(env, root, settings, transport))
    _start(ctr, name)
    return ctr


def _processes_gone(ctr: Any) -> bool:
    """Whether the container's PID 1, as podman last knew it, no longer exists on this host."""
    pid = int(ctr.attrs.get("State", {}).get("Pid") or 0)
    return pid > 0 and naming.proc_start_time(pid) is None


def _reachable(
    cl: Any, ctr: Any, env: dict[str, Any], root: str, settings: dict[str, Any], name: str, transport: str
) -> tuple[Any, str]:
    """The local container and its transport once commands can reach it: its agent answers
    (restarted once for that), or it is made again with podman exec as the transport. Raises
    QpodError when it does not run."""
    from podman import errors as perr

    from qpod_engine.base.fileio import private_dir

    up = ctr.status == "running" and (transport != naming.TRANSPORT_AGENT or _agent_up(ctr, name))
    if not up and transport == naming.TRANSPORT_AGENT and ctr.status == "running":
        if _processes_gone(ctr):
            # podman says it runs, but its processes were killed behind podman's back (with
            # the session, or a machine restored from a snapshot): podman can neither stop
            # nor start it again ("cannot start a container that has stopped"), only remove it
            ctr = _remake(cl, ctr, env, root, settings, name, transport)
        else:
            # running, yet its agent does not answer here: the socket dir it listens in was
            # removed (the state dir deleted or moved); a restart mounts the new one
            private_dir(naming.agent_dir(name))
            try:
                ctr.restart(timeout=5)
                ctr.reload()
            except perr.APIError:
                ctr = _remake(cl, ctr, env, root, settings, name, transport)
        up = ctr.status == "running" and _agent_up(ctr, name)
    if not up and transport == naming.TRANSPORT_AGENT:
        # the agent cannot run here (a seccomp profile that forbids its socket, an image or
        # host it cannot start on): the container is made again with podman exec as the
        # transport, and the reason is kept for qpod ps and doctor
        why = _agent_failure(ctr)
        transport = naming.TRANSPORT_EXEC
        ctr = _remake(cl, ctr, env, root, settings, name, transport)
        up = ctr.status == "running"
        naming.note_fallback(name, why)
    if not up:
        ctr.reload()
        raise QpodError(f"container {name} did not start (state {ctr.status}); see 'podman logs {name}'", EXIT_QPOD)
    return ctr, transport


RETIRED_MARK = "-was-"


def _busy(ctr: Any) -> bool:
    """Whether commands run in the container: processes besides its PID 1 (the agent, or the
    exec transport's sleep). When podman cannot say, busy: nothing is killed on a guess."""
    if ctr.status != "running":
        return False
    try:
        return len(ctr.top().get("Processes") or []) > 1
    except Exception:  # noqa: BLE001 - podman-py raises several types here; any means "cannot tell"
        return True


def _replace(ctr: Any, name: str) -> None:
    """Make way for a container of the new config. An idle one is removed; a busy one is
    renamed NAME-was-ID (qpod ps shows it as outdated), its agent's directory moved along (the
    bind mount follows the directory) and marked "retire": the agent serves its running
    commands to their end, then stops, and the next start of NAME removes it."""
    if not _busy(ctr):
        ctr.remove(force=True)
        return
    retired = f"{name}{RETIRED_MARK}{ctr.id[:12]}"
    ctr.rename(retired)
    old_dir, new_dir = naming.agent_dir(name), naming.agent_dir(retired)
    try:
        os.rename(old_dir, new_dir)
        with open(os.path.join(new_dir, "retire"), "x"):
            pass
    except OSError:
        pass  # an exec-transport container, or no agent dir: it is removed once idle all the same
    ctr.reload()
    if not _busy(ctr):  # its last command ended meanwhile
        ctr.remove(force=True)
        shutil.rmtree(new_dir, ignore_errors=True)


def _has_retired(name: str) -> bool:
    """Whether a retired container of ``name`` may be left: its agent dir, moved along when it
    was retired, is still there (a local listing: podman is asked only then)."""
    try:
        return any(e.startswith(name + RETIRED_MARK) for e in os.listdir(os.path.dirname(naming.agent_dir(name))))
    except OSError:
        return False


def _remove_idle_retired(cl: Any, env_name: str, root: str, name: str) -> None:
    """Retired containers of (env, root) whose commands have all ended: removed with their
    agent directory."""
    try:
        found = cl.containers.list(
            all=True,
            filters={"label": [f"{naming.LABEL_CONFIG}={naming.config_id()}", f"{naming.LABEL_ENV}={env_name}"]},
        )
    except Exception:  # noqa: BLE001 - tidying up never stops a command from starting
        return
    for old in found:
        if old.name.startswith(name + RETIRED_MARK) and old.labels.get(naming.LABEL_REPO) == root and not _busy(old):
            _remove_quietly(old)


def _remove_quietly(ctr: Any) -> None:
    """Remove a retired container and its agent directory (already gone: fine)."""
    try:
        ctr.remove(force=True)
    except Exception:  # noqa: BLE001 - removed meanwhile by another qpod, or podman busy: next time
        return
    shutil.rmtree(naming.agent_dir(ctr.name), ignore_errors=True)


NOT_FOUND = "qpod:not-found"


def command_in_container(env_name: str, root: str, command: str) -> str | bool | None:
    """Where ``command`` is in the running container of (env, root), as its shell finds it:
    the path (or what else the shell calls it), False when it is not there, None when that cannot be told (no
    running container yet, no shell in the image, podman unreachable)."""
    try:
        name = naming.container_name(env_name, root)
        ctr = client(_host_of(name)).containers.get(name)
        if ctr.status != "running":
            return None
        # the marker tells "not found" (127 in ash and dash, 1 in bash) from "no shell to ask"
        code, out = ctr.exec_run(
            ["/bin/sh", "-c", 'command -v -- "$1" || echo "$2"', "sh", command, NOT_FOUND], demux=True
        )
    except Exception:  # noqa: BLE001 - a courtesy of qpod which: never its failure
        return None
    stdout = out[0] if isinstance(out, tuple) else out
    lines = (stdout or b"").decode("utf-8", "replace").strip().splitlines()
    if code != 0 or not lines:
        return None
    if lines[-1] == NOT_FOUND:
        return False
    return lines[-1] if lines[-1].startswith("/") else "a shell builtin or busybox applet"


def _agent_failure(ctr: Any) -> str:
    """The agent's last words (its one-line error), for the record of why exec is used."""
    try:
        out = ctr.logs(tail=5, stream=False)
        text = (
            out.decode("utf-8", "replace")
            if isinstance(out, (bytes, bytearray))
            else b"".join(out).decode("utf-8", "replace")
        )
    except Exception:  # noqa: BLE001 - the reason is a courtesy; the fallback goes on without it
        text = ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else f"the agent did not start (container state {ctr.status})"


def _agent_up(ctr: Any, name: str, timeout: float = 15.0) -> bool:
    """Wait until the agent listens (it binds its socket a few ms after the container starts);
    False when the container exits first."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if naming.agent_answers(name):
            return True
        ctr.reload()
        if ctr.status != "running" or _processes_gone(ctr):
            return False
        time.sleep(0.01)
    return False


def remote_hosts(snap: dict[str, Any] | None = None, build_hosts: bool = True) -> list[str]:
    """The connections the configured environments run on (``host:``) and, with
    ``build_hosts``, those they distribute their compiles to (``distribute:``), in name order."""
    from qpod_engine.podman.distribute import hosts

    snap = snap if snap is not None else _current_snapshot()
    envs = (snap or {}).get("envs", {}).values()
    found = {e["host"] for e in envs if e.get("host")}
    if build_hosts:
        found |= {h for e in envs for h, _ in hosts(e)}
    return sorted(found)


def list_containers(all_configs: bool = False, unreachable: list[str] | None = None) -> list[dict[str, Any]]:
    """This config's containers (every qpod container of the podman instance with
    ``all_configs``), on this machine and on the hosts environments name: name, env, repo,
    image, state, started (epoch seconds or None), transport, host ("" here). Another user's or
    another config's containers are never listed, so never stopped. A host that cannot be
    reached is named in ``unreachable`` (with why) instead of failing the whole list."""
    from qpod_engine.podman import distribute

    label = naming.LABEL if all_configs else f"{naming.LABEL_CONFIG}={naming.config_id()}"
    snap = _current_snapshot()
    ctrs: dict[str, Any] = {}
    for host in [None, *remote_hosts(snap)]:
        try:
            found = client(host).containers.list(all=True, filters={"label": label})
        except QpodError as err:
            if host is None or unreachable is None:
                raise
            unreachable.append(f"{host}: {err}")
            continue
        except Exception as err:  # noqa: BLE001
            if host is None or unreachable is None:
                raise _api_error(err) from None
            unreachable.append(f"{host}: {_api_error(err)}")
            continue
        for c in found:
            ctrs.setdefault(c.id, c)  # (a host that is this machine lists the same ones)
    out = []
    for c in ctrs.values():
        attrs = c.attrs
        state = attrs.get("State")
        status = state if isinstance(state, str) else (state or {}).get("Status", "unknown")
        started = attrs.get("StartedAt")
        if RETIRED_MARK in c.name and status != "running" and c.labels.get(naming.LABEL_CONFIG) == naming.config_id():
            _remove_quietly(c)  # retired, and its last command has ended: nothing left to show
            continue
        repo = c.labels.get(naming.LABEL_REPO, "")
        role = c.labels.get(distribute.LABEL_ROLE, "")
        env = _environment_entry(snap, c.labels.get(naming.LABEL_ENV, ""), repo) if not role else None
        outdated = RETIRED_MARK in c.name or (
            env is not None and c.labels.get(naming.LABEL_HASH) != naming.container_hash(env, repo)
        )
        out.append(
            {
                "name": c.name,
                "id": c.id[:12],
                "environment": c.labels.get(naming.LABEL_ENV, ""),
                "repository": c.labels.get(naming.LABEL_REPO, ""),
                "image": attrs.get("Image") or "",
                "state": status,
                "started": started if isinstance(started, (int, float)) and started > 0 else None,
                "transport": c.labels.get(naming.LABEL_TRANSPORT, naming.TRANSPORT_AGENT),
                "outdated": outdated,  # made for another config: replaced once its commands end
                "host": c.labels.get(naming.LABEL_HOST, ""),
                "role": role,  # "distccd": an environment's distccd on a build host (distribute:)
            }
        )
    return sorted(out, key=lambda c: (c["environment"], c["repository"]))


def _current_snapshot() -> dict[str, Any] | None:
    """The compiled config as it stands now (None when it cannot be read: then nothing is
    called outdated)."""
    from qpod_engine.config import snapshot

    try:
        return snapshot.load()
    except QpodError:
        return None


def _environment_entry(snap: dict[str, Any] | None, name: str, root: str) -> dict[str, Any] | None:
    """The environment a container's labels name, as it applies now (a repository's own file
    included); None when unknown or broken."""
    from qpod_engine.config import snapshot

    if snap is None:
        return None
    env = snapshot.environment_entry(snap, name, root)
    return env if env and "error" not in env and not env.get("absent") else None


def _host_of(name: str) -> str | None:
    """The connection container ``name`` runs on (None: this machine), from its facts, else from
    its name: a container of a remote environment is named after that environment."""
    facts = naming.read_facts(name)
    if facts is not None:
        return facts.get("host") or None
    snap = _current_snapshot()
    from qpod_engine.podman.distribute import distccd_name, hosts

    for env_name, env in ((snap or {}).get("envs") or {}).items():
        for h, _slots in hosts(env):
            if name == distccd_name(env_name, h):
                return h
    named = [
        (len(env_name), env["host"])
        for env_name, env in ((snap or {}).get("envs") or {}).items()
        if env.get("host") and name.startswith(f"qpod-{env_name}-")
    ]
    return max(named)[1] if named else None


def _forget_stop(agent_dir: str) -> str:
    try:
        os.unlink(os.path.join(agent_dir, "stopped-by"))
    except OSError:
        pass
    return agent_dir


def stop_containers(names: list[str], remove: bool = False, by: str = "qpod stop") -> list[str]:
    """Stop (and with ``remove``, remove) the containers; a command running in one ends as its
    signal ends it, and its client says the container was stopped ``by`` whom (a note in the
    agent's dir, read only then)."""
    done = []
    for name in names:
        try:
            from qpod_engine.base.fileio import write_atomic

            write_atomic(os.path.join(naming.agent_dir(name), "stopped-by"), f"by {by}\n")
        except OSError:
            pass  # no agent dir (a container of the exec transport, another host): no note
        try:
            ctr = client(_host_of(name)).containers.get(name)
            ctr.stop(timeout=5)
            if remove:
                ctr.remove(force=True)
        except Exception as err:  # noqa: BLE001
            raise _api_error(err) from None
        naming.forget_facts(name)
        done.append(name)
    return done


def restart_container(name: str) -> None:
    try:
        client(_host_of(name)).containers.get(name).restart(timeout=5)
    except Exception as err:  # noqa: BLE001
        raise _api_error(err) from None
    naming.forget_facts(name)
    # the note of the stop this restart made is not the next stop's: a later one from outside
    # qpod must not be blamed on this restart's stopper
    _forget_stop(naming.agent_dir(name))


def container_logs(name: str, tail: int = 200) -> str:
    try:
        out = client(_host_of(name)).containers.get(name).logs(tail=tail, stream=False)
    except Exception as err:  # noqa: BLE001
        raise _api_error(err) from None
    if isinstance(out, (bytes, bytearray)):
        return out.decode("utf-8", "replace")
    return b"".join(out).decode("utf-8", "replace") if isinstance(out, Iterator) else str(out)
