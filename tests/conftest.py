"""Shared fixtures and helpers: isolated qpod config/state, real git repositories, real podman
images, the one ``wait_until`` every wait goes through, and the markers' guard (tests/README.md)."""

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import preload_driver
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
NO_PODMAN_DIR = Path(__file__).resolve().parent / "no_podman"  # a `podman` that refuses

# The tests start commands as a terminal's shell would: with SIGINT and SIGQUIT at their
# defaults. A suite started in the background by a script (`.ci/run &`) inherits them ignored,
# and an ignored signal stays ignored in every child (natively too: qpod keeps that rule), so
# the Ctrl-C tests would test nothing but the inheritance.
for _sig, _handler in ((signal.SIGINT, signal.default_int_handler), (signal.SIGQUIT, signal.SIG_DFL)):
    if signal.getsignal(_sig) == signal.SIG_IGN:
        signal.signal(_sig, _handler)

T = TypeVar("T")


def wait_until(cond: Callable[[], T], what: str | Callable[[], str], timeout: float = 60, interval: float = 0.05) -> T:
    """Until ``cond()`` holds; returns what it returned. Every wait of the tests is this one: a
    condition, never a fixed sleep (CI is a loaded 2-core machine), and the timeout only a guard
    against a hang, never a measure (speed is bench/'s business). ``what`` names the condition
    in the failure, or is called then for what to show (a terminal's screen)."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"not reached in {timeout:.0f} s: {said}")
        time.sleep(interval)


def podman_available() -> bool:
    return shutil.which("podman") is not None


# --- markers: what a test needs is on it, so `-m "not podman and not rootless and not demo"` is
# the quick selection (make check) and runs no podman --------------------------------------------

# a test that takes one of these fixtures needs what they need, marked or not
FIXTURE_MARKS = {
    "busybox_image": ("podman",),
    "bound_repo": ("podman",),
    "debian11_image": ("podman", "demo"),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            for mark in FIXTURE_MARKS.get(fixture, ()):
                if item.get_closest_marker(mark) is None:
                    item.add_marker(mark)


@pytest.fixture(autouse=True)
def _podman_only_when_marked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test not marked ``podman`` finds a ``podman`` on PATH that refuses (exit 125, one line):
    a test that needs podman and lacks the marker fails instead of running it unseen."""
    if request.node.get_closest_marker("podman") is None:
        monkeypatch.setenv("PATH", f"{NO_PODMAN_DIR}{os.pathsep}{os.environ.get('PATH', '')}")


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


def run_qpod_shell(
    script: str, cwd: Path | str, shell: str = "/bin/sh", env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``qpod-shell --shell SHELL -c SCRIPT``: every launch of the script seen by the library
    (started as from a plain terminal: no library or qpod-shell of the test run's own)."""
    if env is None:
        env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("QPOD_SHELL")}
    return subprocess.run(
        [sys.executable, "-I", "-m", "qpod_engine.cli.shell", "--shell", shell, "-c", script],
        cwd=cwd,
        env=env,
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


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> preload_driver.Built:
    """The preload library and its test driver, compiled from this checkout once a run."""
    return preload_driver.build(tmp_path_factory.mktemp("preload"))


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


def stop_service_on(socket: str) -> None:
    """End the podman API service qpod started on ``socket`` (a test's own path): the pid its
    starters recorded beside the socket, if that process is still a service of that socket."""
    from qpod_engine.podman import service

    try:
        pid = int(Path(service.lock_path(socket)).read_text().strip() or "0")
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return
    if pid > 0 and f"unix://{socket}".encode() in argv:
        os.killpg(pid, signal.SIGTERM)  # its own session (service._spawn)

        def gone() -> bool:
            try:
                return Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()[0] in (b"Z", b"X")
            except OSError:
                return True

        wait_until(gone, f"the podman service on {socket} to end")


def container_processes(root: Path | str, env: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(state, command line) of every process in the container of repository ``root``, read in
    that container (its own pid namespace): a test's own processes, never the machine's."""
    script = (
        'for p in /proc/[0-9]*; do s=$(cut -d")" -f2 $p/stat 2>/dev/null | cut -d" " -f2) || continue; '
        'echo "$s $(tr "\\0" " " < $p/cmdline 2>/dev/null)"; done'
    )
    r = run_qpod("exec", "sh", "-c", script, cwd=root, env=env)
    assert r.returncode == 0, r.stderr
    rows = [line.partition(" ") for line in r.stdout.splitlines()]
    return [(state, cmd.strip()) for state, _, cmd in rows if state and "/proc/[0-9]" not in cmd]


def parse_generator_output(text: str) -> dict[str, str]:
    """KEY=VALUE lines as systemd reads a generator's output (its environment-file syntax, the
    part our generator uses: double-quoted values with backslash escapes, nothing expanded)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, raw = line.split("=", 1)
        if raw.startswith('"') and raw.endswith('"'):
            raw, val, i = raw[1:-1], "", 0
            while i < len(raw):
                if raw[i] == "\\" and i + 1 < len(raw) and raw[i + 1] in '"\\`$\n':
                    i += 1
                val += raw[i]
                i += 1
            out[key] = val
        else:
            out[key] = raw
    return out


# what a plain podman run or build needs on these machines (../shared/PODMAN-HERE.md): runc, and
# limits under the machine's hard ones (podman's defaults are above them)
PODMAN_RUNTIME_AND_LIMITS = ["--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000"]


def build_test_image(tag: str, containerfile: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An image of the tests' own (FROM the Debian 11 test image plus a package), built with
    qpod's runtime and limits; the test fails with podman's words when it cannot be built."""
    env = {**os.environ, "QPOD_OFF": "1"}
    ctx = tmp_path_factory.mktemp("image")
    (ctx / "Containerfile").write_text(containerfile)
    r = subprocess.run(
        ["podman", "build", *PODMAN_RUNTIME_AND_LIMITS, "--network=host", "-t", tag, str(ctx)],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    if r.returncode != 0:
        pytest.fail(f"cannot build the test image {tag}: {r.stderr[-2000:]}")
    return tag
