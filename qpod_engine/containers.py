"""Names, labels and cached facts of qpod's warm containers. Stdlib only: the launcher uses
this on every command to find a running container without asking podman (~100 ms saved)."""

from __future__ import annotations

import json
import os

from . import paths

# typing is imported for type checkers only: the launcher's hot path imports this module
# and ``import typing`` costs ~2 ms a command
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

LABEL = "qpod"
LABEL_ENV = "qpod.env"
LABEL_REPO = "qpod.repo"
LABEL_HASH = "qpod.hash"
LABEL_ROOT_ID = "qpod.root-id"  # the repository directory the container mounted (dev:inode)
# Never passed into a container, whatever an environment's lists say: the host side of qpod.
ALWAYS_DENIED = ("LD_PRELOAD", "QPOD_*")
# qpod's runtime dir (pid FIFOs) as every container sees it
RUNTIME_IN_CONTAINER = "/run/qpod"
# bump when the way containers are created changes, so that old ones are recreated
CONTAINER_LAYOUT = 2


def container_name(env_name: str, root: str) -> str:
    """``qpod-ENV-REPO-HASH``: readable in ``podman ps``, unique per (environment, repository)."""
    import hashlib
    import re

    base = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(root) or "root")[:40]
    digest = hashlib.sha1(root.encode()).hexdigest()[:8]
    return f"qpod-{env_name}-{base}-{digest}"


def container_root(env: dict[str, Any], root: str) -> str:
    """Where the repository appears inside the container."""
    return env.get("workdir_root") or root


def container_hash(env: dict[str, Any], root: str) -> str:
    """Changes whenever the container would be created differently."""
    import hashlib

    rootless = os.geteuid() != 0
    blob = json.dumps([env["hash"], root, rootless, CONTAINER_LAYOUT], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def map_path(path: str, env: dict[str, Any], root: str) -> str | None:
    """Host path -> container path, for paths inside the repository or a mount; else None."""
    inside = container_root(env, root)
    if path == root or path.startswith(root.rstrip("/") + "/"):
        return inside + path[len(root):] if inside != "/" else (path[len(root):] or "/")
    for spec in env.get("mounts", ()):
        host, target = spec.split(":")[:2]
        host = os.path.expanduser(host)
        if path == host or path.startswith(host.rstrip("/") + "/"):
            return target + path[len(host):]
    return None


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
    fields = data[data.rindex(b")") + 2:].split()
    return fields[19].decode()


def runtime_dir() -> str:
    """Host side of RUNTIME_IN_CONTAINER."""
    return os.path.join(paths.state_dir(), "run")


def sweep_runtime_dir() -> None:
    """Remove pid FIFOs left by launchers that were killed (their pid is in the name)."""
    d = runtime_dir()
    try:
        names = os.listdir(d)
    except OSError:
        return
    for n in names:
        parts = n.split("-")
        if len(parts) == 3 and parts[0] == "pid" and parts[1].isdigit() and not os.path.exists(f"/proc/{parts[1]}"):
            try:
                os.unlink(os.path.join(d, n))
            except OSError:
                pass


def _facts_file(name: str) -> str:
    return os.path.join(paths.containers_cache_dir(), f"{name}.json")


def read_facts(name: str) -> dict[str, Any] | None:
    try:
        with open(_facts_file(name), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_facts(facts: dict[str, Any]) -> None:

    from .fileio import write_atomic

    write_atomic(_facts_file(facts["name"]), json.dumps(facts))


def forget_facts(name: str) -> None:
    try:
        os.unlink(_facts_file(name))
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
    if (facts and facts.get("hash") == want_hash and facts.get("root_id") == root_id(root)
            and proc_start_time(facts.get("pid", 0)) == facts.get("pid_start")):
        return facts
    return None
