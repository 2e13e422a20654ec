"""The C/Python twins (docs/formats.md): every format that C and Python both read or write, each
side checked against the other with the C programs built from this tree and real files.

No podman: the agent (static, built here) runs on this machine in the directory the launch
spec names, so the client, the agent and their protocol are the real ones; only the container
around the agent is missing.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import REPO_ROOT, git, wait_until

from qpod_engine.base import fileio, paths
from qpod_engine.base.errors import QpodError
from qpod_engine.base.fnv import fnv1a
from qpod_engine.config import containers as naming
from qpod_engine.config import snapshot
from qpod_engine.config.rules import RULES_MAX, read_rules, seal_rules
from qpod_engine.config.snapshot import Target
from qpod_engine.launch import spec as launchspec
from qpod_engine.log import cmdlog
from qpod_engine.routing import policy, preload_lib

HOST_PATH = "/usr/bin:/bin"


# ---- the C side, built from this tree ---------------------------------------------------------


@dataclass
class C:
    lib_dir: Path
    entry: str  # LD_PRELOAD
    client: Path
    agent: Path


@pytest.fixture(scope="session")
def c(tmp_path_factory: pytest.TempPathFactory) -> C:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    spec = importlib.util.spec_from_file_location("qpod_preload_build", REPO_ROOT / "preload" / "build.py")
    assert spec and spec.loader
    build: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    lib_dir = tmp_path_factory.mktemp("twins") / "_lib"
    build.build(lib_dir)
    return C(
        lib_dir,
        preload_lib.preload_entry(lib_dir),
        lib_dir / build.CLIENT_NAME,
        lib_dir / build.AGENT_DIR / build.AGENT_NAME,
    )


def script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


# ---- rules file: engine writer and reader vs the library's reader ----------------------------


class Rules:
    """A rules file the library trusts (ours, 0600, in a 0700 dir) whose launcher and client
    lines name recording stubs: the client stub prints the root the library matched."""

    def __init__(self, base: Path, c: C) -> None:
        self.c, self.base = c, base
        self.file = base / "rules"
        self.launcher = script(base / "stubs" / "launcher", 'echo "LAUNCHER $*"\n')
        self.client = script(base / "stubs" / "client", 'echo "CLIENT $2"\n')  # $1 is --root

    def body(self, roots: list[tuple[str, list[str]]], header: str = "qpod-rules\t1") -> str:
        """The rules up to their sum line: the engine's own root lines (``rules_text``)."""
        snap = {
            "repos": [{"root": r, "environment": f"e{i}", "branches": []} for i, (r, _) in enumerate(roots)],
            "envs": {f"e{i}": {"commands": names} for i, (_, names) in enumerate(roots)},
        }
        lines = [ln for ln in snapshot.rules_text(snap).splitlines() if ln.startswith("root\t")]
        return "".join(
            f"{ln}\n" for ln in [header, f"launcher\t/bin/sh\t{self.launcher}", f"client\t{self.client}", *lines]
        )

    def write(self, data: bytes, mode: int = 0o600) -> None:
        tmp = self.base / ".rules.tmp"
        tmp.write_bytes(data)
        tmp.chmod(mode)
        os.replace(tmp, self.file)

    def launch(self, prog: str | Path, cwd: Path, path: str = HOST_PATH) -> str | None:
        """The root the library hands ``prog`` (started by env's execvp in ``cwd``) to the client
        for, or None when it runs natively."""
        env = {
            "PATH": path,
            "LD_PRELOAD": self.c.entry,
            "QPOD_PRELOAD": str(self.c.lib_dir / "libqpod_preload.so"),
            "QPOD_RULES": str(self.file),
        }
        r = subprocess.run(["/usr/bin/env", str(prog)], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
        assert r.stderr == "", r.stderr
        if r.stdout.startswith("CLIENT "):
            return r.stdout[len("CLIENT ") :].rstrip("\n")
        assert r.stdout.startswith("HOST"), r.stdout
        return None


def _variant(rules: Rules, repo: Path, name: str) -> tuple[bytes, int]:
    body = rules.body([(str(repo), ["build"])])
    good = seal_rules(body).encode()
    if name == "sealed":
        return good, 0o600
    if name == "unknown line kinds":
        return seal_rules(body + "future\tkind\n").encode(), 0o600
    if name == "sum off by one digit":
        last = good[-2:-1]
        return good[:-2] + (b"0" if last != b"0" else b"1") + b"\n", 0o600
    if name == "sum in capitals":
        # a sum with letters in it (a line of padding changes it)
        padded = next(b for k in range(100) if re.search("[a-f]", fnv1a((b := f"{body}pad\t{k}\n").encode())))
        sealed = seal_rules(padded).encode()
        return sealed[:-17] + sealed[-17:].upper(), 0o600
    if name == "a line after the sum":
        return good + f"root\t{repo}\tbuild\n".encode(), 0o600
    if name == "an empty line after the sum":
        return good + b"\n", 0o600
    if name == "no newline after the sum":
        return good[:-1], 0o600
    if name == "sum of the body without its last newline":
        return f"{body}sum\t{fnv1a(body[:-1].encode())}\n".encode(), 0o600
    if name == "no sum line":
        return body.encode(), 0o600
    if name == "version 2":
        return seal_rules(rules.body([(str(repo), ["build"])], header="qpod-rules\t2")).encode(), 0o600
    if name == "header ending in CR":
        return seal_rules(rules.body([(str(repo), ["build"])], header="qpod-rules\t1\r")).encode(), 0o600
    if name in ("largest size read", "one byte over the largest size"):
        size = RULES_MAX - 1 if name == "largest size read" else RULES_MAX
        pad = size - len(body) - len("pad\t\n") - len("sum\t0123456789abcdef\n")
        data = seal_rules(body + "pad\t" + "x" * pad + "\n").encode()
        assert len(data) == size
        return data, 0o600
    if name == "a root that is not UTF-8":  # sealed by hand: seal_rules takes text
        data = body.encode() + b"root\t/nowhere/caf\xe9\tbuild\n"
        return data + b"sum\t" + fnv1a(data).encode() + b"\n", 0o600
    if name == "writable by the group":
        return good, 0o620
    raise AssertionError(name)


RULES_VARIANTS = [
    "sealed",
    "unknown line kinds",
    "sum off by one digit",
    "sum in capitals",
    "a line after the sum",
    "an empty line after the sum",
    "no newline after the sum",
    "sum of the body without its last newline",
    "no sum line",
    "version 2",
    "header ending in CR",
    "largest size read",
    "one byte over the largest size",
    pytest.param(
        "a root that is not UTF-8",
        marks=pytest.mark.xfail(
            strict=True,
            raises=AssertionError,
            reason="read_rules decodes the file as UTF-8 and rejects it; the library takes bytes",
        ),
    ),
    pytest.param(
        "writable by the group",
        marks=pytest.mark.xfail(
            strict=True,
            raises=AssertionError,
            reason="read_rules does not check the file's owner and mode; the library refuses it",
        ),
    ),
]


@pytest.mark.parametrize("variant", RULES_VARIANTS)
def test_rules_file_is_accepted_or_refused_alike(tmp_path: Path, c: C, variant: str) -> None:
    rules = Rules(tmp_path, c)
    repo = tmp_path / "repo"
    script(tmp_path / "bin" / "build", 'echo "HOST build"\n')
    repo.mkdir()
    data, mode = _variant(rules, repo, variant)
    rules.write(data, mode)
    by_c = rules.launch("build", repo, f"{tmp_path / 'bin'}:{HOST_PATH}") == str(repo)
    by_python = read_rules(rules.file) is not None
    assert by_c == by_python, f"library {'uses' if by_c else 'ignores'} it, read_rules {by_python}"


def test_rules_route_the_same_launches_siblings_sharing_a_prefix_included(tmp_path: Path, c: C) -> None:
    """/x/repo2 and /x/repo.d are not inside /x/repo: a path boundary, not a string prefix."""
    x = tmp_path / "x"
    bound = {x / "repo": ["build"], x / "repo" / "inner": ["other"], x / "my repo": ["build"]}
    unbound = [x / "repo2", x / "repo.d", x / "rep", x / "my repo2", x / "repo2" / "sub", x / "repo" / "sub"]
    for d in [*bound, *unbound]:
        script(d / "tool", f'echo "HOST {d}"\n')
    hostbin = tmp_path / "bin"
    for name in ("build", "other"):
        script(hostbin / name, f'echo "HOST {name}"\n')
    rules = Rules(tmp_path, c)
    rules.write(seal_rules(rules.body([(str(r), names) for r, names in bound.items()])).encode())
    parsed = read_rules(rules.file)
    assert parsed is not None and len(parsed.roots) == 3
    launches = 0
    for cwd in [*bound, *unbound, x]:
        for prog in [*(d / "tool" for d in [*bound, *unbound]), hostbin / "build", hostbin / "other"]:
            by_c = rules.launch(prog, cwd, f"{hostbin}:{HOST_PATH}")
            by_python = preload_lib.shim_root(str(prog), str(cwd), parsed.roots)
            assert by_c == by_python, (str(prog), str(cwd))
            launches += by_c is not None
    assert launches >= 20  # most launches are routed: the comparison is not all None
    # the point of the sibling directories: routed by neither side
    assert rules.launch(x / "repo2" / "tool", x / "repo2") is None
    assert rules.launch(hostbin / "build", x / "repo2", f"{hostbin}:{HOST_PATH}") is None


# ---- launch spec, its file name, the log, the state dir: the engine's writer, the client ----


ENV: dict[str, Any] = {
    "name": "tw",
    "image": "img:1",
    "commands": ["true", "sh"],
    "passthrough": ["PATH", "KEEP*"],
    "deny": ["KEEP_NOT"],
    "env": {},
    "run_as": "root",
    "share": [],
    "mounts": [],
}
FACTS = {"name": "qpod-twins-c1", "hash": "h1"}


def repo_at(root: Path, branch: str = "feature/x") -> Path:
    root.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=root)
    git("commit", "-q", "--allow-empty", "-m", "init", cwd=root)
    git("checkout", "-q", "-b", branch, cwd=root)
    return root


class Agent:
    """The agent built from this tree, answering in the agent dir the engine names for a
    container (its own environment: PATH and AGENT_MARK=yes)."""

    def __init__(self, c: C, name: str = FACTS["name"], config_hash: str = FACTS["hash"]) -> None:
        self.dir = Path(fileio.private_dir(naming.agent_dir(name)))
        # a relative socket: the state dir may be deeper than a socket address allows
        self.proc = subprocess.Popen(
            [str(c.agent), "--socket", "./agent.sock", "--hash", config_hash],
            cwd=self.dir,
            env={"PATH": HOST_PATH, "AGENT_MARK": "yes"},
            stdin=subprocess.DEVNULL,
        )
        wait_until(lambda: self.answers() or self.proc.poll() is not None, "the agent listens")
        assert self.proc.poll() is None

    def answers(self) -> bool:
        """A connection is accepted (the socket file exists from bind(), before listen())."""
        dfd = os.open(self.dir, os.O_PATH)
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(f"/proc/self/fd/{dfd}/agent.sock")
            return True
        except OSError:
            return False
        finally:
            os.close(dfd)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Native:
    """A bound root as the launcher leaves it for the client: a launch spec written by the
    engine (``launch.spec``) in the state dir, and the agent answering in the dir it names."""

    def __init__(self, tmp_path: Path, c: C, monkeypatch: pytest.MonkeyPatch, root: Path | None = None) -> None:
        self.c, self.tmp = c, tmp_path
        self.state = tmp_path / "state"
        self.state.mkdir(mode=0o700, exist_ok=True)
        monkeypatch.setenv("QPOD_STATE_DIR", str(self.state))
        self.home = tmp_path / "home"
        self.home.mkdir(exist_ok=True)
        self.root = root or repo_at(tmp_path / "x" / "repo")
        self.fallback = script(tmp_path / "stubs" / "fallback", 'echo "FALLBACK $*"\nexit 99\n')
        self.agents: list[Agent] = []

    def spec(
        self,
        root: Path | str | None = None,
        env: dict[str, Any] | None = None,
        facts: dict[str, Any] | None = None,
        sources: dict[str, list[int] | None] | None = None,
        branch_rules: bool = False,
        log: tuple[int, int] = (20 << 20, 3),
    ) -> str:
        root = str(root or self.root)
        snap = {"settings": {"log_max_bytes": log[0], "log_keep": log[1]}, "sources": sources or {}}
        text = launchspec.spec_text(snap, {**ENV, **(env or {})}, root, {**FACTS, **(facts or {})}, branch_rules)
        return launchspec.write(launchspec.fast_path(root), text)

    def agent(self, **kw: str) -> Agent:
        a = Agent(self.c, **kw)
        self.agents.append(a)
        return a

    def client_env(self, **extra: str) -> dict[str, str]:
        return {
            "PATH": HOST_PATH,
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "QPOD_STATE_DIR": str(self.state),
            "QPOD_DEBUG": "1",
            **extra,
        }

    def run(
        self,
        argv: list[str] | list[bytes],
        cwd: Path | str | None = None,
        path: str | None = None,
        mode: str = "root",
        env: dict[str, str] | None = None,
        by_command: bool | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """The client as the preload library starts it (``root``: it reads the root's spec, else
        runs the fallback stub), or as ``qpod exec`` does (``front``: it finds the root in the
        state dir's rules first)."""
        cwd = str(cwd or self.root)
        env = env or self.client_env()
        prog = os.fsdecode(argv[0])
        if path is None:
            found = shutil.which(prog, path=env["PATH"]) if "/" not in prog else None
            path = found or os.path.normpath(os.path.join(cwd, prog))
        if by_command is None:  # as the library decides it: neither a program nor a script of the root
            script_ = policy.script_of(os.path.basename(path), [os.fsdecode(a) for a in argv], cwd)
            by_command = all(policy.program_root(p, [str(self.root)]) is None for p in (path, script_) if p)
        if mode == "front":
            args: list[Any] = [self.c.client, "--front", self.fallback, "--", *argv]
        else:
            args = [self.c.client, "--root", self.root, *(["--by-command"] if by_command else [])]
            args += [self.fallback, "--shim", path, cwd, "--", *argv]
        return subprocess.run(
            [a if isinstance(a, bytes) else str(a) for a in args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="surrogateescape",
            timeout=60,
            start_new_session=True,  # no controlling terminal: the client hands over plain descriptors
        )

    def records(self) -> list[dict[str, Any]]:
        stats = cmdlog.Stats()
        recs = list(cmdlog.read(paths.log_file(), stats))
        assert stats.malformed == 0
        return recs

    def close(self) -> None:
        for a in self.agents:
            a.stop()


@pytest.fixture
def native(tmp_path: Path, c: C, monkeypatch: pytest.MonkeyPatch) -> Iterator[Native]:
    n = Native(tmp_path, c, monkeypatch)
    try:
        yield n
    finally:
        n.close()


def ran_by_agent(r: subprocess.CompletedProcess[str], out: str = "") -> bool:
    return "FALLBACK" not in r.stdout and r.stdout == out


@pytest.mark.parametrize(
    "name",
    [
        "with space",
        "tab\there",
        "new\nline",
        "back\\slash and \\t literally",
        "café ü",
        "ends with backslash\\",
        pytest.param(
            os.fsdecode(b"not utf-8 \xe9"),
            marks=pytest.mark.xfail(
                strict=True, raises=UnicodeEncodeError, reason="the engine writes its state files as strict UTF-8"
            ),
        ),
    ],
)
def test_the_client_finds_and_reads_the_spec_the_engine_wrote_for_a_root(
    tmp_path: Path, c: C, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """The file name (FNV-1a of the root's bytes) and the escaped fields (\\\\ \\t \\n) read back
    to the very root: the client compares it with the root it was given."""
    n = Native(tmp_path, c, monkeypatch, root=repo_at(tmp_path / name))
    try:
        spec = n.spec()
        assert os.path.basename(spec) == fnv1a(os.fsencode(str(n.root)))
        n.agent()
        r = n.run(["sh", "-c", 'printf "ran-%s in %s\\n" "$AGENT_MARK" "$PWD"'])
        assert (r.returncode, r.stdout) == (0, f"ran-yes in {n.root}\n"), r.stderr
    finally:
        n.close()


def test_every_spec_field_the_engine_writes_is_the_one_the_client_uses(native: Native, tmp_path: Path) -> None:
    n = native
    source, absent = tmp_path / "environments.yaml", tmp_path / "not-yet.yaml"
    source.write_text("x\n")

    def sources() -> dict[str, list[int] | None]:
        st = source.stat()
        return {str(source): [st.st_ctime_ns, st.st_size], str(absent): None}

    weird = "tab\there, newline\nthere, back\\slash, \\t as text"
    workdir = tmp_path / "w"  # where the repository is in the "container": this machine here
    script(workdir / "sub" / "where", "echo mapped\n")
    env = {"env": {"WEIRD": weird, "KEEP_SET": "from-spec"}, "workdir_root": str(workdir)}
    n.spec(env=env, sources=sources(), branch_rules=True)
    n.agent()
    (n.root / "sub").mkdir()
    caller = n.client_env(KEEP_A="1", KEEP_NOT="2", OTHER="3", KEEP_SET="from-caller")
    # map: the cwd in the container; set, pass, deny: the command's environment
    r = n.run(["sh", "-c", "./where; env -0"], cwd=n.root / "sub", env=caller)
    assert r.returncode == 0 and r.stdout.startswith("mapped\n"), r.stderr
    got = dict(p.split("=", 1) for p in r.stdout[len("mapped\n") :].split("\0") if p)
    assert got["WEIRD"] == weird
    # the engine's own rules (those of the podman exec fallback) give the same environment
    with pytest.MonkeyPatch.context() as m:
        for k in list(os.environ):
            m.delenv(k)
        for k, v in caller.items():
            m.setenv(k, v)
        want = {"AGENT_MARK": "yes", **naming.passed_env({**ENV, **env})}
    names = {*caller, *env["env"], *want}
    assert {k: got.get(k) for k in names} == {k: want.get(k) for k in names}
    # image: in the one line of a command the agent cannot find
    r = n.run(["qpod-no-such-tool"], path=str(n.root / "qpod-no-such-tool"), env=caller)
    assert (r.returncode, r.stderr) == (127, "qpod: qpod-no-such-tool: not found in environment tw (image img:1)\n")
    # container: in the log; head: the branch
    recs = n.records()
    assert {rec["container"] for rec in recs} == {FACTS["name"]}
    assert {rec["branch"] for rec in recs} == {"feature/x"}
    # head and branch_rules: another branch is the launcher's to judge
    git("checkout", "-q", "-b", "other", cwd=n.root)
    r = n.run(["true"], env=caller)
    assert r.stdout.startswith("FALLBACK ") and "branch changed" in r.stderr, r.stderr
    git("checkout", "-q", "feature/x", cwd=n.root)
    assert ran_by_agent(n.run(["true"], env=caller))
    # src: a config file changed since, or appeared
    source.write_text("xy\n")
    r = n.run(["true"], env=caller)
    assert r.stdout.startswith("FALLBACK ") and "config changed" in r.stderr, r.stderr
    n.spec(env=env, sources=sources(), branch_rules=True)
    assert ran_by_agent(n.run(["true"], env=caller))
    absent.write_text("")
    r = n.run(["true"], env=caller)
    assert r.stdout.startswith("FALLBACK ") and "config changed" in r.stderr, r.stderr
    # hash: the agent of a container of another configuration refuses
    n.spec(env=env, facts={"hash": "h2"})
    r = n.run(["true"], env=caller)
    assert r.returncode == 99 and "container from another configuration" in r.stderr, r.stderr


def test_the_launcher_gets_the_callers_stdout_after_the_agent_refuses_a_stale_spec(native: Native) -> None:
    native.spec(facts={"hash": "h2"})  # the agent answers for h1: QP_STALE, then the launcher
    native.agent()
    r = native.run(["true"])
    assert r.stdout.startswith("FALLBACK "), r.stderr


def test_a_cwd_in_a_sibling_directory_is_not_mapped_into_the_container(
    native: Native, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """map lines: /x/repo2 is not inside /x/repo, for the client as for the engine (whose podman
    exec transport says the same line)."""
    n = native
    workdir = tmp_path / "w"
    workdir.mkdir()
    env = {"workdir_root": str(workdir)}
    n.spec(env=env)
    n.agent()
    sibling = Path(f"{n.root}2")
    sibling.mkdir()
    tool = script(n.root / "tool", "exit 0\n")  # the repository's program, started from the sibling
    r = n.run([str(tool)], cwd=sibling)
    with pytest.raises(QpodError) as err:
        python_run(n, monkeypatch, str(tool), [str(tool)], 0, cwd=sibling, env=env)
    assert (r.returncode, r.stderr) == (125, f"qpod: {err.value}\n")
    assert "not visible in the container of environment 'tw'" in r.stderr


# ---- the log record and its rotation ----------------------------------------------------------


def python_run(
    n: Native,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    argv: list[str],
    status: int,
    cwd: Path | None = None,
    env: dict[str, Any] | None = None,
) -> int:
    """The engine's own writer of log records (the podman exec transport), with a podman that
    only exits with ``status``."""
    from qpod_engine.podman import exec_transport

    podman = script(n.tmp / "stubs" / "podman", f"exit {status}\n")
    monkeypatch.setattr(exec_transport.service, "ensure_service", lambda *a, **k: "unix:///nowhere")
    monkeypatch.setattr(exec_transport.service, "podman_binary", lambda: str(podman))
    monkeypatch.setattr(exec_transport.service, "podman_env", lambda extra=None: {"PATH": HOST_PATH})
    cwd = cwd or n.root
    targets = [Target(str(n.root), ENV["name"], tuple(ENV["commands"]), "bound")]
    decision = policy.decide(path, argv, str(cwd), targets)
    snap = {"settings": {"log_max_bytes": 20 << 20, "log_keep": 3}, "sources": {}}
    return exec_transport.run(decision, snap, {**ENV, **(env or {})}, FACTS, path, argv, str(cwd), False)


def test_log_records_of_both_writers_have_the_same_fields(native: Native, monkeypatch: pytest.MonkeyPatch) -> None:
    n = native
    n.spec()
    n.agent()
    branch = git("symbolic-ref", "--short", "HEAD", cwd=n.root).strip()
    assert branch == "feature/x"
    argv = ["sh", "-c", "exit 3"]
    assert n.run(argv, path="/bin/sh").returncode == 3
    assert python_run(n, monkeypatch, "/bin/sh", argv, 3) == 3
    c_start, c_end, py_start, py_end = n.records()
    for by_c, by_py in ((c_start, py_start), (c_end, py_end)):
        assert list(by_c) == list(by_py)  # the same keys, in the same order
        assert {k: type(v) for k, v in by_c.items()} == {k: type(v) for k, v in by_py.items()}
        same = ("repo", "branch", "env", "container", "cwd", "argv", "path", "reason", "status")
        assert {k: by_c[k] for k in same} == {k: by_py[k] for k in same}
        assert by_c["branch"] == branch
        assert re.fullmatch(r"[0-9a-f]+", by_c["id"]) and re.fullmatch(r"[0-9a-f]+", by_py["id"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", by_c["time"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", by_py["time"])
    assert [cmdlog.is_start(r) for r in (c_start, c_end, py_start, py_end)] == [True, False, True, False]
    assert (c_start["id"], py_start["id"]) == (c_end["id"], py_end["id"])
    # merged by the reader: one complete record per command
    assert [r["status"] for r in cmdlog.recent(log=paths.log_file())] == [3, 3]


def test_log_record_keeps_bytes_that_are_not_utf8(native: Native) -> None:
    n = native
    n.spec()
    n.agent()
    argv = [b"sh", b"-c", b"exit 0", b"caf\xe9 \x1b[31m"]
    assert n.run(argv).returncode == 0
    (start, end) = n.records()
    assert [os.fsencode(a) for a in end["argv"]] == argv and start["argv"] == end["argv"]


@pytest.mark.xfail(strict=True, raises=UnicodeEncodeError, reason="cmdlog.append cannot encode a lone surrogate")
def test_the_engines_writer_keeps_bytes_that_are_not_utf8_too(native: Native, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["sh", "-c", "exit 0", os.fsdecode(b"caf\xe9")]
    python_run(native, monkeypatch, "/bin/sh", argv, 0)
    assert native.records()[-1]["argv"] == argv


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="the client takes the branch from HEAD only; the engine's from the rebase",
)
def test_the_branch_being_rebased_is_the_records_branch_on_both_sides(
    native: Native, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = native
    git("checkout", "-q", "--detach", cwd=n.root)
    (n.root / ".git" / "rebase-merge").mkdir()
    (n.root / ".git" / "rebase-merge" / "head-name").write_text("refs/heads/feature/x\n")
    n.spec()
    n.agent()
    assert n.run(["true"]).returncode == 0
    assert python_run(n, monkeypatch, "/bin/true", ["true"], 0) == 0
    assert [r["branch"] for r in n.records()] == ["feature/x"] * 4


def test_rotation_by_both_writers_keeps_every_record(native: Native, monkeypatch: pytest.MonkeyPatch) -> None:
    n = native
    n.spec(log=(1500, 1000))  # a rotation every few records; room for all
    n.agent()
    want = []
    for i in range(12):
        assert n.run(["sh", "-c", "exit 0", f"c{i}"]).returncode == 0
        cmdlog.append({"argv": [f"p{i}"], "status": 0, "pad": "y" * 200}, 1500, 1000)
        want += [f"c{i}", f"c{i}", f"p{i}"]  # the client writes a start and an end record
    files = cmdlog.files(paths.log_file())
    assert len(files) >= 6 and files[-1] == paths.log_file()
    assert files[:-1] == [f"{paths.log_file()}.{i}" for i in range(len(files) - 1, 0, -1)]
    assert all(os.path.getsize(f) <= 1500 for f in files)
    assert [r["argv"][-1] for r in n.records()] == want


def test_rotation_keeps_as_many_files_on_both_sides(native: Native) -> None:
    n = native
    for keep in (1, 3):
        n.spec(log=(600, keep))
        if not n.agents:
            n.agent()
        for i in range(10):
            assert n.run(["true", f"c{i}"]).returncode == 0
        c_files = cmdlog.files(paths.log_file())
        for f in c_files:
            os.unlink(f)
        for i in range(10):
            cmdlog.append({"argv": ["true", f"p{i}"], "status": 0, "pad": "y" * 150}, 600, keep)
        py_files = cmdlog.files(paths.log_file())
        assert len(c_files) == len(py_files) == keep + 1, (c_files, py_files)
        for f in py_files:
            os.unlink(f)


SYSCALLS = {"x86_64": {"73", "35", "230"}, "aarch64": {"32", "101", "115"}}  # flock, nanosleep, clock_nanosleep


@pytest.mark.skipif(platform.machine() not in SYSCALLS, reason="syscall numbers of this machine not listed")
def test_the_client_waits_for_the_lock_the_engine_holds(native: Native) -> None:
    """One lock (the log's ``.lock`` file, flock) serialises every writer's append and rotation."""
    import fcntl

    n = native
    n.spec()
    n.agent()
    os.makedirs(os.path.dirname(paths.log_file()), exist_ok=True)
    fd = os.open(paths.log_file() + ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    p = subprocess.Popen(
        [n.c.client, "--root", n.root, n.fallback, "--shim", "/bin/true", n.root, "--", "true"],
        cwd=n.root,
        env=n.client_env(),
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:

        def waiting() -> bool:  # in flock or in the pause between two tries (or gone: it did not wait)
            try:
                call = Path(f"/proc/{p.pid}/syscall").read_text().split()[0]
            except (OSError, IndexError):
                call = ""
            return p.poll() is not None or call in SYSCALLS[platform.machine()]

        wait_until(waiting, "the client in its lock wait")
        assert p.poll() is None and not os.path.exists(paths.log_file()), "the client wrote without the lock"
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        status = p.wait(timeout=60)
    assert status == 0
    assert [r["status"] for r in n.records()] == [None, 0]


# ---- the state dir ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    ["QPOD_STATE_DIR absolute", "QPOD_STATE_DIR relative", "QPOD_STATE_DIR untidy", "XDG_STATE_HOME", "HOME"],
)
def test_state_dir_resolves_to_the_same_dir(tmp_path: Path, c: C, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    """The client looks for the spec where the engine wrote it: the state dir both resolve from
    QPOD_STATE_DIR (relative to the cwd), else $XDG_STATE_HOME/qpod, else $HOME/.local/state/qpod."""
    n = Native(tmp_path, c, monkeypatch)
    try:
        env = n.client_env()
        for var in ("QPOD_STATE_DIR", "XDG_STATE_HOME"):
            env.pop(var, None)
            monkeypatch.delenv(var, raising=False)
        home = tmp_path / "h"
        home.mkdir()
        extra = {
            "QPOD_STATE_DIR absolute": {"QPOD_STATE_DIR": str(tmp_path / "abs")},
            "QPOD_STATE_DIR relative": {"QPOD_STATE_DIR": "../rel"},
            "QPOD_STATE_DIR untidy": {"QPOD_STATE_DIR": "./sub/../untidy//", "XDG_STATE_HOME": str(tmp_path / "no")},
            "XDG_STATE_HOME": {"QPOD_STATE_DIR": "", "XDG_STATE_HOME": str(tmp_path / "xdg")},
            "HOME": {"XDG_STATE_HOME": "", "HOME": str(home)},
        }[case]
        env.update(extra)
        for k, v in extra.items():
            monkeypatch.setenv(k, v)
        monkeypatch.chdir(n.root)  # the cwd of a relative QPOD_STATE_DIR: the client's too
        (n.root / "sub").mkdir()  # C leaves "sub/.." to the kernel, Python removes it: the same when sub exists
        sd = paths.state_dir_path()
        n.spec()
        assert os.path.isfile(os.path.join(sd, "fast", fnv1a(os.fsencode(str(n.root)))))
        expected = {
            "QPOD_STATE_DIR absolute": tmp_path / "abs",
            "QPOD_STATE_DIR relative": n.root.parent / "rel",
            "QPOD_STATE_DIR untidy": n.root / "untidy",
            "XDG_STATE_HOME": tmp_path / "xdg" / "qpod",
            "HOME": home / ".local" / "state" / "qpod",
        }[case]
        assert os.path.samefile(sd, expected)
        n.agent()
        r = n.run(["sh", "-c", "echo ran-$AGENT_MARK"], env=env)
        assert (r.returncode, r.stdout) == (0, "ran-yes\n"), r.stderr
        # and the rules the engine compiled there are the ones the client's qpod exec reads
        snap = {"repos": [{"root": str(n.root), "environment": "tw", "branches": []}], "envs": {"tw": ENV}}
        fileio.write_atomic(paths.rules_file(), snapshot.rules_text(snap))
        r = n.run(["sh", "-c", "echo front-$AGENT_MARK"], mode="front", env=env)
        assert (r.returncode, r.stdout) == (0, "front-yes\n"), r.stderr
    finally:
        n.close()


# ---- the reason texts -------------------------------------------------------------------------


def _divergent(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason)


REASON_CASES = [
    # (argv, mode: root as from the library, front as qpod exec; environment name; its commands)
    pytest.param(["./tool.sh"], "root", "tw", ["true"], id="a program of the repository"),
    pytest.param(["true"], "root", "tw", ["true"], id="a command of the environment"),
    pytest.param(["sh", "./tool.sh"], "root", "tw", ["true"], id="a script run by an interpreter"),
    pytest.param(["env", "true"], "front", "tw", ["true"], id="qpod exec of a command not on the list"),
    pytest.param(["SIBLING"], "front", "tw", ["true"], id="qpod exec of a program in a sibling directory"),
    pytest.param(
        ["true"],
        "root",
        paths.REPO_FILE,
        ["true"],
        id="a command of the repository file",
        marks=_divergent('the client says "environment \'.qpod.yaml\'", the policy "the repository file"'),
    ),
    pytest.param(
        ["env", "true"],
        "front",
        paths.REPO_FILE,
        ["true"],
        id="qpod exec in a repository using its file",
        marks=_divergent('the client says "bound to \'.qpod.yaml\'", the policy "using its file"'),
    ),
    pytest.param(
        ["sh", "./tool.sh"],
        "root",
        "tw",
        ["true", "sh"],
        id="a script run by an interpreter on the list",
        marks=_divergent("the client asks the list before the script, the policy the script first"),
    ),
    pytest.param(
        ["make", "-C", "sub"],
        "root",
        "tw",
        ["make"],
        id="a build tool told to work in a subdirectory",
        marks=_divergent("the policy adds ' (working in DIR)', the client does not"),
    ),
]


@pytest.mark.parametrize(("argv", "mode", "env_name", "commands"), REASON_CASES)
def test_reason_texts_are_the_policys(
    native: Native, argv: list[str], mode: str, env_name: str, commands: list[str]
) -> None:
    """The reason the client logs for a launch it runs on its own (the library's, qpod exec's)
    is the one ``qpod which`` gives: policy.decide's."""
    n = native
    script(n.root / "tool.sh", "exit 0\n")
    (n.root / "sub").mkdir()
    sibling = Path(f"{n.root}2")
    script(sibling / "tool", "exit 0\n")
    hostbin = script(n.tmp / "bin" / "make", "exit 0\n").parent  # a make that only exits
    argv = [str(sibling / "tool") if a == "SIBLING" else a for a in argv]
    env = {**ENV, "name": env_name, "commands": commands}
    n.spec(env=env)
    n.agent()
    snap = {"repos": [{"root": str(n.root), "environment": env_name, "branches": []}], "envs": {env_name: env}}
    fileio.write_atomic(paths.rules_file(), snapshot.rules_text(snap))
    r = n.run(argv, mode=mode, env=n.client_env(PATH=f"{hostbin}:{HOST_PATH}"))
    assert r.returncode == 0 and "FALLBACK" not in r.stdout, (r.stdout, r.stderr)
    (rec,) = [x for x in n.records() if not cmdlog.is_start(x)]
    target = Target(str(n.root), env_name, tuple(commands), "bound")
    d = policy.decide(rec["path"], argv, str(n.root), [target], explicit=mode == "front")
    assert d.in_container and rec["reason"] == d.reason


# ---- the agent's protocol, as docs/formats.md gives it ----------------------------------------


def test_agent_frames_are_as_documented(native: Native) -> None:
    """Only C speaks the protocol (client, agent, bridge); this pins the numbers the document
    gives (and the tests' own probes use) against the agent built from this tree."""
    n = native
    agent = n.agent()
    QP_MAGIC, QP_VERSION = 0x51504F44, 1
    STARTED, EXITED, SIGNALED, EXEC_FAILED, REFUSED, STALE, SIGNAL, CHDIR_FLAG = 1, 4, 5, 6, 7, 8, 100, 0x10000

    def request(*tags: str, header: tuple[int, int] = (QP_MAGIC, QP_VERSION)) -> socket.socket:
        payload = b"".join(t.encode() + b"\0" for t in tags)
        dfd = os.open(agent.dir, os.O_PATH)
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(f"/proc/self/fd/{dfd}/agent.sock")
        finally:
            os.close(dfd)
        s.sendall(struct.pack("=IIII", *header, len(payload), 0) + payload)
        return s

    def event(s: socket.socket) -> tuple[int, int]:
        data = b""
        while len(data) < 8:
            chunk = s.recv(8 - len(data))
            assert chunk, "the agent closed the connection"
            data += chunk
        return struct.unpack("=Ii", data)

    s = request("hh1", f"c{n.root}", "psh", "ash", "a-c", "aexit 5", "m22")
    assert event(s)[0] == STARTED and event(s) == (EXITED, 5)
    s = request("hh1", f"c{n.root}", "psleep", "asleep", "a30")
    assert event(s)[0] == STARTED
    s.sendall(struct.pack("=Ii", SIGNAL, signal.SIGTERM))
    assert event(s) == (SIGNALED, signal.SIGTERM)
    s = request("hh1", "c/nowhere/at/all", "ptrue", "atrue")
    assert event(s) == (EXEC_FAILED, CHDIR_FLAG | 2)  # ENOENT
    assert event(request("hh2", f"c{n.root}", "ptrue", "atrue")) == (STALE, 0)
    assert event(request("hh1", f"c{n.root}", "ptrue", "atrue", header=(QP_MAGIC, 2))) == (REFUSED, 71)  # EPROTO


def test_agent_check_lines_are_the_ones_the_engine_reads(
    native: Native, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``qpod-agent --check`` (C) prints one tab-separated line per problem; remote.check_tree
    (Python) turns each into its one-line error. ssh is a stub that runs the command here."""
    from qpod_engine.podman import remote

    stubs = tmp_path / "sshbin"
    script(stubs / "ssh", 'for a; do last=$a; done\nexec sh -c "$last"\n')
    monkeypatch.setenv("PATH", f"{stubs}:{os.environ['PATH']}")
    monkeypatch.setenv("HOME", str(native.home))
    monkeypatch.setattr(remote, "agent_program", lambda: str(native.c.agent))
    conn = remote.Connection("there", "there.example", None, None, "/run/podman/podman.sock", None)
    root = str(native.root)
    remote.check_tree(conn, root, [root], "ctr-ok")
    assert stat.S_IMODE(os.stat(naming.agent_dir("ctr-ok")).st_mode) == 0o700
    with pytest.raises(QpodError, match=r"host 'there': /nowhere/mount \(a mount of the environment\) does not"):
        remote.check_tree(conn, root, [root, "/nowhere/mount"], "ctr-ok")
    (native.state / "agents" / "blocked").write_text("")
    with pytest.raises(QpodError, match=r"host 'there': cannot make qpod's state dir there: .*/blocked/ctr"):
        remote.check_tree(conn, root, [root], "blocked/ctr")
