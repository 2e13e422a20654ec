"""The fallback transport: ``podman exec`` for containers where the agent cannot run (see
``podman_backend.ensure_container``). It keeps what a relay can keep: the exit status, stdin
piped, a TTY when stdin and stdout are terminals, the cwd, the user, the environment rules and
the log's start and end records. It cannot keep what only the caller's own descriptors give
(separate stderr under a TTY, SIGPIPE, type-ahead, job control, signals without a TTY: podman
exec forwards none then), which is why it is the fallback. Stdlib only.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Sequence

from qpod_engine.base import gitinfo
from qpod_engine.base.errors import EXIT_QPOD, QpodError
from qpod_engine.config import containers as naming
from qpod_engine.log import cmdlog
from qpod_engine.podman import service

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from qpod_engine.routing.policy import Decision

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def run(
    decision: Decision,
    snap: dict[str, Any],
    env: dict[str, Any],
    facts: dict[str, Any],
    path: str,
    argv: Sequence[str],
    cwd: str,
    tty: bool | None,
) -> int:
    target = decision.target
    assert target is not None
    root = target.root
    workdir = naming.map_path(cwd, env, root)
    if workdir is None:
        raise QpodError(
            f"{cwd}: not visible in the container of environment '{env['name']}' (run it from "
            f"inside {root} or a mounted directory)",
            EXIT_QPOD,
        )
    on_tty = os.isatty(0) and os.isatty(1)
    try:
        foreground = on_tty and os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        foreground = False
    use_tty = foreground if tty is None else (tty and foreground)
    settings = snap["settings"]
    url = service.ensure_service(settings.get("service_idle_seconds", service.DEFAULT_IDLE_SECONDS))
    values = naming.passed_env(env)
    args = [service.podman_binary(), "--url", url, "exec", "--workdir", workdir]
    if not (os.isatty(0) and not foreground):
        args.append("-i")  # a background job must not read the terminal
    if use_tty:
        args.append("-t")
    who = naming.identity(env)
    if who:
        args += ["--user", f"{who[0]}:{who[1]}"]
    for name in sorted(values):
        args += ["--env", name]  # the value comes from podman's environment: not visible in ps
    cmd = list(argv)
    if path.startswith("/") and gitinfo.is_within(path, root) and (cmd[0].startswith("/") or "/" not in cmd[0]):
        cmd[0] = naming.map_path(path, env, root) or path
    args += [facts["name"], *cmd]

    t0 = time.time()
    record = {
        "id": f"{int(t0 * 1e9):x}{os.getpid():x}",
        "time": _iso(t0),
        "repo": root,
        "branch": target.branch or gitinfo.current_branch(root),
        "env": env["name"],
        "container": facts["name"],
        "cwd": cwd,
        "argv": list(argv),
        "path": path,
        "reason": decision.reason,
        "pid": os.getpid(),
        "status": None,
    }
    _append(record, settings)
    spawn_kw: dict[str, Any] = {"setsigdef": (signal.SIGPIPE, signal.SIGXFSZ)}
    if not use_tty:
        spawn_kw["setpgroup"] = 0  # Ctrl-C comes to us and is forwarded, podman is not killed by it
    try:
        child = os.posix_spawn(args[0], args, service.podman_env(values), **spawn_kw)
    except OSError as err:
        raise QpodError(f"cannot run podman: {err.strerror}", EXIT_QPOD) from None
    old = {sig: signal.signal(sig, lambda s, _f: _send(child, s)) for sig in FORWARDED}
    try:
        while True:
            try:
                _, status = os.waitpid(child, 0)
                break
            except InterruptedError:
                continue
        code = os.waitstatus_to_exitcode(status)
        code = 128 - code if code < 0 else code
        _append({**record, "status": code, "duration": round(time.time() - t0, 3)}, settings)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return code


def _iso(t: float) -> str:
    """The log's time format (the client's too): UTC with milliseconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}+00:00"


def _send(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _append(record: dict[str, Any], settings: dict[str, Any]) -> None:
    try:
        cmdlog.append(record, settings["log_max_bytes"], settings["log_keep"])
    except OSError as err:
        sys.stderr.write(f"qpod: cannot write the command log: {err.strerror}\n")
    except QpodError as err:  # its lock held for too long: said, the command's status stays
        sys.stderr.write(f"qpod: cannot write the command log: {err}\n")
