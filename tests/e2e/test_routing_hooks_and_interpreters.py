"""Git's own machinery is git's: a hook in a bound repository's .git runs where git runs (on the
host), not in the container whose image may have no git at all; what the hook starts is judged
as usual (make in the repository still goes to the container)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.podman


def test_git_hooks_run_where_git_runs(bound_repo: Path) -> None:
    hook = bound_repo / ".git" / "hooks" / "pre-commit"
    hook.write_text('#!/bin/sh\necho "hook-in-${container:-host}"\n./where.sh\n')
    hook.chmod(0o755)
    where = bound_repo / "where.sh"
    where.write_text('#!/bin/sh\necho "program-in-${container:-host}"\n')
    where.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("QPOD_SHELL")}
    env.update(
        {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    )
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "qpod_engine.cli.shell",
            "--shell",
            "/bin/bash",
            "-c",
            "git add where.sh && git commit -q -m w",
        ],
        cwd=bound_repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    # the hook on the host; the repository's own program it starts, in the container (git sends a
    # hook's output to stderr)
    assert r.stderr.split() == ["hook-in-host", "program-in-podman"], (r.stdout, r.stderr)


def test_an_interpreter_runs_where_its_script_lives(bound_repo: Path) -> None:
    """sh ./configure, python3 ./waf: the interpreter is the host's program, the script the
    repository's; it runs in the container. A command string (sh -c) stays on the host."""
    (bound_repo / "where.sh").write_text('echo "script-in-${container:-host}"\n')
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("QPOD_SHELL")}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "qpod_engine.cli.shell",
            "--shell",
            "/bin/bash",
            "-c",
            "sh ./where.sh; sh -e where.sh; sh -c 'echo string-in-${container:-host}'",
        ],
        cwd=bound_repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.stdout.split() == ["script-in-podman", "script-in-podman", "string-in-host"], r.stderr
    which = subprocess.run(
        [sys.executable, "-m", "qpod_engine.cli", "which", "sh", "./where.sh"],
        cwd=bound_repo,
        capture_output=True,
        text=True,
        env=env,
    )
    assert which.stdout.startswith("container (bb): a script of bound repository"), which.stdout


def test_a_venv_interpreter_in_the_repository_is_the_hosts(bound_repo: Path) -> None:
    """.venv/bin/python3 links to the host's python: it runs on the host (it failed with 127 in
    a container without that interpreter), scripts given to it included."""
    venv_bin = bound_repo / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python3").symlink_to(os.path.realpath(sys.executable))
    (bound_repo / "tool.py").write_text("import os; print('py-in-' + os.environ.get('container', 'host'))\n")
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("QPOD_SHELL")}
    r = subprocess.run(
        [sys.executable, "-m", "qpod_engine.cli.shell", "--shell", "/bin/bash", "-c", ".venv/bin/python3 -S tool.py"],
        cwd=bound_repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (r.returncode, r.stdout) == (0, "py-in-host\n"), r.stderr
