"""What a redirected command inherits as a native one would: signal dispositions (SIGPIPE at
its default), the umask, background jobs and job control in a terminal, repository programs
found through PATH, and a symlinked checkout routed as its real path."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import container_processes, run_qpod, wait_until
from tmux_driver import Tmux

pytestmark = pytest.mark.podman


def _sigign(text: str) -> int:
    return int(next(line.split()[1] for line in text.splitlines() if line.startswith("SigIgn:")), 16)


def test_host_programs_get_default_sigpipe(qpod_home: Path, tmp_path: Path) -> None:
    native = subprocess.run(["sh", "-c", "grep SigIgn /proc/self/status"], capture_output=True, text=True).stdout
    r = run_qpod("exec", "sh", "-c", "grep SigIgn /proc/self/status", cwd=tmp_path)
    assert _sigign(r.stdout) == _sigign(native)
    r = run_qpod("exec", "sh", "-c", "while :; do echo x; done | head -1", cwd=tmp_path, timeout=20)
    assert r.returncode == 0 and r.stdout == "x\n"


def test_qpod_shell_gets_default_sigpipe(qpod_home: Path, tmp_path: Path) -> None:
    native = subprocess.run(["sh", "-c", "grep SigIgn /proc/self/status"], capture_output=True, text=True).stdout
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "qpod_engine.cli.shell",
            "--shell",
            "/bin/sh",
            "-c",
            "grep SigIgn /proc/self/status; yes | head -1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert _sigign(r.stdout) == _sigign(native)
    assert r.stdout.splitlines()[-1] == "y"


def test_umask_is_the_users(bound_repo: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "qpod_engine.cli", "exec", "sh", "-c", "umask; touch g.o"],
        cwd=bound_repo,
        capture_output=True,
        text=True,
        umask=0o002,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0002"
    assert (bound_repo / "g.o").stat().st_mode & 0o777 == 0o664


def test_repository_program_found_through_path(bound_repo: Path) -> None:
    tool = bound_repo / "scripts" / "mytool"
    tool.parent.mkdir()
    tool.write_text('#!/bin/sh\necho "$container:$0:$*"\n')
    tool.chmod(0o755)
    r = run_qpod(
        "exec", "mytool", "a", "b", cwd=bound_repo / "sub", env={"PATH": f"{tool.parent}:{os.environ['PATH']}"}
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"podman:{tool}:a b\n"


def test_repository_program_from_outside_is_a_clear_error(bound_repo: Path, tmp_path: Path) -> None:
    tool = bound_repo / "tool"
    tool.write_text('#!/bin/sh\ncat "$1"\n')
    tool.chmod(0o755)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    assert run_qpod("env", "set", "bb", "share=").returncode == 0  # /tmp shared (the default) shows it
    r = run_qpod("exec", str(tool), "in.txt", cwd=outside)
    assert r.returncode == 125
    assert r.stderr.strip() == (
        f"qpod: {outside}: not visible in the container of environment 'bb' "
        f"(run it from inside {bound_repo} or a mounted directory)"
    )


def test_symlinked_checkout_routes_like_the_real_path(bound_repo: Path, tmp_path: Path) -> None:
    link = tmp_path / "link-to-repo"
    link.symlink_to(bound_repo)
    shell = f"cd {link} && {sys.executable} -m qpod_engine.cli"
    w = subprocess.run(["sh", "-c", f"{shell} which make"], capture_output=True, text=True)
    assert w.stdout.startswith("container (bb)"), w.stdout + w.stderr
    r = subprocess.run(["sh", "-c", f"{shell} exec sh -c 'echo $container'"], capture_output=True, text=True)
    assert r.stdout == "podman\n", r.stderr


def _tmux_shell(repo: Path) -> Tmux:
    env = {k: os.environ[k] for k in ("QPOD_CONFIG_DIR", "QPOD_STATE_DIR", "PATH")}
    t = Tmux("bash --norc --noprofile", env=env, cwd=str(repo))
    t.type("PS1='P''S> '")
    t.wait_count("PS> ", 1)
    return t


def test_background_job_with_a_terminal_runs(bound_repo: Path) -> None:
    t = _tmux_shell(bound_repo)
    qpod = f"{sys.executable} -m qpod_engine.cli"
    try:
        t.type(f'{qpod} exec sh -c \'sleep 1; echo BG"-"DONE\' & wait $!; echo st"="$?')
        s = t.wait_for("st=", timeout=30)
        assert "BG-DONE" in s and "st=0" in s and "Stopped" not in s
    finally:
        t.kill()


def test_ctrl_z_suspends_the_command_and_fg_resumes_it(bound_repo: Path) -> None:
    t = _tmux_shell(bound_repo)
    qpod = f"{sys.executable} -m qpod_engine.cli"
    count = bound_repo / "count"
    loop = "i=0; while :; do i=$((i+1)); echo $i > count; sleep 0.1; done"

    def counted() -> str:
        return count.read_text() if count.exists() else ""

    def loop_states() -> set[str]:
        """The states of the loop's shell in the container (T: stopped)."""
        return {state for state, cmd in container_processes(bound_repo) if "i=$((i+1))" in cmd}

    try:
        # stdout is a pipe: no TTY, the launcher does the job control
        t.type(f"{qpod} exec sh -c '{loop}' | cat")
        first = wait_until(counted, "the loop counting")
        wait_until(lambda: counted() not in ("", first), "the loop counting on")
        t.send("C-z")
        t.wait_for("Stopped", timeout=10)
        wait_until(lambda: loop_states() == {"T"}, "the command in the container stopped too")
        frozen = counted()
        assert loop_states() == {"T"} and counted() == frozen
        t.type("fg")
        wait_until(lambda: counted() != frozen, "the loop counting again after fg")
        t.send("C-c")
        t.wait_count("PS> ", 3, timeout=20)
    finally:
        t.kill()
