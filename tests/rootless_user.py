"""Real normal users for the rootless tests, running this checkout installed by setup.sh.

A user here is made with ``useradd -m`` (Debian gives it subuid/subgid ranges) and runs commands
as ``su -`` or cron would: ``runuser`` with a clean environment, Debian's default user PATH with
the tests' own install first (so ``qpod`` is this checkout's) and no XDG_RUNTIME_DIR unless a test
asks for one.

The tests install into a prefix of their own (``PREFIX``, ``BIN_DIR``: /opt/qpod-tests/<checkout>),
never over the user's /opt/qpod and /usr/local/bin: ``ensure_installed`` compares the fingerprint
setup.sh recorded there and runs ``bash scripts/setup.sh`` with QPOD_PREFIX and QPOD_BIN_DIR when
it differs. Only in CI (CI=true, a machine made for the run: .ci/run) does one test run the
README's command exactly as written, into /opt/qpod.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO_ROOT, wait_until

README_PREFIX = Path("/opt/qpod")  # where the README's `sudo bash scripts/setup.sh` installs
README_BIN_DIR = Path("/usr/local/bin")
TESTS_HOME = Path("/opt/qpod-tests") / hashlib.sha256(str(REPO_ROOT).encode()).hexdigest()[:12]
PREFIX = TESTS_HOME / "venv"  # the tests' own install of this checkout (one per checkout)
BIN_DIR = TESTS_HOME / "bin"
QPOD = BIN_DIR / "qpod"
IN_CI = os.environ.get("CI") == "true"
# Debian's default PATH for users (login.defs ENV_PATH), the tests' install first
USER_PATH = f"{BIN_DIR}:/usr/local/bin:/usr/bin:/bin"
DEBIAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # python3 is Debian's, externally managed (PEP 668)


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("creating users needs root")
    for tool in ("useradd", "userdel", "runuser", "podman"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} missing")


def source_hash() -> str:
    r = subprocess.run(
        ["bash", "scripts/setup.sh", "--source-hash"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    return r.stdout.strip()


def run_setup(readme: bool = False, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    """``bash scripts/setup.sh`` with only Debian's directories on PATH: into the tests' prefix,
    or (``readme``) exactly as the README says, into /opt/qpod and /usr/local/bin."""
    env = {"PATH": DEBIAN_PATH, "HOME": "/root", "LANG": "C.UTF-8"}
    if not readme:
        env.update(QPOD_PREFIX=str(PREFIX), QPOD_BIN_DIR=str(BIN_DIR))
    return subprocess.run(
        ["bash", "scripts/setup.sh"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def ensure_installed() -> None:
    """The tests' install is this checkout (setup.sh run again if it is missing or older)."""
    need_root()
    recorded = PREFIX / "qpod-source.sha256"
    current = recorded.read_text().strip() if recorded.exists() else ""
    if QPOD.exists() and current == source_hash():
        return
    r = run_setup()
    if r.returncode != 0:
        tail = [x for x in (r.stderr + r.stdout).splitlines() if x.strip()][-1:]
        pytest.fail(f"scripts/setup.sh failed (exit {r.returncode}): {tail[0] if tail else 'no output'}")
    assert recorded.read_text().strip() == source_hash(), "setup.sh installed other sources than this checkout's"


class User:
    def __init__(self, name: str) -> None:
        pw = pwd.getpwnam(name)
        self.name, self.uid, self.gid, self.home = name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir)

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "HOME": str(self.home),
            "USER": self.name,
            "LOGNAME": self.name,
            "SHELL": "/bin/bash",
            "PATH": USER_PATH,
            "LANG": "C.UTF-8",
        }
        env.update(extra)
        return env

    def argv(self, *cmd: str, **extra: str) -> list[str]:
        return [
            "runuser",
            "-u",
            self.name,
            "--",
            "env",
            "-i",
            *(f"{k}={v}" for k, v in self.env(**extra).items()),
            *cmd,
        ]

    def run(
        self, *cmd: str, cwd: Path | None = None, input: str | None = None, timeout: float = 300, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*cmd, **extra),
            cwd=cwd or self.home,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )

    def qpod(
        self, *args: str, cwd: Path | None = None, input: str | None = None, timeout: float = 300, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        return self.run("qpod", *args, cwd=cwd, input=input, timeout=timeout, **extra)

    def login(self, script: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        """``su - NAME -c SCRIPT``: a login shell as a person gets it from su, cron or CI, with
        the tests' install put first on its PATH."""
        return subprocess.run(
            ["su", "-", self.name, "-c", f'PATH="{BIN_DIR}:$PATH"; {script}'],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            cwd="/",
        )

    def pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-u", str(self.uid)], capture_output=True, text=True).stdout
        return [int(x) for x in out.split()]

    def stop_everything(self) -> None:
        """End this test user's processes (the podman services and pause process the tests started)."""
        for pid in self.pids():
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass
        try:
            wait_until(lambda: not self.pids(), f"{self.name}'s processes to end on SIGTERM", 30)
        except AssertionError:
            pass  # then SIGKILL
        for pid in self.pids():
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


def make_user(name: str, system: bool = False) -> User:
    """A user as ``useradd -m`` makes it (``system``: ``-r``, which Debian gives no subuid range)."""
    need_root()
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "-m", "-s", "/bin/bash", *(["-r"] if system else []), name], check=True, capture_output=True
        )
    return User(name)


def remove_user(user: User) -> None:
    """Remove the user, its processes, home (with its podman storage) and podman's runtime dir."""
    user.run("podman", "rm", "-af", "-t", "0", timeout=120)
    user.stop_everything()
    subprocess.run(["userdel", "-r", "-f", user.name], capture_output=True)
    shutil.rmtree(user.home, ignore_errors=True)  # subuid-owned files of its storage
    shutil.rmtree(f"/tmp/podman-run-{user.uid}", ignore_errors=True)
    shutil.rmtree(f"/run/user/{user.uid}", ignore_errors=True)
