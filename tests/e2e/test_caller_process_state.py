"""What a child inherits natively besides its descriptors reaches the command in the container:
the caller's resource limits and niceness, and its logical working directory (a path through a
symlink); a limit the container cannot give is said in one line, never dropped silently."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.podman

QPOD = f"{sys.executable} -I -m qpod_engine.cli exec"
PROBE = (
    "sh -c 'echo PWD=$PWD nofile=$(ulimit -n) core=$(ulimit -c) stack=$(ulimit -s) "
    'nice=$(cut -d" " -f19 /proc/self/stat)\''
)


def bash(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PWD"}
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_limits_niceness_and_logical_cwd_reach_the_command(bound_repo: Path, tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(bound_repo)
    setup = f"cd {link} && ulimit -n 200 && ulimit -c unlimited && ulimit -s 4096"
    native = bash(f"{setup} && nice -n 5 {PROBE}", bound_repo)
    routed = bash(f"{setup} && nice -n 5 {QPOD} {PROBE}", bound_repo)
    assert routed.returncode == 0, routed.stderr
    want = f"PWD={link} nofile=200 core=unlimited stack=4096 nice=5\n"
    assert native.stdout == want, native.stdout  # the reference: the same shell line on the host
    assert routed.stdout == want and routed.stderr == "", (routed.stdout, routed.stderr)


def test_a_limit_the_container_cannot_give_is_said(bound_repo: Path) -> None:
    # the container is made from a shell whose hard nofile is 500: it can give no more
    made = bash(f"ulimit -n 500 && {QPOD} true", bound_repo)
    assert made.returncode == 0, made.stderr
    r = bash(f"ulimit -S -n 1000 && {QPOD} sh -c 'ulimit -n'", bound_repo)
    assert r.returncode == 0 and r.stdout == "500\n", (r.stdout, r.stderr)
    assert r.stderr == "qpod: nofile (ulimit -n): the container allows at most 500, not your 1000\n", r.stderr
