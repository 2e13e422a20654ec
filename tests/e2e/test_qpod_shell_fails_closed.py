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
    return subprocess.run(
        [sys.executable, "-m", "qpod_engine.cli.shell", "--shell", "/bin/bash", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


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
    code = (
        "import ctypes, os; libc = ctypes.CDLL(None, use_errno=True);"
        "r = libc.execve(None, None, None); print(r, os.strerror(ctypes.get_errno()))"
    )
    r = qpod_shell_c(f"{sys.executable} -S -c '{code}'", prog)
    assert r.returncode == 0 and r.stdout.strip() == "-1 Bad address", (r.stdout, r.stderr)


def test_config_from_xdg_dirs_survives_env_i(prog: Path, tmp_path: Path) -> None:
    """qpod-shell names its config and state explicitly, so 'env -i' cannot make the launcher
    find another config (and the build run on the host)."""
    cfg, state = Path(os.environ["QPOD_CONFIG_DIR"]), Path(os.environ["QPOD_STATE_DIR"])
    xdg_cfg, xdg_state = tmp_path / "xdgc", tmp_path / "xdgs"
    xdg_cfg.mkdir()
    xdg_state.mkdir()
    cfg.rename(xdg_cfg / "qpod")
    state.rename(xdg_state / "qpod")
    extra = {"XDG_CONFIG_HOME": str(xdg_cfg), "XDG_STATE_HOME": str(xdg_state)}
    env = {k: v for k, v in os.environ.items() if not k.startswith("QPOD_") and k != "LD_PRELOAD"}
    env.update(extra)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "qpod_engine.cli.shell",
            "--shell",
            "/bin/bash",
            "-c",
            "./where.sh; env -i PATH=/usr/bin:/bin ./where.sh",
        ],
        cwd=prog,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.stdout.split() == ["in-podman", "in-podman"], r.stderr


def test_a_path_with_a_tab_cannot_be_bound(qpod_home: Path, tmp_path: Path, busybox_image: str) -> None:
    root = tmp_path / "odd\tname"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    assert run_qpod("env", "add", "bb", "--image", busybox_image).returncode == 0
    r = run_qpod("init", "bb", cwd=root)
    assert r.returncode == 2 and "odd\\tname: qpod cannot watch a path with a tab" in r.stderr
    assert "odd" not in run_qpod("repos").stdout


def test_overlong_environment_name_is_one_line(qpod_home: Path) -> None:
    r = run_qpod("env", "add", "a" * 300, "--image", "x")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "unexpected" not in r.stderr
    assert "must be letters, digits, '.', '_' or '-' (1 to 63" in r.stderr


def test_state_dir_removed_under_an_open_qpod_shell(prog: Path) -> None:
    """The shell keeps the rules it started with: a build after the state dir is gone still goes
    to the container (the launcher makes the state again), never to the host."""
    r = qpod_shell_c('./where.sh; rm -rf "$QPOD_STATE_DIR"; ./where.sh; ./where.sh', prog)
    assert r.stdout.split() == ["in-podman"] * 3, r.stderr
    # and the descriptor that keeps them is not handed to the container
    probe = "test -e /proc/self/fd/$QPOD_RULES_FD && echo open || echo closed"
    r = qpod_shell_c(f'sh -c "{probe}"; {sys.executable} -m qpod_engine.cli exec sh -c "{probe}"', prog)
    assert r.stdout.split() == ["open", "closed"], r.stderr


def test_a_rules_file_over_the_librarys_size_is_named_as_such(qpod_home: Path, tmp_path: Path) -> None:
    cfg = Path(os.environ["QPOD_CONFIG_DIR"])
    (cfg / "environments").mkdir(parents=True)
    (cfg / "environments" / "e.yaml").write_text("image: localhost/x:1\n")
    # enough bindings that the compiled rules pass the library's 1 MiB
    long = "/src/" + "d" * 150
    (cfg / "repositories.yaml").write_text(
        "repositories:\n" + "".join(f"  {long}/{i}:\n    environment: e\n" for i in range(8000))
    )
    r = subprocess.run(
        [sys.executable, "-m", "qpod_engine.cli.shell", "--shell", "/bin/sh", "-c", "true"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0
    assert "is over 1024 KiB, more than the library reads" in r.stderr and "no usable rules" not in r.stderr
