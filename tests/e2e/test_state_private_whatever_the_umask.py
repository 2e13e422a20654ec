"""qpod's state is private whatever the umask (umask 000 included): the state dirs 0700, the
rules, the snapshot, the container facts, the command log and its lock 0600, so no other user
can read your command lines or redirect your commands. Config files are the user's: they follow
the umask, except that neither they nor the directories qpod makes are ever writable by group or
others. Checked as a second, unprivileged user."""

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO_ROOT, podman_available, remove_containers_of

OTHER = "qpodsafety"
pytestmark = pytest.mark.rootless  # a second user reads and writes


@pytest.fixture(scope="module")
def other_user() -> str:
    if os.geteuid() != 0:
        pytest.skip("needs root to act as a second user")
    if subprocess.run(["id", OTHER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "-M", "-s", "/bin/sh", OTHER], check=True)
    return OTHER


@pytest.fixture
def shared_home() -> Iterator[Path]:
    """Config and state under a world-traversable dir (pytest's tmp dir is 0700: there the
    second user could not get near the files whatever their modes)."""
    d = Path(tempfile.mkdtemp(prefix="qpod-perms-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def qpod_umask0(home: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``qpod ARGS`` from a shell whose umask is 000."""
    env = {
        **os.environ,
        "QPOD_CONFIG_DIR": str(home / "config"),
        "QPOD_STATE_DIR": str(home / "state"),
        "PYTHONPATH": str(REPO_ROOT),
    }
    return subprocess.run(
        ["sh", "-c", 'umask 000; exec "$@"', "sh", sys.executable, "-m", "qpod_engine.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def as_other(user: str, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", user, "--", "sh", "-c", script], capture_output=True, text=True)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def make_git_repo(path: Path) -> Path:
    path.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "master", str(path)], check=True)
    return path


def test_state_is_private_and_config_is_not_writable_by_others(shared_home: Path, other_user: str) -> None:
    repo = make_git_repo(shared_home / "repo")
    assert qpod_umask0(shared_home, "env", "add", "e", "--image", "localhost/x:1").returncode == 0
    r = qpod_umask0(shared_home, "init", "e", cwd=repo)
    assert r.returncode == 0, r.stderr
    # the launcher writes the log through cmdlog.append: the same call, from a umask-000 process
    code = (
        "from qpod_engine.log import cmdlog; cmdlog.append({'argv': ['make', 'secret-token'], 'status': 0}, 1 << 20, 3)"
    )
    env = {
        **os.environ,
        "QPOD_CONFIG_DIR": str(shared_home / "config"),
        "QPOD_STATE_DIR": str(shared_home / "state"),
        "PYTHONPATH": str(REPO_ROOT),
    }
    subprocess.run(["sh", "-c", 'umask 000; exec "$@"', "sh", sys.executable, "-c", code], env=env, check=True)

    state = shared_home / "state"
    assert mode(state) == 0o700
    for name in ("rules", "snapshot.json", "commands.log", "commands.log.lock"):
        assert mode(state / name) == 0o600, name
    config = shared_home / "config"
    # the user's files, the user's umask, but never writable by another user (an environment's
    # env: could otherwise get an LD_AUDIT library of theirs run as you)
    assert mode(config / "repositories.yaml") == 0o644
    assert mode(config / "environments" / "e.yaml") == 0o644
    assert mode(config) == mode(config / "environments") == 0o755
    assert mode(config / ".qpod.lock") == 0o600

    # the second user can neither read the command lines nor redirect anyone's commands
    r = as_other(
        other_user,
        f"cat {state}/commands.log; ls {state}; echo x >> {state}/rules; "
        f"echo x > {state}/rules.new && mv {state}/rules.new {state}/rules",
    )
    assert "secret-token" not in r.stdout
    assert r.stderr.count("Permission denied") >= 3, r.stderr
    assert (state / "rules").read_text().count("\nx\n") == 0
    r = as_other(
        other_user,
        f"echo 'env: {{LD_AUDIT: /tmp/evil.so}}' >> {config}/environments/e.yaml; "
        f"touch {config}/environments/evil.yaml",
    )
    assert r.stderr.count("Permission denied") == 2, r.stderr
    assert "LD_AUDIT" not in (config / "environments" / "e.yaml").read_text()


def test_state_left_open_by_an_older_qpod_is_closed(shared_home: Path, other_user: str) -> None:
    """A state dir and log made 0777/0666 (umask 000 before this fix) are closed on the next write."""
    state = shared_home / "state"
    state.mkdir()
    state.chmod(0o777)
    (state / "commands.log").write_text('{"argv":["make"],"status":0}\n')
    (state / "commands.log").chmod(0o666)
    repo = make_git_repo(shared_home / "repo")
    assert qpod_umask0(shared_home, "env", "add", "e", "--image", "localhost/x:1").returncode == 0
    assert qpod_umask0(shared_home, "init", "e", cwd=repo).returncode == 0
    assert mode(state) == 0o700
    assert mode(state / "snapshot.json") == 0o600
    env = {**os.environ, "QPOD_STATE_DIR": str(state), "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run(
        [sys.executable, "-c", "from qpod_engine.log import cmdlog; cmdlog.append({'status': 0})"], env=env, check=True
    )
    assert mode(state / "commands.log") == 0o600
    assert as_other(other_user, f"cat {state}/commands.log").returncode != 0


@pytest.mark.podman
@pytest.mark.skipif(not podman_available(), reason="podman is not installed")
def test_a_real_redirected_command_under_umask_000_leaves_private_state(
    shared_home: Path, other_user: str, busybox_image: str
) -> None:
    repo = make_git_repo(shared_home / "proj")
    assert qpod_umask0(shared_home, "env", "add", "bb", "--image", busybox_image).returncode == 0
    assert qpod_umask0(shared_home, "init", "bb", cwd=repo).returncode == 0
    try:
        r = qpod_umask0(shared_home, "exec", "echo", "secret-token", cwd=repo)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "secret-token\n"
    finally:
        remove_containers_of(str(repo))
    state = shared_home / "state"
    assert mode(state) == 0o700
    for p in [
        state / "rules",
        state / "snapshot.json",
        state / "commands.log",
        state / "commands.log.lock",
        *(state / "containers").glob("*.json"),
    ]:
        assert mode(p) == 0o600, p
    assert mode(state / "containers") == 0o700
    assert list((state / "containers").glob("*.json"))  # the facts were written
    r = as_other(other_user, f"cat {state}/commands.log")
    assert r.returncode != 0 and "secret-token" not in r.stdout
