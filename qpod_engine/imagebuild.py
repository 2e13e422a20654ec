"""Images of repository files with ``build:``: made with ``podman build`` (buildah underneath),
tagged ``localhost/qpod-build-<hash>`` (repo_env.build_tag: the Containerfile, the context's
files, the args), so an unchanged recipe reuses its image and a changed one builds a new one.
Nothing is pulled but what the Containerfile's FROM names and the host lacks: a FROM of a
local image builds offline.

Called by the launcher before the container is ensured (only when no warm container of the
current config exists); stdlib at import time.
"""

from __future__ import annotations

import os
import sys

from . import paths
from .errors import EXIT_QPOD, QpodError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _run(args: list[str], env: dict[str, str], quiet: bool) -> int:
    import subprocess

    # the build's progress is the user's to see, on stderr: stdout belongs to the command
    out = subprocess.DEVNULL if quiet else sys.stderr.fileno()
    return subprocess.run(args, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out).returncode


def image_exists(podman: str, env: dict[str, str], tag: str) -> bool:
    return _run([podman, "image", "exists", tag], env, quiet=True) == 0


def build_args(podman: str, build: dict[str, Any], settings: dict[str, Any], context: str) -> list[str]:
    from .podman_backend import runtime_name

    args = [podman, "build", "--file", build["containerfile"], "--tag", build["tag"], "--label", "qpod.build=1",
            "--network", "host"]  # RUN steps get the network qpod's containers have
    rt = runtime_name(settings.get("runtime", "auto"))
    if rt:
        args += ["--runtime", rt]
    for k, v in build.get("args", {}).items():
        args += ["--build-arg", f"{k}={v}"]
    return [*args, context]


def ensure_built(build: dict[str, Any], settings: dict[str, Any]) -> bool:
    """Build ``build["tag"]`` unless it exists; True when it was built now. Concurrent
    launches (make -j) wait for one build under a lock. Raises QpodError (exit 125)."""
    from .fileio import locked, private_dir
    from .service import podman_binary, podman_env
    from .textsafe import visible

    tag = build["tag"]
    podman = podman_binary()
    env = podman_env()
    builds = os.path.join(paths.state_dir(), "builds")
    try:
        with locked(os.path.join(builds, tag.rsplit("-", 1)[-1] + ".lock")):
            if image_exists(podman, env, tag):
                return False
            context = build.get("context") or private_dir(os.path.join(builds, "empty"))
            sys.stderr.write(f"qpod: building {visible(tag)} from {visible(build['containerfile'])}\n")
            sys.stderr.flush()
            rc = _run(build_args(podman, build, settings, context), env, quiet=False)
    except OSError as err:
        raise QpodError(f"{err.filename or builds}: cannot build: {err.strerror or err}", EXIT_QPOD) from None
    if rc != 0:
        raise QpodError(f"podman build of {build['containerfile']} failed (exit {rc}; its output is above)",
                        EXIT_QPOD)
    return True
