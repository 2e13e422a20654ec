"""The same transparency as root, for a developer running podman as themselves (rootless).

A real non-root user (created here) runs the qpod that ``scripts/setup.sh`` installed for every
user (the tests' own install of this checkout: rootless_user.PREFIX), as ``su -``, cron or CI would:
no XDG_RUNTIME_DIR, so the API socket is wherever podman itself puts it. Podman is rootless,
with --userns=keep-id, so build outputs belong to that user.
"""

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_until
from rootless_user import PREFIX, User, ensure_installed, make_user

pytestmark = [pytest.mark.podman, pytest.mark.rootless]

USER = "qpodtest"


@pytest.fixture(scope="session")
def user() -> Iterator[User]:
    ensure_installed()
    u = make_user(USER)
    build = "from qpod_engine.podman.local_images import build_busybox_image as b; print(b())"
    r = u.run(str(PREFIX / "bin" / "python"), "-c", build)
    assert r.returncode == 0, r.stderr
    yield u
    u.run("podman", "rm", "-af", "-t", "0")
    u.stop_everything()


def qpod_env(user: User) -> dict[str, str]:
    return {"QPOD_CONFIG_DIR": str(user.home / "qcfg"), "QPOD_STATE_DIR": str(user.home / "qstate")}


class Q:
    """The user's qpod with this test's config and state dirs."""

    def __init__(self, user: User) -> None:
        self.user = user

    def __call__(
        self, *args: str, cwd: Path | None = None, input: str | None = None, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        return self.user.qpod(*args, cwd=cwd, input=input, **qpod_env(self.user), **extra)


@pytest.fixture
def user_repo(user: User) -> Iterator[Path]:
    for d in ("qcfg", "qstate", "proj"):
        subprocess.run(["rm", "-rf", str(user.home / d)], check=True)
    repo = user.home / "proj"
    assert user.run("git", "init", "-q", str(repo)).returncode == 0
    (repo / "sub").mkdir()
    os.chown(repo / "sub", user.uid, user.gid)
    q = Q(user)
    assert q("env", "add", "bb", "--image", "localhost/qpod-busybox:latest").returncode == 0
    r = q("init", "bb", cwd=repo)
    assert r.returncode == 0, r.stderr
    yield repo
    user.run("podman", "rm", "-af", "-t", "0")


def test_rootless_files_belong_to_the_user(user: User, user_repo: Path) -> None:
    r = Q(user)("exec", "sh", "-c", "id -u; touch built.o; mkdir -p out/dir", cwd=user_repo / "sub")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(user.uid)
    for p in (user_repo / "sub" / "built.o", user_repo / "sub" / "out" / "dir"):
        st = p.stat()
        assert (st.st_uid, st.st_gid) == (user.uid, user.gid)


def test_rootless_transparency(user: User, user_repo: Path) -> None:
    q = Q(user)
    r = q("exec", "pwd", cwd=user_repo / "sub")
    assert r.stdout.strip() == str(user_repo / "sub"), r.stderr
    r = q("exec", "cat", cwd=user_repo, input="piped\n")
    assert r.stdout == "piped\n"
    r = q("exec", "sh", "-c", "echo o; echo e >&2; exit 5", cwd=user_repo)
    assert (r.returncode, r.stdout, r.stderr) == (5, "o\n", "e\n")
    r = q("exec", "nope-not-here", cwd=user_repo)
    assert r.returncode == 127


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def test_rootless_sigterm_reaches_command(user: User, user_repo: Path) -> None:
    argv = user.argv(
        "qpod",
        "exec",
        "sh",
        "-c",
        'trap "echo got-TERM; exit 42" TERM; echo ready; while :; do sleep 0.1; done',
        **qpod_env(user),
    )
    p = subprocess.Popen(
        argv, cwd=user_repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
    )
    try:
        assert p.stdout is not None and p.stdout.readline() == "ready\n"
        # signal qpod itself (runuser's child, whatever it exec'd into), as a shell or an editor would
        qpod = _children(p.pid)
        assert len(qpod) == 1, qpod
        os.kill(qpod[0], signal.SIGTERM)
        out, err = p.communicate(timeout=60)
        assert out == "got-TERM\n", err
        assert p.returncode == 42
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_unwritable_config_is_one_line_and_loses_nothing(user: User, user_repo: Path) -> None:
    cfg = user.home / "qcfg"
    env_file = cfg / "environments" / "bb.yaml"
    before = env_file.read_bytes()
    os.chmod(cfg / "environments", 0o555)
    try:
        r = Q(user)("env", "add", "bb", "--replace", "--image", "other:1")
        assert r.returncode != 0
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "cannot write" in lines[0] and str(cfg / "environments") in lines[0]
        assert env_file.read_bytes() == before
    finally:
        os.chmod(cfg / "environments", 0o755)


def test_api_socket_is_where_podman_puts_it_without_a_session(user: User, user_repo: Path) -> None:
    """su -, cron, CI: no XDG_RUNTIME_DIR, no /run/user/UID; qpod asks podman (its fallback dir)."""
    assert not Path(f"/run/user/{user.uid}").exists()
    podman_says = user.run("podman", "info", "--format", "{{.Host.RemoteSocket.Path}}").stdout.strip()
    assert podman_says == f"/tmp/podman-run-{user.uid}/podman/podman.sock"
    r = Q(user)("exec", "true", cwd=user_repo)
    assert r.returncode == 0, r.stderr
    cached = (user.home / "qstate" / "podman-socket").read_text().splitlines()
    assert cached[1] == podman_says and f"uid={user.uid} xdg= " in cached[0]
    assert Path(podman_says).is_socket()


def test_with_a_login_session_runtime_dir(user: User, user_repo: Path) -> None:
    """A desktop or ssh login: XDG_RUNTIME_DIR=/run/user/UID; the socket follows podman there."""
    run_dir = Path(f"/run/user/{user.uid}")
    run_dir.mkdir(parents=True)
    os.chown(run_dir, user.uid, user.gid)
    os.chmod(run_dir, 0o700)
    try:
        q = Q(user)
        r = q("exec", "sh", "-c", "id -u", cwd=user_repo, XDG_RUNTIME_DIR=str(run_dir))
        assert (r.returncode, r.stdout) == (0, f"{user.uid}\n"), r.stderr
        cached = (user.home / "qstate" / "podman-socket").read_text().splitlines()
        assert cached[1] == f"{run_dir}/podman/podman.sock"
        assert Path(cached[1]).is_socket()
    finally:
        user.run("podman", "rm", "-af", "-t", "0", XDG_RUNTIME_DIR=str(run_dir))
        user.stop_everything()  # the service and pause process of that runtime dir (podman restarts them)
        subprocess.run(["rm", "-rf", str(run_dir)])


def test_works_again_after_a_reboot_left_podmans_runtime_dir(user: User, user_repo: Path) -> None:
    """/tmp on disk outlives a reboot (or a session's processes are all killed) while qpod's warm
    container runs: podman alone then fails every command until 'podman system migrate'; qpod
    repairs that itself, and the next redirected command runs."""
    q = Q(user)
    r = q("exec", "echo", "warm", cwd=user_repo)
    assert (r.returncode, r.stdout) == (0, "warm\n"), r.stderr
    assert user.run("podman", "ps", "-q").stdout.strip(), "the warm container should be running"
    for pid in user.pids():  # the "reboot": every process of the user gone at once, files left
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_until(lambda: not user.pids(), f"every process of {user.name} gone", 60)
    stale = user.run("podman", "ps", "-q")
    assert stale.returncode != 0, "podman should be stuck here (else this test tests nothing)"
    r = q("exec", "echo", "again", cwd=user_repo)
    assert (r.returncode, r.stdout) == (0, "again\n"), r.stderr
    assert user.run("podman", "ps", "-q").returncode == 0
    log = (user.home / "qstate" / "podman-service.log").read_text()
    assert "ran 'podman system migrate' (exit 0" in log
