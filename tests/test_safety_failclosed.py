"""Fail closed and exec fidelity in qpod-shell: a bound repository whose environment cannot be
used fails its redirected commands with 125 (never a silent host run), a fixed file is noticed
without touching it, a missing rules file is remade, and what the kernel would refuse to
execute is refused the same way (ENOEXEC, EFAULT), not sent to a container."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_qpod

pytestmark = pytest.mark.podman


def qpod_shell_c(command: str, cwd: Path, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("QPOD_SHELL")}
    env.update(extra or {})
    return subprocess.run([sys.executable, "-m", "qpod_engine.shell", "--shell", "/bin/bash", "-c", command],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


def env_yaml() -> Path:
    return Path(os.environ["QPOD_CONFIG_DIR"]) / "environments" / "bb.yaml"


@pytest.fixture
def prog(bound_repo: Path) -> Path:
    """A program of the repository that says where it runs."""
    p = bound_repo / "where.sh"
    p.write_text('#!/bin/sh\necho "in-${container:-host}"\n')
    p.chmod(0o755)
    return bound_repo


def test_broken_environment_file_fails_redirected_commands_with_125(prog: Path) -> None:
    assert qpod_shell_c("./where.sh", prog).stdout == "in-podman\n"
    good = env_yaml().read_text()
    env_yaml().write_text(good + "imgae: typo\n")
    r = qpod_shell_c("./where.sh; echo status=$?; ls README", prog)
    assert "in-host" not in r.stdout and "status=125" in r.stdout, r.stdout
    assert "README" in r.stdout  # host commands untouched
    assert str(env_yaml()) in r.stderr and "imgae" in r.stderr


def test_environment_file_made_readable_again_is_noticed_without_touching_it(prog: Path) -> None:
    assert qpod_shell_c("./where.sh", prog).stdout == "in-podman\n"
    env_yaml().write_text(env_yaml().read_text().replace("image:", "image: [broken"))
    assert "status=125" in qpod_shell_c("./where.sh; echo status=$?", prog).stdout
    text = env_yaml().read_text().replace("image: [broken", "image:")
    # fixed by a rename of a good copy (same size as before, mtime preserved: only ctime moves)
    st = env_yaml().stat()
    fixed = env_yaml().with_suffix(".tmp")
    fixed.write_text(text)
    os.utime(fixed, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(fixed, env_yaml())
    assert qpod_shell_c("./where.sh", prog).stdout == "in-podman\n"


def test_missing_rules_file_is_remade_by_qpod_shell(prog: Path) -> None:
    assert qpod_shell_c("./where.sh", prog).stdout == "in-podman\n"
    rules = Path(os.environ["QPOD_STATE_DIR"]) / "rules"
    rules.unlink()
    r = qpod_shell_c("./where.sh", prog)
    assert r.stdout == "in-podman\n", r.stderr
    assert rules.is_file()


def test_garbage_and_scripts_without_shebang_behave_as_natively(prog: Path) -> None:
    (prog / "garbage").write_bytes(b"\x00\x01\x02\x03binary junk")
    (prog / "garbage").chmod(0o755)
    (prog / "noshebang").write_text("echo from-bash-itself-$BASH_VERSINFO\n")
    (prog / "noshebang").chmod(0o755)
    script = "./garbage; echo status=$?; ./noshebang; echo status=$?"
    native = subprocess.run(["bash", "-c", script], cwd=prog, capture_output=True, text=True)
    r = qpod_shell_c(script, prog)
    assert r.stdout == native.stdout and "status=126" in r.stdout and "from-bash-itself-5" in r.stdout
    assert "Exec format error" in r.stderr or "cannot execute binary file" in r.stderr
    assert run_qpod("log", "--json").stdout == ""  # nothing of that went to the container


def test_execve_of_null_fails_with_efault_under_the_library(prog: Path) -> None:
    code = ("import ctypes, os; libc = ctypes.CDLL(None, use_errno=True);"
            "r = libc.execve(None, None, None); print(r, os.strerror(ctypes.get_errno()))")
    r = qpod_shell_c(f"{sys.executable} -S -c '{code}'", prog)
    assert r.returncode == 0 and r.stdout.strip() == "-1 Bad address", (r.stdout, r.stderr)
