"""Nothing qpod creates is writable by another user whatever the umask, and qpod's state (the
state dir, the rules, the launch specs, the agent dirs) is used only when it is the user's own
and closed to others: checked by the engine, by the preload library before it trusts a rules
file, and by the native-exec client before it trusts a launch spec or an agent's directory. A
second real user plants; the first one (root here) runs qpod.

The library's rules are also sealed: their last line ``sum\\t<16 hex>`` is the 64-bit FNV-1a of
every byte before it. Rules it cannot use (corrupt, unsealed, another user's, open to others,
in a directory that is) are replaced by the rules qpod-shell holds open, else by the last good
rules the process read, and only when neither exists by the host; never a word per launch."""

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import git, wait_until
from preload_driver import Built

OTHER = "qpodtrust"
MAKE = shutil.which("make")
HOST_PATH = "/usr/local/bin:/usr/bin:/bin"


# --- helpers --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def other_uid() -> int:
    """A second real local user (made once, kept: useradd is slow)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to act as a second user")
    if subprocess.run(["id", OTHER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "-M", "-s", "/bin/sh", OTHER], check=True)
    return pwd.getpwnam(OTHER).pw_uid


def as_other(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``sh -c SCRIPT`` as the second user."""
    return subprocess.run(
        ["runuser", "-u", OTHER, "--", "env", *(f"{k}={v}" for k, v in env.items()), "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/",
    )


@pytest.fixture
def open_parent() -> Iterator[Path]:
    """A directory every user may write in (what ~/.local/state is after a umask-000 session, or
    a shared dir under /tmp): where the second user plants."""
    d = Path(tempfile.mkdtemp(prefix="qpod-trust-", dir="/tmp"))
    d.chmod(0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("QPOD_") and k not in ("LD_PRELOAD", "XDG_CONFIG_HOME", "XDG_STATE_HOME")
    }
    env.update(extra)
    return env


def qpod(*args: str, cwd: Path | None = None, umask0: bool = False, **env: str) -> subprocess.CompletedProcess[str]:
    """``qpod ARGS`` as the first user (isolated Python: the install's package, not the cwd's)."""
    cmd = [sys.executable, "-I", "-m", "qpod_engine.cli", *args]
    if umask0:
        cmd = ["sh", "-c", 'umask 000; exec "$@"', "sh", *cmd]
    return subprocess.run(cmd, cwd=cwd, env=clean_env(**env), capture_output=True, text=True, timeout=300)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def fnv1a(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def seal(text: str) -> str:
    """Rules as the engine writes them: a last line with the FNV-1a of everything before it."""
    return f"{text}sum\t{fnv1a(text.encode())}\n"


def git_repo(path: Path, makefile: str | None = None) -> Path:
    path.mkdir(parents=True)
    if makefile is not None:
        (path / "Makefile").write_text(makefile)
    git("init", "-q", "-b", "master", cwd=path)
    return path


# --- umask 000: nothing is writable by others -----------------------------------------------------


def test_nothing_qpod_creates_is_writable_by_others_under_umask_000(tmp_path: Path) -> None:
    home = tmp_path / "home"  # ~/.config, ~/.local/state: none of it exists yet
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "XDG_STATE_HOME": str(home / ".local/state")}
    repo = git_repo(tmp_path / "repo")
    r = qpod("env", "add", "e", "--image", "localhost/qpod-none:1", umask0=True, **env)
    assert r.returncode == 0, r.stderr
    r = qpod("init", "e", cwd=repo, umask0=True, **env)
    assert r.returncode == 0, r.stderr
    config = home / ".config/qpod"
    assert (config / "repositories.yaml").is_file() and (config / "environments/e.yaml").is_file()
    open_to_others = [f"{p} {mode(p):04o}" for p in [home, *home.rglob("*")] if mode(p) & 0o022]
    assert open_to_others == []
    assert mode(config / "repositories.yaml") == 0o644 and mode(config) == 0o755  # readable: the user's files
    assert mode(home / ".local/state/qpod") == 0o700

    # a config file the user closed further keeps its mode when qpod replaces it (one others may
    # write is refused: test_config_another_user_may_write_is_never_used)
    (config / "environments/e.yaml").chmod(0o600)
    r = qpod("env", "set", "e", "commands=make gdb", umask0=True, **env)
    assert r.returncode == 0, r.stderr
    assert "gdb" in (config / "environments/e.yaml").read_text()
    assert mode(config / "environments/e.yaml") == 0o600


def test_podman_service_log_is_private_whatever_the_umask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The service's log (podman's messages name the user's paths) is a state file: 0600."""
    from qpod_engine.podman import service

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    monkeypatch.setenv("QPOD_STATE_DIR", str(state))
    monkeypatch.setattr(service, "podman_binary", lambda: "/bin/true")  # the spawn, not podman's start-up
    log = state / "podman-service.log"
    old = os.umask(0)
    try:
        service._spawn(str(tmp_path / "podman.sock"), 5).wait()
        assert mode(log) == 0o600
        log.chmod(0o644)  # made by an older qpod
        service._spawn(str(tmp_path / "podman.sock"), 5).wait()
        assert mode(log) == 0o600
    finally:
        os.umask(old)


@pytest.mark.rootless  # a second user plants
def test_a_podman_socket_cache_written_by_someone_else_is_not_used(
    tmp_path: Path, other_uid: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache names the podman socket qpod makes containers through."""
    from qpod_engine.podman import service

    monkeypatch.setenv("QPOD_STATE_DIR", str(tmp_path / "state"))
    service._write_cache("k", "/run/podman/podman.sock")
    cache = tmp_path / "state" / service.CACHE_NAME
    assert mode(cache) == 0o600 and service._read_cache("k") == "/run/podman/podman.sock"
    cache.chmod(0o666)
    assert service._read_cache("k") is None
    cache.chmod(0o600)
    os.chown(cache, other_uid, -1)
    assert service._read_cache("k") is None


# --- the engine refuses a state dir that is not the user's ----------------------------------------


@pytest.mark.rootless  # a second user plants
def test_a_state_dir_planted_by_another_user_is_refused_by_the_engine(
    tmp_path: Path, open_parent: Path, other_uid: int
) -> None:
    repo = git_repo(tmp_path / "repo")
    cfg = {"QPOD_CONFIG_DIR": str(tmp_path / "config")}
    assert (
        qpod(
            "env", "add", "e", "--image", "localhost/qpod-none:1", QPOD_STATE_DIR=str(tmp_path / "s"), **cfg
        ).returncode
        == 0
    )
    assert qpod("init", "e", cwd=repo, QPOD_STATE_DIR=str(tmp_path / "s"), **cfg).returncode == 0
    # ~/.local/state is open to others: the second user makes "your" state dir before you do
    planted = open_parent / "qpod"
    r = as_other(
        f"mkdir {planted} && chmod 755 {planted} && echo planted > {planted}/rules && "
        f"echo '{{}}' > {planted}/snapshot.json && "
        f'echo \'{{"argv": ["planted"]}}\' > {planted}/commands.log'
    )
    assert r.returncode == 0, r.stderr
    before = sorted((p.name, p.stat().st_uid, p.read_bytes()) for p in planted.iterdir())
    want = f"qpod: qpod's state dir {planted} is not yours (owner uid {other_uid}, mode 0755): "
    for args in (["status"], ["log"], ["repos"], ["which", "make"]):
        r = qpod(*args, cwd=repo, XDG_STATE_HOME=str(open_parent), **cfg)
        assert r.returncode == 125, (args, r.stdout, r.stderr)
        assert r.stderr.startswith(want) and r.stderr.count("\n") == 1, (args, r.stderr)
        assert "planted" not in r.stdout
    # nothing was written there, nothing chmod'ed
    assert sorted((p.name, p.stat().st_uid, p.read_bytes()) for p in planted.iterdir()) == before
    assert mode(planted) == 0o755


@pytest.mark.rootless  # a second user plants
def test_a_state_dir_qpod_cannot_read_is_an_error_not_an_empty_log(open_parent: Path, other_uid: int) -> None:
    """Here the second user runs qpod and root's private state dir is the one they name."""
    private = Path(tempfile.mkdtemp(prefix="qpod-trust-root-", dir="/tmp"))  # 0700, root's
    try:
        (private / "qpod").mkdir(mode=0o700)
        (private / "qpod/commands.log").write_text('{"argv": ["make", "secret"], "status": 0}\n')
        cfg = open_parent / "config"
        for state, why in (
            (private / "qpod", "cannot use it: Permission denied"),
            (private, "is not yours (owner uid 0, mode 0700)"),
        ):
            r = as_other(
                f"exec {sys.executable} -I -m qpod_engine.cli log",
                QPOD_STATE_DIR=str(state),
                QPOD_CONFIG_DIR=str(cfg),
                HOME=str(open_parent),
            )
            assert r.returncode == 125, (state, r.stdout, r.stderr)
            assert r.stdout == "" and r.stderr.startswith(f"qpod: qpod's state dir {state}") and why in r.stderr, (
                r.stderr
            )
            assert r.stderr.count("\n") == 1
    finally:
        shutil.rmtree(private, ignore_errors=True)


@pytest.mark.rootless  # a second user plants
@pytest.mark.skipif(MAKE is None, reason="make is not installed")
def test_a_state_dir_swapped_under_an_open_qpod_shell_runs_no_planted_launcher(
    tmp_path: Path, open_parent: Path, other_uid: int
) -> None:
    """The attack: the second user moves your state dir aside while your qpod-shell is
    open, makes their own with a rules file whose launcher is their program (sealed, and a launch
    spec too), and waits for your next make."""
    repo = git_repo(tmp_path / "repo", "all:\n\t@echo built-on-the-host\n")
    state = open_parent / "qpod"
    env = {"QPOD_CONFIG_DIR": str(tmp_path / "config"), "QPOD_STATE_DIR": str(state)}
    assert qpod("env", "add", "e", "--image", "localhost/qpod-none:1", **env).returncode == 0
    assert qpod("init", "e", cwd=repo, **env).returncode == 0
    assert mode(state) == 0o700 and state.stat().st_uid == 0

    go = tmp_path / "go"
    os.mkfifo(go)
    shell = subprocess.Popen(
        [
            sys.executable,
            "-I",
            "-m",
            "qpod_engine.cli.shell",
            "--shell",
            "/bin/sh",
            "-c",
            f"read _ < {go}; make; echo rc=$?",
        ],
        cwd=repo,
        env=clean_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    writer: list[int] = []

    def shell_waits() -> bool:
        try:
            writer.append(os.open(go, os.O_WRONLY | os.O_NONBLOCK))
            return True
        except OSError:
            return shell.poll() is not None

    try:
        wait_until(shell_waits, "qpod-shell's shell waiting for the go")
        assert writer, shell.communicate()
        evil, pwned = open_parent / "evil.sh", open_parent / "pwned"
        fast = state / "fast" / fnv1a(str(repo).encode())
        rules = seal(f"qpod-rules\t1\nlauncher\t/bin/sh\t{evil}\nroot\t{repo}\tmake\n")
        spec = f"qpod-spec\t1\nroot\t{repo}\nenv\te\ncontainer\tqpod-x\nagent\t{state}/agents/x\nmap\t{repo}\t/w\n"
        r = as_other(
            f"printf '#!/bin/sh\\ntouch {pwned}\\n' > {evil} && chmod 755 {evil} && "
            f"mv {state} {open_parent}/moved-aside && mkdir -p {state}/agents/x {fast.parent} && "
            f"chmod -R 755 {state} && printf '%s' \"$RULES\" > {state}/rules && "
            f"printf '%s' \"$SPEC\" > {fast}",
            RULES=rules,
            SPEC=spec,
        )
        assert r.returncode == 0, r.stderr
        os.write(writer[0], b"go\n")
        os.close(writer.pop())
        out, err = shell.communicate(timeout=300)
    finally:
        for fd in writer:
            os.close(fd)
        if shell.poll() is None:
            shell.kill()
            shell.wait()
    assert not pwned.exists(), (out, err)
    assert "built-on-the-host" not in out and "rc=125" in out, (out, err)
    assert f"{state}" in err and "is not yours" in err, err


# --- the preload library trusts only the user's rules ---------------------------------------------


@pytest.fixture(scope="module")
def lib_dir(built: Built) -> Path:
    """The library and the client built from this checkout's sources (conftest's, once a run)."""
    return built.lib.parent


class Box:
    """A state dir with a rules file, a repository whose make says "host", and two recording
    launchers ("good", "evil"); every outcome lands in one record, in order."""

    def __init__(self, base: Path, lib_dir: Path) -> None:
        self.base, self.lib_dir = base, lib_dir
        self.record = base / "record"
        self.repo = git_repo(base / "repo", f"all:\n\t@echo host >> {self.record}\n")
        self.state = base / "state"
        self.state.mkdir(mode=0o700)
        self.rules = self.state / "rules"
        for tag in ("good", "evil", "fallback"):
            (base / f"{tag}.sh").write_text(f"#!/bin/sh\necho {tag} >> {self.record}\n")
        self.write(self.rules, self.text("good"))

    def text(self, tag: str) -> str:
        return f"qpod-rules\t1\nlauncher\t/bin/sh\t{self.base}/{tag}.sh\nroot\t{self.repo}\tmake\n"

    @staticmethod
    def write(path: Path, data: str | bytes, file_mode: int = 0o600) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data if isinstance(data, bytes) else seal(data).encode())
        tmp.chmod(file_mode)
        os.replace(tmp, path)

    def env(self, **extra: str) -> dict[str, str]:
        from qpod_engine.routing import preload_lib

        return {
            "PATH": HOST_PATH,
            "HOME": str(self.base),
            "LANG": "C",
            "QPOD_SHELL": "1",
            "LD_PRELOAD": preload_lib.preload_entry(self.lib_dir),
            "QPOD_PRELOAD": str(self.lib_dir / "libqpod_preload.so"),
            "QPOD_RULES": str(self.rules),
            "QPOD_STATE_DIR": str(self.state),
            **extra,
        }

    def sh(self, script: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/sh", "-c", script], cwd=self.repo, env=self.env(**extra), capture_output=True, text=True, timeout=120
        )

    def outcomes(self) -> list[str]:
        if not self.record.exists():
            return []
        got = self.record.read_text().split()
        self.record.unlink()
        return got


@pytest.fixture
def box(tmp_path: Path, lib_dir: Path) -> Box:
    if MAKE is None:
        pytest.skip("make is not installed")
    return Box(tmp_path, lib_dir)


UNTRUSTED = [
    "bad-sum",
    "no-sum",
    "random-bytes",
    "wrong-version",
    "file-of-another-user",
    "file-writable-by-others",
    "dir-of-another-user",
    "dir-writable-by-others",
]


def make_untrusted(box: Box, case: str, other_uid: int) -> None:
    """Rules whose launcher is "evil", in a way the library must not accept."""
    evil = box.text("evil")
    if case == "bad-sum":  # edited after sealing: the sum is the good rules'
        good = seal(box.text("good"))
        box.write(box.rules, (evil + good[good.rindex("sum\t") :]).encode())
    elif case == "no-sum":
        box.write(box.rules, evil.encode())
    elif case == "random-bytes":
        box.write(box.rules, os.urandom(3000))
    elif case == "wrong-version":
        box.write(box.rules, evil.replace("qpod-rules\t1", "qpod-rules\t2"))
    elif case == "file-of-another-user":
        box.write(box.rules, evil)
        os.chown(box.rules, other_uid, -1)
    elif case == "file-writable-by-others":
        box.write(box.rules, evil, 0o666)
    elif case == "dir-of-another-user":
        box.write(box.rules, evil)
        box.state.chmod(0o755)
        os.chown(box.state, other_uid, -1)
    elif case == "dir-writable-by-others":
        box.write(box.rules, evil)
        box.state.chmod(0o777)
    else:
        raise AssertionError(case)


def test_sealed_rules_of_the_user_are_used(box: Box) -> None:
    r = box.sh("make -s")
    assert (r.returncode, r.stderr, box.outcomes()) == (0, "", ["good"])
    # the engine's seal is the one the library checks (qpod_engine/config/rules.py writes it)
    from qpod_engine.config.rules import seal_rules

    box.write(box.rules, seal_rules(box.text("evil")).encode())
    assert box.sh("make -s").returncode == 0 and box.outcomes() == ["evil"]


@pytest.mark.rootless  # a second user plants
@pytest.mark.parametrize("case", UNTRUSTED)
def test_rules_the_library_cannot_trust_are_never_used(box: Box, other_uid: int, case: str) -> None:
    """Nothing better known: the host, silently. The rules qpod-shell holds open (QPOD_RULES_FD)
    known: those, if they pass the same checks."""
    held = box.base / "held"
    held.mkdir(mode=0o700)
    box.write(held / "rules", box.text("good"))
    make_untrusted(box, case, other_uid)
    r = box.sh("make -s")
    assert (r.returncode, r.stderr, box.outcomes()) == (0, "", ["host"])
    r = box.sh(f"exec 7< {held}/rules; make -s", QPOD_RULES_FD="7")
    assert (r.returncode, r.stderr, box.outcomes()) == (0, "", ["good"])
    # held rules that fail the checks themselves are not taken either
    os.chown(held / "rules", other_uid, -1)
    r = box.sh(f"exec 7< {held}/rules; make -s", QPOD_RULES_FD="7")
    assert (r.returncode, r.stderr, box.outcomes()) == (0, "", ["host"])


@pytest.mark.rootless  # a second user plants
@pytest.mark.parametrize("case", ["bad-sum", "file-of-another-user", "dir-writable-by-others"])
def test_a_process_keeps_the_last_good_rules_when_the_file_goes_bad(box: Box, other_uid: int, case: str) -> None:
    """posix_spawn decides in the calling process: its cache holds the last good rules."""
    script = textwrap.dedent("""\
        import os, sys
        def make():
            os.waitpid(os.posix_spawnp("make", ["make", "-s"], os.environ), 0)
        make()
        sys.stdin.readline()  # the test breaks the rules file meanwhile
        make()
        """)
    proc = subprocess.Popen(
        [sys.executable, "-S", "-c", script],
        cwd=box.repo,
        env=box.env(),
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: box.record.exists(), "the first make")
        make_untrusted(box, case, other_uid)
        _, err = proc.communicate("\n", timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (proc.returncode, err, box.outcomes()) == (0, "", ["good", "good"])


# --- the native-exec client trusts only the user's launch spec and agent dir ----------------------

SPEC_CASES = [
    "spec-of-another-user",
    "spec-writable-by-others",
    "spec-dir-writable-by-others",
    "state-dir-of-another-user",
    "agent-dir-of-another-user",
    "agent-dir-writable-by-others",
]


@pytest.mark.rootless  # a second user plants
@pytest.mark.parametrize("case", ["all-ours", *SPEC_CASES])
def test_the_client_refuses_a_launch_spec_or_agent_dir_it_cannot_trust(box: Box, other_uid: int, case: str) -> None:
    """The spec names the container and the agent's socket that gets the caller's descriptors:
    an untrusted one ends the client with 125 and one line, and nothing runs (not even the
    launcher the client would otherwise fall back to)."""
    fast = box.state / "fast"
    fast.mkdir(mode=0o700)
    agent = box.state / "agents" / "qpod-x"
    agent.mkdir(mode=0o700, parents=True)
    spec = fast / fnv1a(str(box.repo).encode())
    box.write(
        spec,
        (f"qpod-spec\t1\nroot\t{box.repo}\nenv\te\ncontainer\tqpod-x\nagent\t{agent}\nmap\t{box.repo}\t/w\n").encode(),
    )
    target = {
        "spec-of-another-user": spec,
        "spec-writable-by-others": spec,
        "spec-dir-writable-by-others": fast,
        "state-dir-of-another-user": box.state,
        "agent-dir-of-another-user": agent,
        "agent-dir-writable-by-others": agent,
    }.get(case)
    if target is not None and case.endswith("of-another-user"):
        target.chmod(0o755 if target.is_dir() else 0o644)
        os.chown(target, other_uid, -1)
    elif target is not None:
        target.chmod(0o777 if target.is_dir() else 0o666)
    r = subprocess.run(
        [
            str(box.lib_dir / "qpod-client"),
            "--root",
            str(box.repo),
            "/bin/sh",
            str(box.base / "fallback.sh"),
            "--shim",
            "/bin/true",
            str(box.repo),
            "--",
            "true",
        ],
        cwd=box.repo,
        env=box.env(LD_PRELOAD=""),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if case == "all-ours":  # no agent answers: back to the launcher, as always
        assert (r.returncode, box.outcomes()) == (0, ["fallback"]), r.stderr
        return
    assert r.returncode == 125 and box.outcomes() == [], r.stderr
    assert target is not None
    shown = f"{stat.S_IMODE(target.stat().st_mode):04o}"
    what = (
        f"is not yours (owner uid {other_uid}, mode {shown})"
        if case.endswith("of-another-user")
        else f"is writable by others (owner uid 0, mode {shown})"
    )
    assert r.stderr.startswith(f"qpod: {target} {what}: ") and r.stderr.count("\n") == 1, r.stderr


def test_config_another_user_may_write_is_never_used(tmp_path: Path) -> None:
    """A config dir of the user that others may write (an older qpod under umask 000) is closed;
    a config file another user may write, or owns, decides nothing: one line, status 125."""
    config, state = tmp_path / "config", tmp_path / "state"
    env = {**os.environ, "QPOD_CONFIG_DIR": str(config), "QPOD_STATE_DIR": str(state)}
    qpod = [sys.executable, "-I", "-m", "qpod_engine.cli"]
    assert subprocess.run([*qpod, "env", "add", "e", "--image", "localhost/x:1"], env=env).returncode == 0
    (config / "environments").chmod(0o777)
    r = subprocess.run([*qpod, "env", "list"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE((config / "environments").stat().st_mode) == 0o755
    env_file = config / "environments" / "e.yaml"
    env_file.chmod(0o666)
    r = subprocess.run([*qpod, "env", "show", "e"], env=env, capture_output=True, text=True)
    assert r.returncode == 125 and f"config file {env_file} is writable by others" in r.stderr, r.stderr
    assert env_file.read_text().startswith("image:") and stat.S_IMODE(env_file.stat().st_mode) == 0o666
