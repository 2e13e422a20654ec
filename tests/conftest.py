"""Shared fixtures: isolated qpod config/state, real git repositories, real podman images."""

import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# The tests start commands as a terminal's shell would: with SIGINT and SIGQUIT at their
# defaults. A suite started in the background by a script (`.ci/run &`) inherits them ignored,
# and an ignored signal stays ignored in every child (natively too: qpod keeps that rule), so
# the Ctrl-C tests would test nothing but the inheritance.
for _sig, _handler in ((signal.SIGINT, signal.default_int_handler), (signal.SIGQUIT, signal.SIG_DFL)):
    if signal.getsignal(_sig) == signal.SIG_IGN:
        signal.signal(_sig, _handler)


def wait_until(cond: Callable[[], object], what: str, timeout: float = 60) -> None:
    """Until ``cond()`` holds (a condition, never a fixed sleep: CI is a loaded 2-core machine)."""
    import time

    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout}s")
        time.sleep(0.05)


def podman_available() -> bool:
    return shutil.which("podman") is not None


@pytest.fixture
def qpod_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """QPOD_CONFIG_DIR / QPOD_STATE_DIR in a temp dir, for this process and the qpod it runs."""
    home = tmp_path / "qpod-home"
    monkeypatch.setenv("QPOD_CONFIG_DIR", str(home / "config"))
    monkeypatch.setenv("QPOD_STATE_DIR", str(home / "state"))
    return home


def git(*args: str, cwd: Path) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def make_repo(tmp_path: Path) -> Callable[..., Path]:
    """Create a real git repository (with one commit on ``master``) under tmp_path."""

    def make(name: str = "repo", files: dict[str, str] | None = None) -> Path:
        root = tmp_path / name
        root.mkdir(parents=True)
        git("init", "-q", "-b", "master", cwd=root)
        for rel, text in (files or {"README": "x\n"}).items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
        git("add", "-A", cwd=root)
        git("commit", "-q", "-m", "init", cwd=root)
        return root

    return make


def run_qpod(
    *args: str,
    cwd: Path | str | None = None,
    input: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``qpod ARGS`` as a user types it (a real process, real exit status)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "qpod_engine.cli", *args],
        cwd=cwd,
        input=input,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def busybox_image() -> str:
    if not podman_available():
        pytest.skip("podman is not installed")
    from qpod_engine.podman.local_images import build_busybox_image

    return build_busybox_image()


@pytest.fixture(scope="session")
def debian11_image() -> str:
    """Debian 11 with gcc 10, make, gdb and python3 (CI builds it before the tests)."""
    if not podman_available():
        pytest.skip("podman is not installed")
    from qpod_engine.podman.local_images import build_debian11_image

    return build_debian11_image()


@pytest.fixture
def bound_repo(qpod_home: Path, make_repo: Callable[..., Path], busybox_image: str) -> Iterator[Path]:
    """A repository bound to a busybox environment 'bb'; its containers are removed afterwards."""
    root = make_repo("proj-" + uuid.uuid4().hex[:6], {"README": "x\n", "sub/dir/file": "y\n"})
    assert run_qpod("env", "add", "bb", "--image", busybox_image, "--env", "FIXED=1").returncode == 0
    r = run_qpod("init", "bb", cwd=root)
    assert r.returncode == 0, r.stderr
    yield root
    remove_containers_of(str(root))


def remove_containers_of(root: str) -> None:
    env = {**os.environ, "QPOD_OFF": "1"}
    env.pop("LD_PRELOAD", None)
    ids = subprocess.run(
        ["podman", "ps", "-aq", "--filter", f"label=qpod.repo={root}"], capture_output=True, text=True, env=env
    ).stdout.split()
    if ids:
        subprocess.run(["podman", "rm", "-f", "-t", "0", *ids], capture_output=True, env=env)
