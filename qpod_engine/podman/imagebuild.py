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

from qpod_engine.base import paths
from qpod_engine.base.errors import EXIT_QPOD, QpodError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Progress = Callable[[str], None]  # one line of the build's output

LABEL_BUILD_CONFIG = "qpod.build.config"
# How long a launch waits for another one building the same tag (make -j: one builds, the others
# wait) before it gives up with the holder's pid: a Containerfile may build a toolchain.
LOCK_TIMEOUT = 3600.0


def _run(args: list[str], env: dict[str, str], quiet: bool, progress: Progress | None = None) -> int:
    import subprocess

    if progress is not None:  # a front end shows the lines (the dashboard's build dialog)
        proc = subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            progress(line.rstrip("\n"))
        return proc.wait()
    # the build's progress is the user's to see, on stderr: stdout belongs to the command
    out = subprocess.DEVNULL if quiet else sys.stderr.fileno()
    return subprocess.run(args, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out).returncode


def image_exists(podman: str, env: dict[str, str], tag: str) -> bool:
    return _run([podman, "image", "exists", tag], env, quiet=True) == 0


def build_args(podman: str, build: dict[str, Any], settings: dict[str, Any], context: str) -> list[str]:
    from qpod_engine.config.containers import config_id
    from qpod_engine.podman.lifecycle import runtime_name

    args = [
        podman,
        "build",
        "--file",
        build["containerfile"],
        "--tag",
        build["tag"],
        "--label",
        "qpod.build=1",
        "--label",
        f"{LABEL_BUILD_CONFIG}={config_id()}",  # prune touches this config's builds only
        "--network",
        "host",
    ]  # RUN steps get the network qpod's containers have
    rt = runtime_name(settings.get("runtime", "auto"))
    if rt:
        args += ["--runtime", rt]
    for k, v in build.get("args", {}).items():
        args += ["--build-arg", f"{k}={v}"]
    return [*args, context]


def ensure_built(build: dict[str, Any], settings: dict[str, Any], progress: Progress | None = None) -> bool:
    """Build ``build["tag"]`` unless it exists; True when it was built now. Concurrent
    launches (make -j) wait for one build under a lock (at most LOCK_TIMEOUT, told who holds
    it). The build's output goes to stderr, or line by line to ``progress``. Raises QpodError
    (exit 125)."""
    from qpod_engine.base.fileio import locked, private_dir
    from qpod_engine.base.textsafe import visible
    from qpod_engine.podman.service import podman_binary, podman_env

    tag = build["tag"]
    podman = podman_binary()
    env = podman_env()
    builds = os.path.join(paths.state_dir(), "builds")
    try:
        lock = os.path.join(private_dir(builds), tag.rsplit("-", 1)[-1] + ".lock")
        with locked(lock, f"building {visible(tag)}", LOCK_TIMEOUT, progress):
            if image_exists(podman, env, tag):
                return False
            context = build.get("context") or private_dir(os.path.join(builds, "empty"))
            say = f"qpod: building {visible(tag)} from {visible(build['containerfile'])}"
            if progress is not None:
                progress(say)
            else:
                sys.stderr.write(say + "\n")
                sys.stderr.flush()
            rc = _run(build_args(podman, build, settings, context), env, quiet=False, progress=progress)
    except OSError as err:
        raise QpodError(f"{err.filename or builds}: cannot build: {err.strerror or err}", EXIT_QPOD) from None
    if rc != 0:
        where = "its output is above" if progress is None else "see its output"
        raise QpodError(f"podman build of {build['containerfile']} failed (exit {rc}; {where})", EXIT_QPOD)
    return True


def tags_in_use(snap: dict[str, Any]) -> set[str]:
    """The build tags the checked-out repository files give (what ``prune`` keeps)."""
    return {e["build"]["tag"] for e in snap.get("repo_envs", {}).values() if e.get("build")}


def prune(keep: set[str], dry_run: bool = False, only: set[str] | None = None) -> tuple[list[str], list[str]]:
    """Remove this config's built images whose tag is not in ``keep`` (the tags the checked-out
    repository files give), of those in ``only`` (references) when it is given. An image a
    container still uses is kept (podman refuses without force). Returns (removed or, with
    ``dry_run``, to remove; kept because in use)."""
    import subprocess

    from qpod_engine.config.containers import config_id
    from qpod_engine.config.repo_file import BUILD_TAG_PREFIX
    from qpod_engine.podman.service import podman_binary, podman_env

    podman = podman_binary()
    env = podman_env()
    proc = subprocess.run(
        [
            podman,
            "images",
            "--filter",
            f"label={LABEL_BUILD_CONFIG}={config_id()}",
            "--format",
            "{{.Repository}}:{{.Tag}}",
        ],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise QpodError(f"podman images failed: {' '.join(proc.stderr.split())}", 1)
    removed: list[str] = []
    in_use: list[str] = []
    for ref in dict.fromkeys(proc.stdout.split()):
        tag = ref.rsplit(":", 1)[0]
        if not tag.startswith(BUILD_TAG_PREFIX) or tag in keep or (only is not None and ref not in only):
            continue
        if dry_run or _run([podman, "rmi", ref], env, quiet=True) == 0:
            removed.append(ref)
        else:
            in_use.append(ref)
    return removed, in_use
