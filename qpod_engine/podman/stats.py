"""What the containers view shows beyond ``podman ps``: CPU and memory of the running
containers (one one-shot ``/containers/stats`` call for all of them, never a stream), and the
rows (``qpod_engine.rows.Stats``) the containers view draws.

CPU % is measured between two calls (the CPU time the container used over the wall time
passed, as ``podman stats`` does between its samples); the first call for a container gives
podman's average since it started.
"""

import threading
from typing import Any

from qpod_engine.base.errors import QpodError
from qpod_engine.rows import Stats

_previous: dict[str, tuple[int, int]] = {}  # container id -> (CPU ns, wall ns) of the last call
_lock = threading.Lock()


def parse_stats(payload: dict[str, Any]) -> dict[str, Stats]:
    """libpod's ``/containers/stats?stream=false`` answer -> Stats by 12-digit container id."""
    out: dict[str, Stats] = {}
    for s in payload.get("Stats") or []:
        if not isinstance(s, dict) or not isinstance(s.get("ContainerID"), str):
            continue
        cid = s["ContainerID"][:12]
        cpu = float(s.get("CPU") or 0.0)
        cpu_ns, wall_ns = s.get("CPUNano"), s.get("SystemNano")
        if isinstance(cpu_ns, int) and isinstance(wall_ns, int):
            with _lock:
                before = _previous.get(cid)
                _previous[cid] = (cpu_ns, wall_ns)
            if before is not None and wall_ns > before[1] and cpu_ns >= before[0]:
                cpu = 100.0 * (cpu_ns - before[0]) / (wall_ns - before[1])
        out[cid] = Stats(
            cpu=max(0.0, cpu),
            memory=int(s.get("MemUsage") or 0),
            memory_limit=int(s.get("MemLimit") or 0),
            pids=int(s.get("PIDs") or 0),
        )
    return out


def container_stats(ids: list[str], host: str | None = None) -> dict[str, Stats]:
    """Stats of the running containers ``ids`` (on podman connection ``host``: an environment's
    host:) in one call. Raises QpodError when podman cannot be asked; a container that stopped
    meanwhile is simply absent."""
    if not ids:
        return {}
    import json

    from qpod_engine.podman.lifecycle import client

    try:
        response = client(host).api.get("/containers/stats", params={"containers": ids, "stream": False})
        if response.status_code != 200:  # one of them stopped meanwhile: ask for each alone
            return _one_by_one(ids, host)
        return parse_stats(json.loads(response.content))
    except QpodError:
        raise
    except Exception as err:  # noqa: BLE001 - connection refused, bad JSON: no figures this time
        raise QpodError(f"podman: container stats: {err}") from None


def _one_by_one(ids: list[str], host: str | None) -> dict[str, Stats]:
    import json

    from qpod_engine.podman.lifecycle import client

    out: dict[str, Stats] = {}
    for cid in ids:
        response = client(host).api.get("/containers/stats", params={"containers": [cid], "stream": False})
        if response.status_code == 200:
            out.update(parse_stats(json.loads(response.content)))
    return out
