"""An environment's ``distribute:``: one build's compiles spread by distcc over build hosts, each
a distccd container of the same image reached over ssh only. Two build hosts are this machine
through two real sshds on 127.0.0.1 (tests/sshd_host.py), each with a podman service of its own
(they share this machine's storage: the distccd container of each is named for its host)."""

import hashlib
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sshd_host
from conftest import remove_containers_of, run_qpod
from tmux_driver import Tmux

from qpod_engine.podman import distribute, remote
from qpod_engine.routing import preload_lib

pytestmark = [
    pytest.mark.podman,
    pytest.mark.demo,
    pytest.mark.skipif(sshd_host.available() is not None, reason=sshd_host.available() or ""),
    pytest.mark.skipif(not preload_lib.library_path().is_file(), reason="qpod is not installed with its library"),
]

N_FILES = 40


def c_project(n: int = N_FILES, gate: bool = False) -> dict[str, str]:
    """``n`` C files and a main, code the host's gcc 12 rejects under -Wall -Werror as gcc 10
    does not (an unused variable is a warning for both; gcc 12 adds -Wuse-after-free... kept
    simple: each file computes something of its own). With ``gate`` the second half is compiled
    only once the file ``go`` exists (the test acts between the halves)."""
    files = {}
    for i in range(n):
        files[f"src/f{i:02d}.c"] = (
            f"int f{i}(int x) {{\n"
            + "".join(f"    x = x * {j + 3} + {i} - (x >> {j % 7 + 1});\n" for j in range(40))
            + "    return x;\n}\n"
        )
    calls = " + ".join(f"f{i}(argc)" for i in range(n))
    decls = "".join(f"int f{i}(int);\n" for i in range(n))
    files["src/main.c"] = (
        f'#include <stdio.h>\n{decls}int main(int argc, char **argv) {{ printf("%d\\n", {calls}); return 0; }}\n'
    )
    objs = " ".join(f"src/f{i:02d}.o" for i in range(n))
    first = " ".join(f"src/f{i:02d}.o" for i in range(n // 2))
    second = " ".join(f"src/f{i:02d}.o" for i in range(n // 2, n))
    rules = f"prog: {objs} src/main.o\n\tgcc -o $@ $^\n%.o: %.c\n\tgcc -O2 -c -o $@ $<\n"
    if gate:
        rules = (
            f"prog: half gate\n\t$(MAKE) rest\n\tgcc -o $@ {objs} src/main.o\n"
            f"half: {first}\ngate: half\n\t@echo gate-open; until [ -e go ]; do sleep 0.1; done\n"
            f"rest: {second} src/main.o\n%.o: %.c\n\tgcc -O2 -c -o $@ $<\n.PHONY: half gate rest\n"
        )
    files["Makefile"] = rules
    return files


def _hosts(work: Path) -> tuple[sshd_host.SshHost, sshd_host.SshHost]:
    b1 = sshd_host.SshHost(work / "b1", name="b1")
    b2 = sshd_host.SshHost(work / "b2", name="b2")
    b1.add_connection(b2)  # b1's containers.conf and known_hosts are the ones qpod reads
    return b1, b2


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[sshd_host.SshHost, sshd_host.SshHost]]:
    b1, b2 = _hosts(tmp_path_factory.mktemp("build-hosts"))
    yield b1, b2
    b2.stop()
    b1.stop()


def _use(b1: sshd_host.SshHost, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in b1.env().items():
        monkeypatch.setenv(k, v)
    remote._connections = None


def _remove_distccd(env_name: str, *names: str) -> None:
    env = {**os.environ, "QPOD_OFF": "1"}
    env.pop("LD_PRELOAD", None)
    ctrs = [distribute.distccd_name(env_name, n) for n in names]
    subprocess.run(["podman", "rm", "-f", "-t", "0", *ctrs], capture_output=True, env=env)


def distccd_log(env_name: str, host: str) -> str:
    r = subprocess.run(
        ["podman", "exec", distribute.distccd_name(env_name, host), "cat", distribute.SERVER_LOG],
        capture_output=True,
        text=True,
    )
    return r.stdout


def compiles_on(env_name: str, host: str) -> int:
    return distccd_log(env_name, host).count("COMPILE_OK")


def listeners() -> set[str]:
    """This machine's listening TCP sockets, with their processes."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    return {" ".join(line.split()) for line in out.splitlines()}


def tcp_listening_in(container: str) -> list[str]:
    """Listening TCP sockets in a container's own network namespace (state 0A in /proc/net/tcp*)."""
    r = subprocess.run(
        ["podman", "exec", container, "sh", "-c", "cat /proc/net/tcp /proc/net/tcp6 2>/dev/null"],
        capture_output=True,
        text=True,
    )
    return [ln for ln in r.stdout.splitlines()[1:] if len(ln.split()) > 3 and ln.split()[3] == "0A"]


def objects(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((root / "src").glob("*.o"))}


def comment(path: Path) -> str:
    return subprocess.run(["readelf", "-p", ".comment", str(path)], capture_output=True, text=True).stdout


def test_a_build_through_qpod_shell_compiles_on_both_hosts_over_ssh_only(
    hosts: tuple[sshd_host.SshHost, sshd_host.SshHost],
    qpod_home: Path,
    make_repo: Callable[..., Path],
    debian11_image: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    b1, b2 = hosts
    _use(b1, monkeypatch)
    env_name = "dist-" + uuid.uuid4().hex[:6]
    root = make_repo("spread-" + uuid.uuid4().hex[:6], c_project())
    here = make_repo("here-" + uuid.uuid4().hex[:6], c_project())
    r = run_qpod("env", "add", env_name, "--image", debian11_image, "--distribute", "b1/4", "--distribute", "b2/4")
    assert r.returncode == 0, r.stderr
    assert run_qpod("env", "add", "local-" + env_name, "--image", debian11_image).returncode == 0
    assert run_qpod("init", env_name, cwd=root).returncode == 0
    assert run_qpod("init", "local-" + env_name, cwd=here).returncode == 0
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(b1.home),
        "SHELL": "/bin/bash",
        "TERM": "xterm",
        "LANG": "C.UTF-8",
        "CONTAINERS_CONF": str(b1.conf),
        "QPOD_CONFIG_DIR": os.environ["QPOD_CONFIG_DIR"],
        "QPOD_STATE_DIR": os.environ["QPOD_STATE_DIR"],
    }
    tmux = Tmux(f"{sys.executable} -m qpod_engine.cli.shell", env=env, cwd=str(root))
    try:
        tmux.wait_for("in qpod mode")
        n = 0

        def run(cmd: str, timeout: float = 600) -> str:
            nonlocal n
            n += 1
            tmux.type(f'{cmd}; echo "DONE-$((1000+{n}))-$?"')
            screen = tmux.wait_for(f"DONE-{1000 + n}-", timeout)
            return screen[screen.rfind(f"DONE-$((1000+{n}))") :]

        out = run("true")  # the launcher's slow path makes the distccd containers there
        assert f"DONE-{1000 + n}-0" in out, out
        before = listeners()
        out = run("make -j8 2>err.txt")
        during = listeners()  # (the build has ended: its ssh channels, not its containers)
        assert f"DONE-{1000 + n}-0" in out, (out, (root / "err.txt").read_text())
    finally:
        tmux.kill()
    try:
        assert (root / "err.txt").read_text() == ""  # distcc's own words go to its log, not the build's
        for host in ("b1", "b2"):
            assert compiles_on(env_name, host) > 0, distccd_log(env_name, host)
        assert compiles_on(env_name, "b1") + compiles_on(env_name, "b2") >= N_FILES // 2
        for obj in sorted((root / "src").glob("*.o")):
            assert "GCC: (Debian 10." in comment(obj), (obj, comment(obj))
        # the same build in a local environment of the same image: the same objects, bit for bit
        r = run_qpod("exec", "make", "-j2", cwd=here, timeout=600)
        assert r.returncode == 0, r.stderr
        assert objects(root) == objects(here) and len(objects(root)) == N_FILES + 1
        # no TCP port: none new here, none in the distccd containers (they have no network)
        new = listeners() - before
        assert not [ln for ln in new | (during - before) if "distcc" in ln or '"ssh"' in ln], new
        for host in ("b1", "b2"):
            assert tcp_listening_in(distribute.distccd_name(env_name, host)) == []
        # qpod ps shows them by host; qpod stop stops them
        ps = run_qpod("ps")
        rows = {ln.split()[0]: ln.split() for ln in ps.stdout.splitlines()[1:]}
        for host in ("b1", "b2"):
            row = rows[distribute.distccd_name(env_name, host)]
            assert row[-1] == host and "running" in row, ps.stdout
        # qpod which and qpod doctor say it
        r = run_qpod("which", "gcc", cwd=root)
        assert "compiles spread by distcc over build hosts b1/4 b2/4 (over ssh)" in r.stdout, r.stdout
        r = run_qpod("doctor", timeout=300)
        for want in (
            f"ok   environment {env_name}: image {debian11_image} has distcc, distccd and ssh",
            f"ok   build host b1 (environment {env_name}): ssh root@127.0.0.1 works without a prompt",
            f"ok   build host b2 (environment {env_name}): podman ",
            f"ok   build host b2 (environment {env_name}): image {debian11_image} there is this machine's",
        ):
            assert want in r.stdout, r.stdout
        r = run_qpod("stop", env_name)
        assert r.returncode == 0 and "on host b1" in r.stdout and "on host b2" in r.stdout, r.stdout
    finally:
        remove_containers_of(str(root))
        remove_containers_of(str(here))
        _remove_distccd(env_name, "b1", "b2")


def test_a_host_dropping_mid_build_costs_time_not_the_build(
    tmp_path_factory: pytest.TempPathFactory,
    qpod_home: Path,
    make_repo: Callable[..., Path],
    debian11_image: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    b1, b2 = _hosts(tmp_path_factory.mktemp("dropping-hosts"))
    env_name = "drop-" + uuid.uuid4().hex[:6]
    root = make_repo("drop-" + uuid.uuid4().hex[:6], c_project(gate=True))
    try:
        _use(b1, monkeypatch)
        r = run_qpod("env", "add", env_name, "--image", debian11_image, "--distribute", "b1/4", "--distribute", "b2/4")
        assert r.returncode == 0, r.stderr
        assert run_qpod("init", env_name, cwd=root).returncode == 0
        p = subprocess.Popen(
            [sys.executable, "-m", "qpod_engine.cli", "exec", "make", "-j8"],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert p.stdout is not None
        # the first half compiled (on both hosts), the build waits at the gate: b2 goes away
        while "gate-open" not in (line := p.stdout.readline()):
            assert line, p.stderr.read() if p.stderr else ""
        assert compiles_on(env_name, "b2") > 0, distccd_log(env_name, "b2")
        b2.stop()
        (root / "go").touch()
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, (out, err)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("qpod: build host b2 failed, its compiles run here"), lines
        for obj in sorted((root / "src").glob("*.o")):
            assert "GCC: (Debian 10." in comment(obj)
        r = subprocess.run([str(root / "prog")], capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.strip(), r
    finally:
        b2.stop()
        b1.stop()
        remove_containers_of(str(root))
        _remove_distccd(env_name, "b1", "b2")


def test_an_image_without_distcc_compiles_here_and_says_so(
    hosts: tuple[sshd_host.SshHost, sshd_host.SshHost],
    qpod_home: Path,
    make_repo: Callable[..., Path],
    busybox_image: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    b1, _b2 = hosts
    _use(b1, monkeypatch)
    root = make_repo("nodistcc-" + uuid.uuid4().hex[:6])
    assert run_qpod("env", "add", "bbd", "--image", busybox_image, "--distribute", "b1/2").returncode == 0
    assert run_qpod("init", "bbd", cwd=root).returncode == 0
    try:
        r = run_qpod("exec", "echo", "ran", cwd=root)
        assert r.returncode == 0 and r.stdout == "ran\n", r.stderr
        assert r.stderr.splitlines() == [
            f"qpod: environment bbd: image {busybox_image} has no distcc: every compile runs here"
        ], r.stderr
        r = run_qpod("which", "make", cwd=root)
        assert "distribute (b1/2): the image has no distcc, every compile runs here" in r.stdout, r.stdout
        r = run_qpod("doctor", timeout=300)
        assert (
            f"FAIL environment bbd: image {busybox_image} has distcc, distccd and ssh (missing: distcc, distccd, ssh)"
            in r.stdout
        ), r.stdout
    finally:
        remove_containers_of(str(root))
