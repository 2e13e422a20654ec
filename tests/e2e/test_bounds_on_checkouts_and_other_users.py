"""Bounds on what a checkout or another local user can make qpod do.

- Locks and sockets live in the user's private places: the image lock is no fixed name in /tmp
  that another user can create first (and hold, or make unreadable), a lock wait says who holds
  it and gives up; ssh's ControlPath fallback for a long state dir is no fixed name either.
- A checkout's git metadata (HEAD, rebase ``head-name``, BISECT_START, ``.git`` files,
  commondir, gitdir, config) may be a FIFO or /dev/zero: no qpod command, no redirected command
  hangs on it or fills memory. A build context holding a huge (sparse) file is refused at once
  with a clear error, in bounded memory.
- The shared ssh connection is one per identity too.

Hangs are guarded by a subprocess timeout (the test fails, the process group is killed), memory
by the children's maxrss and an RLIMIT_DATA that turns a runaway read into a failure, not an
exhausted machine.
"""

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import REPO_ROOT, remove_containers_of, run_qpod, wait_until

from qpod_engine.base.errors import QpodError
from qpod_engine.podman import local_images as images
from qpod_engine.podman import remote

PLANTER = "qpodplanter"  # the other local user, who plants
VICTIM = "qpodlockuser"  # a plain user running qpod (root reads a 0600 file of anyone)
HANG_GUARD = 90.0  # seconds: a command that has not returned by then hangs
MEMORY_LIMIT = 1 << 30  # RLIMIT_DATA of the measured commands: a runaway read fails instead
MAX_RSS_KIB = 400 << 10  # what a qpod command with its podman children may use at most here
LOCK_REF = "localhost/qpod-trust-lock-test:latest"


def _user(name: str) -> str:
    if os.geteuid() != 0:
        pytest.skip("needs root to act as other local users")
    if subprocess.run(["id", name], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "-M", "-s", "/bin/sh", name], check=True)
    return name


@pytest.fixture
def planter() -> str:
    return _user(PLANTER)


@pytest.fixture
def victim() -> str:
    return _user(VICTIM)


def uid_of(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


def run_guarded(
    argv: list[str], cwd: Path | str | None = None, env: dict[str, str] | None = None, input: str | None = None
) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run ``argv`` (its own process group, RLIMIT_DATA = MEMORY_LIMIT) to its end: (result,
    largest maxrss in KiB of it and its descendants). A run past HANG_GUARD is a hang: the group
    is killed and the test fails."""
    wrap = (
        "import resource, subprocess, sys\n"
        f"resource.setrlimit(resource.RLIMIT_DATA, ({MEMORY_LIMIT}, {MEMORY_LIMIT}))\n"
        "rc = subprocess.run(sys.argv[1:]).returncode\n"
        "sys.stderr.write('\\nmaxrss-kib=%d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-I", "-c", wrap, *argv],
        cwd=cwd,
        env=env,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(input or "", timeout=HANG_GUARD)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(argv)} hung (killed after {HANG_GUARD:.0f} s): {err[-500:]}")
    found = re.search(r"\nmaxrss-kib=(\d+)\n$", err)
    assert found, err
    return subprocess.CompletedProcess(argv, proc.returncode, out, err[: found.start()]), int(found.group(1))


def qpod(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    r, rss = run_guarded([sys.executable, "-I", "-m", "qpod_engine.cli", *args], cwd=cwd)
    assert "Traceback" not in r.stderr and "MemoryError" not in r.stderr, r.stderr
    assert rss < MAX_RSS_KIB, f"qpod {' '.join(args)}: {rss} KiB"
    return r


def qpod_shell_c(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A command typed in qpod-shell (redirected by the preload library: the client when the
    container is warm, the launcher when it is cold)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and k != "LD_PRELOAD"}
    r, rss = run_guarded(
        [sys.executable, "-I", "-m", "qpod_engine.cli.shell", "--shell", "/bin/sh", "-c", script], cwd=cwd, env=env
    )
    assert "Traceback" not in r.stderr and "MemoryError" not in r.stderr, r.stderr
    assert rss < MAX_RSS_KIB, f"qpod-shell -c {script}: {rss} KiB"
    return r


# --- the image lock is the user's own -------------------------------------------------------------


@pytest.fixture
def victim_home(victim: str) -> Iterator[Path]:
    """Config and state of the plain user, in a dir of theirs (pytest's tmp dir is root's, 0700)."""
    d = Path(tempfile.mkdtemp(prefix="qpod-lockuser-", dir="/tmp"))
    os.chown(d, uid_of(victim), -1)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def old_image_lock(ref: str, uid: int) -> Path:
    """Where qpod took an image's lock before: a name in /tmp anyone can know."""
    return Path(f"/tmp/qpod-image-{re.sub(r'[^A-Za-z0-9_.-]+', '_', ref)}-{uid}.lock")


def as_user(user: str, home: Path, code: str) -> subprocess.CompletedProcess[str]:
    """Python ``code`` run by ``user`` with qpod's config and state in ``home``."""
    env = [
        "env",
        "-i",
        "PATH=/usr/bin:/bin",
        f"HOME={home}",
        "LANG=C.UTF-8",
        f"QPOD_CONFIG_DIR={home}/config",
        f"QPOD_STATE_DIR={home}/state",
    ]
    r, _ = run_guarded(["runuser", "-u", user, "--", *env, f"{REPO_ROOT}/.venv/bin/python", "-I", "-c", code], cwd="/")
    return r


@pytest.mark.rootless  # a second user plants, a third runs qpod
@pytest.mark.parametrize("plant", ["held", "mode 0600"])
def test_another_user_cannot_take_the_image_lock(plant: str, planter: str, victim: str, victim_home: Path) -> None:
    """The second user creates the old lock name of the first (and holds it, or makes it 0600):
    the first user's image lock still works (it is not there any more)."""
    old = old_image_lock(LOCK_REF, uid_of(victim))
    old.unlink(missing_ok=True)
    holder = None
    try:
        if plant == "held":
            holder = subprocess.Popen(
                ["runuser", "-u", planter, "--", "flock", str(old), "sleep", "3600"], start_new_session=True
            )

            def held() -> bool:
                import fcntl

                if not old.exists():
                    return False
                fd = os.open(old, os.O_RDONLY)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    return False
                except BlockingIOError:
                    return True
                finally:
                    os.close(fd)

            wait_until(held, f"{planter} holds {old}")
        else:
            r = subprocess.run(
                ["runuser", "-u", planter, "--", "sh", "-c", f'umask 077 && : > "{old}"'],
                capture_output=True,
                text=True,
            )
            assert r.returncode == 0 and stat.S_IMODE(old.stat().st_mode) == 0o600, r.stderr
        r = as_user(
            victim,
            victim_home,
            "from qpod_engine.podman import local_images as images\n"
            f"with images._image_lock({LOCK_REF!r}):\n    print('locked', flush=True)\n",
        )
        assert r.returncode == 0 and r.stdout == "locked\n", r.stderr
        locks = list((victim_home / "state").glob("**/*.lock"))
        assert len(locks) == 1 and os.stat(locks[0]).st_uid == uid_of(victim), locks
        assert stat.S_IMODE(locks[0].parent.stat().st_mode) == 0o700
        assert old.stat().st_uid == uid_of(planter)  # left alone
    finally:
        if holder is not None:
            os.killpg(holder.pid, signal.SIGKILL)
            holder.wait()
        old.unlink(missing_ok=True)


def test_a_lock_wait_names_its_holder_and_gives_up(qpod_home: Path) -> None:
    hold = (
        "import sys\nfrom qpod_engine.podman import local_images as images\n"
        f"with images._image_lock({LOCK_REF!r}):\n    print('held', flush=True)\n    sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-I", "-c", hold], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        said: list[str] = []
        with pytest.raises(QpodError) as err, images._image_lock(LOCK_REF, said.append, timeout=0.3):
            pytest.fail("got a lock another process holds")
        path = images.image_lock_path(LOCK_REF)
        assert path.startswith(str(qpod_home / "state") + "/"), path
        holder_is = f"held by pid {holder.pid}, another qpod building image {LOCK_REF}"
        assert len(said) == 1 and path in said[0] and holder_is in said[0], said
        assert err.value.status == 125 and str(err.value).startswith(
            f"gave up waiting for {path} after 0.3 s: {holder_is}"
        ), err.value
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=HANG_GUARD)
    with images._image_lock(LOCK_REF, timeout=HANG_GUARD):  # released with its holder
        pass


# --- git metadata that is a FIFO, /dev/zero or huge -----------------------------------------------


def fifo(p: Path) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.exists() or p.is_symlink():
        p.unlink()
    os.mkfifo(p)


def zero(p: Path) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.exists() or p.is_symlink():
        p.unlink()
    p.symlink_to("/dev/zero")


def detach(gd: Path) -> None:
    """HEAD detached at its commit, as git leaves it in a rebase or a bisect."""
    head = gd / "HEAD"
    ref = head.read_text().split(":", 1)[1].strip()
    head.write_text((gd / ref).read_text())


def dotgit_file(root: Path, target: Path | None = None) -> Path:
    """``root/.git`` made a file (as in a linked worktree or a submodule) naming its git dir,
    moved beside the work tree, or ``target``. Returns the git dir."""
    gd = root.parent / (root.name + ".gitdir")
    (root / ".git").rename(gd)
    (root / ".git").write_text(f"gitdir: {target or gd}\n")
    return gd


def dotgit_replaced(root: Path, make: Callable[[Path], None]) -> None:
    """``root/.git`` moved away, ``make`` puts something else there."""
    (root / ".git").rename(root.parent / (root.name + ".moved-git"))
    make(root / ".git")


def sparse(p: Path, size: int) -> None:
    with open(p, "wb") as f:
        f.truncate(size)


def gitdir_at_fifo(root: Path) -> None:
    target = root.parent / "fifo.git"
    dotgit_file(root, target)
    fifo(target)


def worktree_links_fifos(root: Path) -> None:
    gd = dotgit_file(root)
    fifo(gd / "commondir")
    fifo(gd / "gitdir")


def rebase_or_bisect(file: str, make: Callable[[Path], None]) -> Callable[[Path], None]:
    def plant(root: Path) -> None:
        detach(root / ".git")
        make(root / ".git" / file)

    return plant


PLANTS: dict[str, Callable[[Path], None]] = {
    "HEAD is a FIFO": lambda root: fifo(root / ".git" / "HEAD"),
    "HEAD is /dev/zero": lambda root: zero(root / ".git" / "HEAD"),
    "rebase-merge/head-name is a FIFO": rebase_or_bisect("rebase-merge/head-name", fifo),
    "rebase-apply/head-name is /dev/zero": rebase_or_bisect("rebase-apply/head-name", zero),
    "BISECT_START is a FIFO": rebase_or_bisect("BISECT_START", fifo),
    ".git is a FIFO": lambda root: dotgit_replaced(root, fifo),
    ".git is /dev/zero": lambda root: dotgit_replaced(root, zero),
    ".git file points at a FIFO": gitdir_at_fifo,
    ".git file, HEAD there a FIFO": lambda root: fifo(dotgit_file(root) / "HEAD"),
    ".git file, commondir and gitdir there FIFOs": worktree_links_fifos,
}

RUN_SH = "#!/bin/sh\nif test -e /run/.containerenv; then echo in-container; else echo on-the-host; fi\n"


def check_shell_run(root: Path) -> None:
    """``./run.sh`` (a program of the bound repository: redirected) returns, and never runs on
    the host: in the container, or 125 with one line."""
    r = qpod_shell_c("./run.sh; echo rc=$?", root)
    assert "on-the-host" not in r.stdout, (r.stdout, r.stderr)
    assert r.stdout == "in-container\nrc=0\n" or (r.stdout == "rc=125\n" and len(r.stderr.splitlines()) == 1), (
        r.stdout,
        r.stderr,
    )


@pytest.mark.parametrize("lock", ["config", "log"])
def test_config_and_log_lock_waits_name_their_holder_and_give_up(lock: str, qpod_home: Path) -> None:
    """The config lock (every read-modify-write of the config) and the command log's lock wait
    with a deadline too, naming the holder; a reader of the log goes on unlocked after it."""
    from qpod_engine.base import fileio, paths

    path = paths.config_lock_file() if lock == "config" else paths.log_file() + ".lock"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    hold = (
        f"import fcntl, os, sys\nfd = os.open({path!r}, os.O_RDWR | os.O_CREAT, 0o600)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\nsys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-I", "-c", hold], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        said: list[str] = []
        with pytest.raises(QpodError) as err:
            if lock == "config":
                with fileio.locked(path, timeout=0.3, say=said.append):
                    pytest.fail("got a lock another process holds")
            else:
                fd = os.open(path, os.O_RDWR)
                try:
                    fileio.flock_wait(fd, path, 0.3, said.append)
                finally:
                    os.close(fd)
        assert len(said) == 1 and path in said[0] and f"held by pid {holder.pid}" in said[0], said
        assert err.value.status == 125 and f"held by pid {holder.pid}" in str(err.value), err.value
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=HANG_GUARD)
    with fileio.locked(path, timeout=HANG_GUARD):  # released with its holder
        pass


@pytest.mark.podman
@pytest.mark.parametrize("plant", list(PLANTS))
def test_git_metadata_that_blocks_or_never_ends_hangs_nothing(plant: str, bound_repo: Path) -> None:
    root = bound_repo
    (root / "run.sh").write_text(RUN_SH)
    (root / "run.sh").chmod(0o755)
    check_shell_run(root)  # the container is warm, its launch spec written
    PLANTS[plant](root)
    check_shell_run(root)  # warm: the client reads HEAD
    for args in (["status"], ["which", "make"], ["which", "./run.sh"]):
        r = qpod(*args, cwd=root)
        assert r.returncode == 0, (args, r.stderr)
    remove_containers_of(str(root))
    check_shell_run(root)  # cold: the launcher reads the git dir, makes the container


UNBOUND_PLANTS: dict[str, Callable[[Path], None]] = {
    "config is a FIFO": lambda root: fifo(root / ".git" / "config"),
    ".git is a FIFO": PLANTS[".git is a FIFO"],
    ".git file, commondir there a FIFO": lambda root: fifo(dotgit_file(root) / "commondir"),
    ".git file of 2 GB": lambda root: dotgit_replaced(root, lambda p: sparse(p, 2 << 30)),
}


@pytest.mark.parametrize("plant", list(UNBOUND_PLANTS))
def test_discovering_a_repository_reads_no_fifo(plant: str, qpod_home: Path, make_repo: Callable[..., Path]) -> None:
    """An unbound checkout: ``qpod status`` and ``qpod init`` open it with libgit2, which reads
    what it reads with a blocking open, whole: they refuse it instead."""
    root = make_repo("unbound")
    UNBOUND_PLANTS[plant](root)
    r = qpod("status", cwd=root)
    assert r.returncode == 0, r.stderr
    assert run_qpod("env", "add", "bb", "--image", "localhost/qpod-busybox:latest").returncode == 0
    r = qpod("init", "bb", cwd=root)
    assert r.returncode != 0 and len(r.stderr.splitlines()) == 1 and str(root) in r.stderr, r.stderr


def test_a_huge_build_context_is_refused_at_once(qpod_home: Path, make_repo: Callable[..., Path]) -> None:
    """A 1.5 GB file (sparse: nothing on disk) in a ``build:`` context: a clear error naming it,
    without reading it (maxrss, RLIMIT_DATA)."""
    root = make_repo(
        "ctx",
        {
            ".qpod.yaml": "build: {containerfile: ci/Containerfile, context: ci}\ncommands: [make]\n",
            "ci/Containerfile": "FROM scratch\n",
            "Makefile": "all:\n\t@echo built\n",
        },
    )
    assert run_qpod("allow", cwd=root, input="").returncode == 0
    big = root / "ci" / "toolchain.tar"
    sparse(big, 1536 << 20)
    says = f"{big}: the build's files (Containerfile and context) pass 256 MiB with this one (1536.0 MiB)"
    r = qpod("status", cwd=root)
    assert r.returncode == 0 and "repository file .qpod.yaml (broken)" in r.stdout, r.stdout
    r = qpod("which", "make", cwd=root)
    assert r.returncode == 0 and "would fail (exit 125)" in r.stdout and says in r.stdout, r.stdout
    r = qpod("exec", "make", cwd=root)
    assert r.returncode == 125 and str(big) in r.stderr and "256 MiB" in r.stderr, r.stderr
    big.unlink()  # back under the bound: the environment is fine again
    r = qpod("which", "make", cwd=root)
    assert "256 MiB" not in r.stdout + r.stderr and r.stdout.startswith("container"), r.stdout


# --- ssh's shared connections ---------------------------------------------------------------------


def control_path_of(conn: remote.Connection) -> str:
    argv = remote.ssh_options(conn)
    return next(o.split("=", 1)[1] for o in argv if o.startswith("ControlPath="))


def test_the_shared_ssh_connection_is_one_per_identity(qpod_home: Path) -> None:
    def conn(identity: str | None, user: str = "dev", port: int | None = 2222) -> remote.Connection:
        return remote.Connection("h", "build.example", user, port, "/run/podman/podman.sock", identity)

    with_a, with_b = control_path_of(conn("/keys/a")), control_path_of(conn("/keys/b"))
    try:
        assert with_a != with_b
        assert control_path_of(conn("/keys/a")) == with_a  # the same connection shares it
        assert (
            len(
                {
                    with_a,
                    with_b,
                    control_path_of(conn(None)),
                    control_path_of(conn("/keys/a", user="ops")),
                    control_path_of(conn("/keys/a", port=22)),
                }
            )
            == 5
        )
        for path in (with_a, with_b):
            assert len(os.fsencode(path)) + 17 <= 107  # ssh binds "<path>.<16 random>" first
            assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    finally:  # pytest's state dir is too long for a socket: the dir is a short one in /tmp then
        if not with_a.startswith(str(qpod_home) + "/"):
            shutil.rmtree(os.path.dirname(with_a), ignore_errors=True)


@pytest.mark.rootless  # a second user plants
def test_a_long_state_dir_never_uses_a_fixed_ssh_dir_in_tmp(
    planter: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state dir is too long for a socket address: the other user has made the old fallback
    (/tmp/qpod-ssh-UID) first. ssh's connections go to a private dir of ours all the same."""
    monkeypatch.setenv("QPOD_STATE_DIR", str(tmp_path / ("long-" * 16) / "state"))
    monkeypatch.setenv("QPOD_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    old = Path(f"/tmp/qpod-ssh-{os.geteuid()}")
    if old.exists() and old.stat().st_uid == os.geteuid():
        if any(old.iterdir()):
            pytest.skip(f"{old} is in use")
        old.rmdir()
    r = subprocess.run(
        ["runuser", "-u", planter, "--", "sh", "-c", f'[ -d "{old}" ] || mkdir -m 700 "{old}"'],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    made: list[str] = []
    try:
        d = remote.control_dir()
        made.append(d)
        st = os.lstat(d)
        assert d != str(old) and stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid(), d
        assert stat.S_IMODE(st.st_mode) == 0o700
        assert remote.control_dir() == d  # found again
        path = control_path_of(remote.Connection("h", "build.example", "dev", None, "/s", None))
        assert os.path.dirname(path) == d and len(os.fsencode(path)) + 17 <= 107
        # a runtime dir of ours (short enough): used instead
        runtime = Path(tempfile.mkdtemp(prefix="qpod-rt-", dir="/tmp"))
        made.append(str(runtime))
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
        assert remote.control_dir() == str(runtime / "qpod-ssh")
    finally:
        for d in made:
            shutil.rmtree(d, ignore_errors=True)
        subprocess.run(["rm", "-rf", str(old)])


def test_git_helpers_read_little(tmp_path: Path) -> None:
    """gitinfo.read_small: a regular file up to its limit; FIFOs, devices and more refused."""
    from qpod_engine.base.gitinfo import read_small

    (tmp_path / "HEAD").write_text("ref: refs/heads/main\n")
    assert read_small(str(tmp_path / "HEAD")) == b"ref: refs/heads/main\n"
    fifo(tmp_path / "fifo")
    zero(tmp_path / "zero")
    with open(tmp_path / "big", "wb") as f:
        f.truncate(4097)
    for name in ("fifo", "zero", "big"):
        with pytest.raises(OSError):
            read_small(str(tmp_path / name))
    with pytest.raises(OSError):
        read_small(str(tmp_path / "zero"), follow=False)
