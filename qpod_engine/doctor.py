"""``qpod doctor``: each check says what it looked at and, when it fails, the fix."""

import os
import shutil
import subprocess
from collections.abc import Iterator

from .errors import QpodError
from .paths import find_program

Check = tuple[bool, str, str]  # (ok, what was checked, how to fix)


def run_checks() -> Iterator[Check]:
    exe = find_program("podman")
    yield (exe is not None, f"podman installed ({exe or 'not found'})", "apt-get install podman runc")
    if exe is None:
        return
    from . import podman_backend as pb
    from . import service

    rt = pb.runtime_name("auto")
    yield (rt is None or shutil.which(rt) is not None, f"OCI runtime: {rt or 'podman default'}",
           "apt-get install runc (crun fails on cgroups-hybrid hosts)")
    try:
        url = service.ensure_service()
        yield (True, f"podman API socket answers ({url})", "")
    except QpodError as err:
        yield (False, f"podman API socket: {err}", "podman system service --time=0 unix://" + service.socket_path())
        return
    yield _trivial_container(exe, rt)
    yield from _config_checks()
    yield from _preload_checks()


def _trivial_container(exe: str, runtime: str | None) -> Check:
    """Start a throwaway container with qpod's runtime and limits, from any local image."""
    from .podman_backend import default_ulimits
    from .service import podman_env

    env = podman_env()
    images = subprocess.run([exe, "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True,
                            text=True, env=env, timeout=60).stdout.split()
    images = [i for i in images if not i.startswith("<none>")]
    if not images:
        return (True, "trivial container: skipped (no local image yet; 'qpod demo' builds one)", "")
    limits = [arg for k, v in default_ulimits().items() for arg in ("--ulimit", f"{k}={v}")]
    rt = ["--runtime", runtime] if runtime else []
    proc = subprocess.run([exe, "run", "--rm", *rt, *limits, images[0], "true"], capture_output=True, text=True,
                          env=env, timeout=120)
    last = (proc.stderr.strip().splitlines() or [""])[-1]
    return (proc.returncode == 0, f"trivial container starts ({images[0]}, runtime {runtime or 'default'})"
            + ("" if proc.returncode == 0 else f": {last}"),
            "set 'runtime' and 'ulimits' in settings.yaml (see README: Podman on restricted hosts)")


def _config_checks() -> Iterator[Check]:
    from . import snapshot

    try:
        snap = snapshot.compile_config()
    except QpodError as err:
        yield (False, f"config parses: {err}", "fix the file at the line named")
        return
    broken = {n: e["error"] for n, e in snap["envs"].items() if "error" in e}
    yield (not broken, "config parses" + (f": {'; '.join(broken.values())}" if broken else ""),
           "fix the file at the line named")
    for repo in snap["repos"]:
        if not os.path.isdir(repo["root"]):
            yield (False, f"bound repository {repo['root']} exists",
                   f"qpod unbind --path {repo['root']} (or move it back)")
        for env in ([repo["environment"]] if repo["environment"] else []) + [e for _, e in repo["branches"]]:
            if env not in snap["envs"]:
                yield (False, f"{repo['root']}: environment '{env}' is defined", f"qpod env add {env} --image IMAGE")


def _preload_checks() -> Iterator[Check]:
    try:
        from . import preload_lib
    except ImportError:
        yield (False, "preload library: qpod_engine.preload_lib missing", "reinstall: pip install .")
        return
    problems = preload_lib.check()
    yield (not problems, "preload library loads and the rules file is current"
           + (f": {'; '.join(problems)}" if problems else ""), "reinstall with: pip install .")
