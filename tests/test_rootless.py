"""The same transparency as root, for a developer running podman as themselves (rootless).

A real non-root user (created here) runs qpod from its own virtualenv; podman is rootless,
with --userns=keep-id, so build outputs belong to that user.
"""

import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO_ROOT

pytestmark = [pytest.mark.podman, pytest.mark.rootless]

USER = "qpodtest"
VENV = Path("/opt/qpod-rootless-venv")


class AsUser:
    def __init__(self, name: str) -> None:
        pw = pwd.getpwnam(name)
        self.name, self.uid, self.gid, self.home = name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir)
        self.runtime = Path(f"/run/user/{self.uid}")

    def env(self) -> dict[str, str]:
        return {"HOME": str(self.home), "USER": self.name, "LOGNAME": self.name, "PATH":
                f"{VENV}/bin:/usr/local/bin:/usr/bin:/bin", "XDG_RUNTIME_DIR": str(self.runtime),
                "LANG": "C.UTF-8", "QPOD_CONFIG_DIR": str(self.home / "qcfg"),
                "QPOD_STATE_DIR": str(self.home / "qstate")}

    def argv(self, *cmd: str) -> list[str]:
        exports = [f"{k}={v}" for k, v in self.env().items()]
        return ["runuser", "-u", self.name, "--", "env", "-i", *exports, *cmd]

    def run(self, *cmd: str, cwd: Path | None = None, input: str | None = None,
            timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*cmd), cwd=cwd or self.home, input=input, capture_output=True, text=True,
                              timeout=timeout)

    def qpod(self, *args: str, cwd: Path | None = None, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.run(f"{VENV}/bin/qpod", *args, cwd=cwd, input=input)


@pytest.fixture(scope="session")
def user() -> Iterator[AsUser]:
    if os.geteuid() != 0:
        pytest.skip("creating the test user needs root")
    if not shutil.which("runuser"):
        pytest.skip("runuser missing")
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", USER], check=True)
    u = AsUser(USER)
    u.runtime.mkdir(parents=True, exist_ok=True)
    os.chown(u.runtime, u.uid, u.gid)
    os.chmod(u.runtime, 0o700)
    # the user's own qpod: a virtualenv readable by everyone, with this checkout installed
    if not (VENV / "bin" / "python").exists():
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(VENV)], check=True)
    subprocess.run([f"{VENV}/bin/pip", "install", "-q", "--force-reinstall", "--no-deps", str(REPO_ROOT)], check=True,
                   capture_output=True)
    subprocess.run([f"{VENV}/bin/pip", "install", "-q", str(REPO_ROOT)], check=True, capture_output=True)
    r = u.run(f"{VENV}/bin/python", "-c", "from qpod_engine.images import build_busybox_image as b; print(b())")
    assert r.returncode == 0, r.stderr
    yield u
    u.run("podman", "rm", "-af", "-t", "0")
    u.run("pkill", "-u", USER, "-f", "podman system service")


@pytest.fixture
def user_repo(user: AsUser) -> Iterator[Path]:
    for d in ("qcfg", "qstate", "proj"):
        subprocess.run(["rm", "-rf", str(user.home / d)], check=True)
    repo = user.home / "proj"
    assert user.run("git", "init", "-q", str(repo)).returncode == 0
    (repo / "sub").mkdir()
    os.chown(repo / "sub", user.uid, user.gid)
    assert user.qpod("env", "add", "bb", "--image", "localhost/qpod-busybox:latest").returncode == 0
    r = user.qpod("init", "bb", cwd=repo)
    assert r.returncode == 0, r.stderr
    yield repo
    user.run("podman", "rm", "-af", "-t", "0")


def test_rootless_files_belong_to_the_user(user: AsUser, user_repo: Path) -> None:
    r = user.qpod("exec", "sh", "-c", "id -u; touch built.o; mkdir -p out/dir", cwd=user_repo / "sub")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(user.uid)
    for p in (user_repo / "sub" / "built.o", user_repo / "sub" / "out" / "dir"):
        st = p.stat()
        assert (st.st_uid, st.st_gid) == (user.uid, user.gid)


def test_rootless_transparency(user: AsUser, user_repo: Path) -> None:
    r = user.qpod("exec", "pwd", cwd=user_repo / "sub")
    assert r.stdout.strip() == str(user_repo / "sub"), r.stderr
    r = user.qpod("exec", "cat", cwd=user_repo, input="piped\n")
    assert r.stdout == "piped\n"
    r = user.qpod("exec", "sh", "-c", "echo o; echo e >&2; exit 5", cwd=user_repo)
    assert (r.returncode, r.stdout, r.stderr) == (5, "o\n", "e\n")
    r = user.qpod("exec", "nope-not-here", cwd=user_repo)
    assert r.returncode == 127


def test_rootless_sigterm_reaches_command(user: AsUser, user_repo: Path) -> None:
    p = subprocess.Popen(user.argv(f"{VENV}/bin/qpod", "exec", "sh", "-c",
                                   'trap "echo got-TERM; exit 42" TERM; echo ready; while :; do sleep 0.1; done'),
                         cwd=user_repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                         text=True)
    assert p.stdout.readline() == "ready\n"
    time.sleep(0.2)
    # signal the launcher itself (runuser's child), as a shell or an editor would
    launcher = subprocess.run(["pgrep", "-u", USER, "-f", "qpod exec sh -c trap"], capture_output=True,
                              text=True).stdout.split()
    assert launcher
    os.kill(int(launcher[0]), signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    assert out == "got-TERM\n", err
    assert p.returncode == 42


def test_unwritable_config_is_one_line_and_loses_nothing(user: AsUser, user_repo: Path) -> None:
    cfg = user.home / "qcfg"
    env_file = cfg / "environments" / "bb.yaml"
    before = env_file.read_bytes()
    os.chmod(cfg / "environments", 0o555)
    try:
        r = user.qpod("env", "add", "bb", "--replace", "--image", "other:1")
        assert r.returncode != 0
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "cannot write" in lines[0] and str(cfg / "environments") in lines[0]
        assert env_file.read_bytes() == before
    finally:
        os.chmod(cfg / "environments", 0o755)
