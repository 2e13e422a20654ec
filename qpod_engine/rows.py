"""The rows front ends show: plain frozen records of repositories, images, environments and
containers, with the formatting they share. A leaf: the engine's parts that produce rows
(``api``, ``podman.stats``) import it, it imports nothing of qpod.
"""

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class RepoRow:
    """A bound repository as it stands now."""

    root: str
    exists: bool
    branch: str | None
    environment: str | None  # in force on the current branch, None when no rule applies
    why: str
    default_environment: str | None
    branches: dict[str, str]  # glob -> environment, in file order
    container: str | None
    container_state: str  # podman's state, "none" when not created, "unknown" when podman was not asked
    waiting: str | None = None  # why its .qpod.yaml waits for 'qpod allow' (changed or broken), if it does
    broken: str | None = None  # why the named environment in force cannot be used (its routed commands fail)

    def to_dict(self) -> dict[str, Any]:
        """The shape ``qpod repos --json`` prints."""
        return {
            "repository": self.root,
            "exists": self.exists,
            "branch": self.branch,
            "environment": self.environment,
            "why": self.why,
            "default_environment": self.default_environment,
            "branches": dict(self.branches),
            "container": self.container,
            "container_state": self.container_state,
            "waiting": self.waiting,
            "broken": self.broken,
        }


@dataclass(frozen=True)
class ImageRow:
    """A local image that qpod's environments use, or that qpod built from a repository file."""

    id: str
    tags: list[str]
    size: int  # bytes
    used_by: list[str]  # "environment NAME", ".qpod.yaml of ROOT", "container NAME"
    built_here: bool  # built by this config from a repository file (prune removes it when unused)


@dataclass(frozen=True)
class EnvRow:
    """An environment file: its settings (None when the file is broken) and who uses it."""

    name: str
    image: str
    repositories: list[str]
    error: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # Environment fields, as in the snapshot


@dataclass(frozen=True)
class ContainerRow:
    name: str
    id: str
    environment: str
    repository: str
    image: str
    state: str
    started: float | None  # epoch seconds
    transport: str = "agent"  # or "exec": the podman exec fallback (see podman_backend.ensure_container)
    host: str = ""  # the podman connection it runs on (an environment's host:), "" for this machine
    role: str = ""  # "distccd": an environment's compile server on a build host (distribute:), no repository


def uptime(started: float | None, now: float) -> str:
    """``3d4h``, ``2h5m``, ``4m10s``, or ``-`` for a container that is not running."""
    if not started:
        return "-"
    s = max(0, int(now - started))
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60}m"
    return f"{s // 60}m{s % 60}s"


@dataclass(frozen=True)
class ContainerInfo(ContainerRow):
    """A container row; ``None`` where the backend does not say."""

    outdated: bool | None = None  # its config changed since it was made: the next command replaces it
    commands_running: int | None = None


_ROW_FIELDS = frozenset(f.name for f in fields(ContainerInfo))


def container_info(row: dict[str, Any]) -> ContainerInfo:
    """A backend row (``podman_backend.list_containers``), keys it does not know ignored."""
    return ContainerInfo(**{k: v for k, v in row.items() if k in _ROW_FIELDS})


@dataclass(frozen=True)
class Stats:
    """CPU and memory of a running container (podman.stats measures them)."""

    cpu: float  # percent of one CPU (200 = two CPUs busy)
    memory: int  # bytes
    memory_limit: int  # bytes (the host's memory when the container has no limit)
    pids: int


def human_bytes(n: int) -> str:
    """``512K``, ``38.2M``, ``1.4G`` (powers of 1024, as podman stats shows them)."""
    value = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if unit in ("B", "K") else f"{value:.1f}{unit}"
        value /= 1024
    return f"{n}B"
