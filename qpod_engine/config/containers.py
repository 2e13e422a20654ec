"""Names, labels and cached facts of qpod's warm containers. Stdlib only: the launcher uses
this on every command to find a running container without asking podman (~100 ms saved)."""

from __future__ import annotations

import json
import os

from qpod_engine.base import paths

# typing is imported for type checkers only: the launcher's hot path imports this module
# and ``import typing`` costs ~2 ms a command
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

LABEL = "qpod"
LABEL_ENV = "qpod.env"
LABEL_REPO = "qpod.repo"
LABEL_HASH = "qpod.hash"
LABEL_ROOT_ID = "qpod.root-id"  # the repository directory the container mounted (dev:inode)
LABEL_HOST = "qpod.host"  # the podman connection the container runs on (absent: this machine)
LABEL_CONFIG = "qpod.config"  # which config (and state) owns the container: see config_id()
# Never passed into a container, whatever an environment's lists say: the host side of qpod.
ALWAYS_DENIED = ("LD_PRELOAD", "QPOD_*")
# Variables that describe the host and would mislead a program in the container: not passed
# unless an environment names one exactly in its passthrough list (PATH: the image's own).
HOST_SPECIFIC = (
    "PATH",
    "LD_*",
    "TMPDIR",
    "XDG_RUNTIME_DIR",
    "DBUS_SESSION_BUS_ADDRESS",
    "HOSTNAME",
    "PWD",
    "OLDPWD",
    "SHLVL",
    "_",
)
# the agent's socket directory (host: agent_dir(name), 0700) and the agent itself, as every
# container sees them
AGENT_SOCKET_DIR = "/run/qpod"
AGENT_SOCKET = AGENT_SOCKET_DIR + "/agent.sock"
AGENT_PROGRAM_DIR = "/run/qpod-agent"
# how commands reach the container: the agent (native exec), or podman exec where the agent
# cannot run (chosen by itself when the container is made; see podman_backend.ensure_container)
LABEL_TRANSPORT = "qpod.transport"
TRANSPORT_AGENT = "agent"
TRANSPORT_EXEC = "exec"
# bump when the way containers are created (or the agent's protocol) changes, so that old ones
# are recreated
CONTAINER_LAYOUT = 3


def config_id() -> str:
    """Identity of the config this qpod runs with (its config and state dirs, and the user):
    containers are labelled with it, and every command acts on its own containers only, so two
    users or two configs on one podman never stop or replace each other's."""
    import hashlib

    blob = "\0".join([os.path.realpath(paths.config_dir()), os.path.realpath(paths.state_dir()), str(os.geteuid())])
    return hashlib.sha1(blob.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def container_name(env_name: str, root: str) -> str:
    """``qpod-ENV-REPO-HASH``: readable in ``podman ps``, unique per (config, environment,
    repository)."""
    import hashlib
    import re

    base = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(root) or "root")[:40]
    digest = hashlib.sha1(f"{config_id()}\0{root}".encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"qpod-{env_name}-{base}-{digest}"


def container_root(env: dict[str, Any], root: str) -> str:
    """Where the repository appears inside the container."""
    return env.get("workdir_root") or root


def container_hash(env: dict[str, Any], root: str) -> str:
    """Changes whenever the container would be created differently."""
    import hashlib

    rootless = os.geteuid() != 0
    parts = [env["hash"], root, rootless, CONTAINER_LAYOUT] + (["host-pts"] if host_terminals(env) else [])
    blob = json.dumps(parts, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def host_terminals(env: dict[str, Any]) -> bool:
    """Whether the container sees this machine's terminals at /dev/pts: a path an editor hands a
    command there (gdb's 'tty /dev/pts/N' from vim's Termdebug, Emacs' inferior tty) then names
    the same terminal, and 'tty' names yours. Only when anyone may create a pty through
    /dev/pts/ptmx (0666, as /dev/ptmx is; setup.sh makes it so): in the container /dev/ptmx
    leads there, and a ptmx of mode 000 would leave its programs unable to open a pty."""
    import stat

    if env.get("host"):
        return False
    try:
        st = os.stat("/dev/pts/ptmx")
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_mode & 0o666 == 0o666


def path_maps(env: dict[str, Any], root: str) -> list[tuple[str, str]]:
    """(host prefix, container prefix) pairs, first match wins: the repository, then the
    environment's mounts in their order, then the shared paths (home, /tmp: the same path)."""
    out = [(root, container_root(env, root))]
    for spec in env.get("mounts", ()):
        host, target = spec.split(":")[:2]
        out.append((os.path.expanduser(host), target))
    out += [(p, p) for p in shared_paths(env)]
    return out


def shared_paths(env: dict[str, Any]) -> list[str]:
    """The host paths of the environment's ``share`` (home: the invoking user's home, sudo's
    user's too; tmp: /tmp), where they exist; podman mounts parents before what lies within."""
    import pwd

    out = []
    for what in env.get("share", []):
        if what == "home":
            try:
                path = pwd.getpwuid(invoking_user()[0]).pw_dir
            except KeyError:
                continue
        else:
            path = "/tmp"
        path = os.path.realpath(path)
        if path != "/" and os.path.isdir(path) and path not in out:
            out.append(path)
    return out


def map_path(path: str, env: dict[str, Any], root: str) -> str | None:
    """Host path -> container path, for paths inside the repository or a mount; else None.
    (The client does the same from the launch spec's ``map`` lines.)"""
    for host, inside in path_maps(env, root):
        if path == host or path.startswith(host.rstrip("/") + "/"):
            rest = path[len(host) :] if host != "/" else path
            return inside + rest if inside != "/" else (rest or "/")
    return None


def invoking_user() -> tuple[int, int]:
    """(uid, gid) of the person behind this process: SUDO_UID/SUDO_GID under sudo."""
    try:
        return int(os.environ["SUDO_UID"]), int(os.environ.get("SUDO_GID", os.environ["SUDO_UID"]))
    except (KeyError, ValueError):
        return os.getuid(), os.getgid()


def proc_start_time(pid: int) -> str | None:
    """Start time (clock ticks since boot) of ``pid``: with the pid, identifies a process for good."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and ')': split after the last ')'
    fields = data[data.rindex(b")") + 2 :].split()
    return fields[19].decode()


def agent_dir(name: str) -> str:
    """Host side of AGENT_SOCKET_DIR for container ``name``: only its user can open it."""
    return os.path.join(paths.state_dir(), "agents", name)


def agent_program_dir() -> str:
    """The folder holding the static agent (built by ``pip install``), mounted read-only."""
    return os.path.join(paths.LIB_DIR, "agent")


def agent_answers(name: str) -> bool:
    """Whether the agent of container ``name`` accepts connections (reached through the
    directory's descriptor: a deep state dir would not fit a socket address)."""
    import _socket

    try:
        dfd = os.open(agent_dir(name), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.connect(f"/proc/self/fd/{dfd}/agent.sock")
        return True
    except OSError:
        return False
    finally:
        s.close()
        os.close(dfd)


def client_program() -> str:
    return os.path.join(paths.LIB_DIR, "qpod-client")


def facts_path(name: str) -> str:
    return os.path.join(paths.containers_cache_dir(), f"{name}.json")


def note_fallback(name: str, why: str) -> None:
    """Remember why container ``name`` uses podman exec (shown by qpod ps and qpod doctor)."""
    from qpod_engine.base.fileio import write_atomic

    write_atomic(os.path.join(paths.containers_cache_dir(), f"{name}.fallback"), why + "\n")


def fallback_reason(name: str) -> str | None:
    try:
        with open(os.path.join(paths.containers_cache_dir(), f"{name}.fallback"), encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError:
        return None


def facts_lock(name: str) -> str:
    """Held while container ``name`` is created or started."""
    return os.path.join(paths.containers_cache_dir(), f"{name}.lock")


def read_facts(name: str) -> dict[str, Any] | None:
    try:
        with open(facts_path(name), encoding="utf-8") as f:
            facts: dict[str, Any] = json.load(f)  # written by write_facts
            return facts
    except (OSError, ValueError):
        return None


def write_facts(facts: dict[str, Any]) -> None:

    from qpod_engine.base.fileio import write_atomic

    write_atomic(facts_path(facts["name"]), json.dumps(facts))


def forget_facts(name: str) -> None:
    try:
        os.unlink(facts_path(name))
    except OSError:
        pass


def root_id(root: str) -> str:
    """Identity of the repository directory: a repository deleted and cloned again at the same
    path is a new directory, and a container still mounting the old one must be recreated."""
    try:
        st = os.stat(root)
    except OSError:
        return ""
    return f"{st.st_dev}:{st.st_ino}"


def warm_facts(name: str, want_hash: str, root: str) -> dict[str, Any] | None:
    """The cached facts when the container is still running with the wanted config and mount."""
    facts = read_facts(name)
    if (
        facts
        and facts.get("hash") == want_hash
        and facts.get("root_id") == root_id(root)
        and (facts.get("host") or proc_start_time(facts.get("pid", 0)) == facts.get("pid_start"))
    ):
        # (on another host the process cannot be looked at from here: the bridge starts a
        # stopped container, and the client forgets these facts when it is gone)
        return facts
    return None


# --- who a command runs as in the container, and what it sees of the environment ------------


def identity(env: dict[str, Any]) -> tuple[int, int, list[int]] | None:
    """(uid, gid, groups) the agent switches to: rootful podman runs commands as the invoking
    user (the one behind sudo too) with all their groups; None where the container's own user
    is right (rootless keep-id, ``run_as: root``)."""
    if env["run_as"] != "user" or os.geteuid() != 0:
        return None
    uid, gid = invoking_user()
    if uid == 0:
        return None
    try:
        import pwd

        groups = os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)
    except (KeyError, OSError):
        groups = [gid]
    return uid, gid, groups


def _matches(name: str, globs: Sequence[str]) -> bool:
    from fnmatch import fnmatchcase

    return any(fnmatchcase(name, g) for g in globs)


def denied(env: dict[str, Any]) -> list[str]:
    """The deny globs in force: the environment's, and the host-specific variables it does not
    name exactly in its passthrough list."""
    allow = set(env.get("passthrough", ()))
    return [*env.get("deny", ()), *(h for h in HOST_SPECIFIC if h not in allow)]


def passed_env(env: dict[str, Any]) -> dict[str, str]:
    """The variables a command sees in the container, by the rules the client applies from the
    spec's pass/deny/set lines (for the podman exec fallback, which has no client)."""
    deny = [*denied(env), *ALWAYS_DENIED]
    out = {k: v for k, v in os.environ.items() if _matches(k, env.get("passthrough", ())) and not _matches(k, deny)}
    out.update({k: v for k, v in env.get("env", {}).items() if not _matches(k, ALWAYS_DENIED)})
    return out
