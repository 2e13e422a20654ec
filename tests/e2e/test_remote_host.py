"""Environments on another host (``host:``): this machine through a real sshd on 127.0.0.1
(tests/sshd_host.py), so paths are shared as with a home over NFS. Real ssh, real podman, real
qpod-shell in tmux. The host's podman shares this machine's storage: what proves a command ran
there is sshd_host.MARKER, which only the containers of the host's own service have."""

import fcntl
import hashlib
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import termios
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sshd_host
from conftest import container_processes, remove_containers_of, run_qpod, wait_until
from tmux_driver import Tmux
from tui_pilot import wait_for

from qpod_engine.podman import remote
from qpod_engine.routing import preload_lib

pytestmark = [
    pytest.mark.podman,
    pytest.mark.skipif(sshd_host.available() is not None, reason=sshd_host.available() or ""),
    pytest.mark.skipif(not preload_lib.library_path().is_file(), reason="qpod is not installed with its library"),
]

OLD_C = "int main(void) { int unused; return 0; }\n"
# each target says, or shows by its processes, that it runs there (its container's MARKER)
MAKEFILE = f"""\
prog: prog.c
\tgcc -O1 -o prog prog.c
long:
\t@echo long-started; sleep 41.75; echo long-finished
ttys:
\t@test -t 0 && test -t 1 && test -t 2 && echo all-ttys-on-$$(cat {sshd_host.MARKER})
zz:
\t@echo zz-$$((6*7)); until [ -e zz-go ]; do sleep 0.1; done; echo zz-$$((7*7))
"""


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sshd_host.SshHost]:
    h = sshd_host.SshHost(tmp_path_factory.mktemp("sshd"))
    yield h
    h.stop()


@pytest.fixture
def on_host(host: sshd_host.SshHost, qpod_home: Path, monkeypatch: pytest.MonkeyPatch) -> sshd_host.SshHost:
    """qpod (and podman) of this test see the host's connection and known_hosts."""
    for k, v in host.env().items():
        monkeypatch.setenv(k, v)
    remote._connections = None  # asked once per process: this process asks again
    return host


@pytest.fixture
def remote_repo(on_host: sshd_host.SshHost, make_repo: Callable[..., Path], busybox_image: str) -> Iterator[Path]:
    root = make_repo("far-" + uuid.uuid4().hex[:6])
    r = run_qpod("env", "add", "rbb", "--image", busybox_image, "--host", on_host.name)
    assert r.returncode == 0, r.stderr
    assert run_qpod("init", "rbb", cwd=root).returncode == 0
    yield root
    remove_containers_of(str(root))


def qexec(*argv: str, cwd: Path, **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "qpod_engine.cli", "exec", *argv], cwd=cwd, capture_output=True, timeout=180, **kw
    )  # type: ignore[call-overload]


def _sessions_logged(host: sshd_host.SshHost) -> int:
    return host.log.read_text(errors="replace").count("Starting session: command")


def ran_on(root: Path) -> bytes:
    """Where a command in ``root`` runs: the name of the host whose service made its container,
    or (made on this machine) cat's complaint."""
    r = qexec("cat", sshd_host.MARKER, cwd=root)
    return r.stdout or r.stderr


def _running(root: Path, command: str, state: str = "") -> bool:
    """Whether ``command`` runs (in ``state``, e.g. T: stopped) in the container of ``root``."""
    return any(cmd == command and state in st for st, cmd in container_processes(root))


def test_a_build_through_qpod_shell_runs_on_the_remote_host(
    on_host: sshd_host.SshHost, qpod_home: Path, make_repo: Callable[..., Path], debian11_image: str, tmp_path: Path
) -> None:
    root = make_repo("legacy-" + uuid.uuid4().hex[:6], {"prog.c": OLD_C, "Makefile": MAKEFILE})
    assert run_qpod("env", "add", "rdeb", "--image", debian11_image, "--host", on_host.name).returncode == 0
    assert run_qpod("init", "rdeb", cwd=root).returncode == 0
    home = tmp_path / "shell-home"
    home.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(on_host.home),
        "SHELL": "/bin/bash",
        "TERM": "xterm",
        "LANG": "C.UTF-8",
        "CONTAINERS_CONF": str(on_host.conf),
        "QPOD_CONFIG_DIR": os.environ["QPOD_CONFIG_DIR"],
        "QPOD_STATE_DIR": os.environ["QPOD_STATE_DIR"],
    }
    before = _sessions_logged(on_host)
    tmux = Tmux(f"{sys.executable} -m qpod_engine.cli.shell", env=env, cwd=str(root))
    try:
        tmux.wait_for("in qpod mode")
        n = 0

        def run(cmd: str, timeout: float = 300) -> str:
            nonlocal n
            n += 1
            tmux.type(f'{cmd}; echo "DONE-$((1000+{n}))-$?"')
            screen = tmux.wait_for(f"DONE-{1000 + n}-", timeout)
            return screen[screen.rfind(f"DONE-$((1000+{n}))") :]

        out = run("make")
        assert "gcc -O1 -o prog prog.c" in out and f"DONE-{1000 + n}-0" in out, out
        comment = subprocess.run(
            ["readelf", "-p", ".comment", str(root / "prog")], capture_output=True, text=True
        ).stdout
        assert "GCC: (Debian 10." in comment, comment  # the container's gcc built it
        assert _sessions_logged(on_host) > before  # through the test's sshd
        assert ran_on(root) == f"{on_host.name}\n".encode()  # in a container the host's podman made
        # stdin, stdout and stderr are the terminal: a pty on the host, as ssh -t gives
        out = run("make -s ttys")
        assert f"all-ttys-on-{on_host.name}" in out, out
        # Ctrl-C reaches the build there and ends it
        tmux.type("make -s long")
        tmux.wait_for("long-started", 120)
        wait_until(lambda: _running(root, "sleep 41.75"), "the build's sleep")
        tmux.send("C-c")
        wait_until(lambda: not _running(root, "sleep 41.75"), "the build to end after Ctrl-C")
        out = run("echo after-int")
        assert "long-finished" not in out
        # Ctrl-Z stops it there, fg resumes it (the markers are computed: the typed line does
        # not contain them); it waits for a file the test makes while it is stopped
        tmux.type("make -s zz")
        tmux.wait_for("zz-42", 120)

        def build_states() -> set[str]:
            return {state for state, cmd in container_processes(root) if "zz-go" in cmd}

        wait_until(build_states, lambda: f"the build running there: {container_processes(root)}")
        tmux.send("C-z")
        try:
            tmux.wait_for("Stopped", 120)
        except AssertionError as err:  # what each process there was doing, for whoever reads the failure
            ps = "\n".join(f"{state} {cmd}" for state, cmd in container_processes(root))
            raise AssertionError(f"{err}\nin the container:\n{ps}") from None
        wait_until(lambda: build_states() == {"T"}, "the command there to stop", 20)
        (root / "zz-go").touch()  # it goes on only once resumed
        out = run("fg")
        assert "zz-49" in out and f"DONE-{1000 + n}-0" in out, out
    finally:
        tmux.kill()
        remove_containers_of(str(root))
    ps = run_qpod("ps")
    assert ps.returncode == 0


def test_streams_status_and_signals_are_relayed(remote_repo: Path, on_host: sshd_host.SshHost) -> None:
    assert ran_on(remote_repo) == f"{on_host.name}\n".encode()  # there, not on this machine
    # stdin through, 3 MB, bytes intact; the command ends at our EOF
    data = os.urandom(3 << 20)
    r = qexec("cat", cwd=remote_repo, input=data)
    assert r.returncode == 0 and hashlib.sha256(r.stdout).digest() == hashlib.sha256(data).digest(), r.stderr
    # stdout and stderr apart, the exit status as it was
    r = qexec("sh", "-c", "echo out; echo err >&2; exit 7", cwd=remote_repo)
    assert (r.returncode, r.stdout, r.stderr) == (7, b"out\n", b"err\n")
    # a command killed by a signal there: killed by it here too
    r = qexec("sh", "-c", "kill -TERM $$", cwd=remote_repo)
    assert r.returncode == -signal.SIGTERM, r
    # our reader goes away: the command there gets SIGPIPE, as natively
    r = subprocess.run(
        ["bash", "-c", f'{sys.executable} -m qpod_engine.cli exec yes | head -2; echo "status=${{PIPESTATUS[0]}}"'],
        cwd=remote_repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.stdout == "y\ny\nstatus=141\n", r
    # a signal to the client reaches the command's process group there
    for sig, name in ((signal.SIGINT, "INT"), (signal.SIGTERM, "TERM"), (signal.SIGHUP, "HUP")):
        p = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "qpod_engine.cli",
                "exec",
                "sh",
                "-c",
                f'trap "echo got-{name}; exit 5" {name}; echo ready; while :; do sleep 0.1; done',
            ],
            cwd=remote_repo,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert p.stdout is not None
        assert p.stdout.readline() == b"ready\n"
        p.send_signal(sig)
        out, err = p.communicate(timeout=60)
        assert (p.returncode, out) == (5, f"got-{name}\n".encode()), err
    # each command is in the log as a local one is, with its status
    r = run_qpod("log", "--json", "--env", "rbb")
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(rec["argv"][:2], rec["status"]) for rec in records if rec["argv"][0] == "sh"][:2] == [
        (["sh", "-c"], 7),
        (["sh", "-c"], 128 + signal.SIGTERM),
    ], records


def run_in_a_terminal(argv: list[str], cwd: Path, lflag_off: int) -> tuple[int, str]:
    """argv as the foreground job of a new terminal whose local modes lack ``lflag_off`` (as a
    program that set its terminal up before starting a command leaves it): status and output."""
    master, slave = pty.openpty()
    mode = termios.tcgetattr(slave)
    mode[3] &= ~lflag_off
    termios.tcsetattr(slave, termios.TCSANOW, mode)
    p = subprocess.Popen(
        argv, cwd=cwd, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),  # its terminal, it in the foreground
    )  # fmt: skip
    os.close(slave)
    out = b""
    while True:  # until the terminal's last holder is gone (EIO)
        ready, _, _ = select.select([master], [], [], 120)
        assert ready, f"no output from {argv} for 120 s: {out!r}"
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return p.wait(timeout=60), out.decode(errors="replace")


def test_a_terminal_commands_pty_there_takes_the_callers_modes(remote_repo: Path) -> None:
    """As ssh -t does: the pty made on the host is set as the caller's terminal was (Emacs turns
    echo off for gdb; gud read its own commands echoed back when the pty had echo on)."""
    cli = [sys.executable, "-m", "qpod_engine.cli", "exec", "stty", "-a"]
    status, out = run_in_a_terminal(cli, remote_repo, termios.ECHO | termios.ICANON)
    assert status == 0 and {"-echo", "-icanon"} <= set(out.replace(";", " ").split()), out
    status, out = run_in_a_terminal(cli, remote_repo, 0)  # and a terminal left as it was: as it was
    assert status == 0 and {"echo", "icanon"} <= set(out.replace(";", " ").split()), out


def test_eighty_parallel_commands_lose_no_output(remote_repo: Path, on_host: sshd_host.SshHost) -> None:
    # more at once than sshd's default MaxSessions (10 per connection) and MaxStartups (10); each
    # says where it ran
    def one(i: int) -> tuple[int, int, bytes]:
        r = qexec("sh", "-c", f"cat {sshd_host.MARKER}; echo line-{i}; seq 1 3000", cwd=remote_repo)
        return i, r.returncode, r.stdout + r.stderr

    want = "".join(f"{k}\n" for k in range(1, 3001)).encode()
    with ThreadPoolExecutor(80) as pool:
        results = list(pool.map(one, range(80)))
    there = f"{on_host.name}\n".encode()
    bad = [(i, rc, out[:200]) for i, rc, out in results if rc != 0 or out != there + f"line-{i}\n".encode() + want]
    assert not bad, bad


def test_a_dropped_connection_ends_the_command_with_255(remote_repo: Path, on_host: sshd_host.SshHost) -> None:
    assert ran_on(remote_repo) == f"{on_host.name}\n".encode()  # the container is up, there
    p = subprocess.Popen(
        [sys.executable, "-m", "qpod_engine.cli", "exec", "sh", "-c", "echo started; sleep 1234.5"],
        cwd=remote_repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert p.stdout is not None and p.stdout.readline() == b"started\n"
    wait_until(lambda: _running(remote_repo, "sleep 1234.5"), "the command there")
    on_host.drop_connections()
    out, err = p.communicate(timeout=120)
    assert p.returncode == 255, (out, err)
    lines = err.decode().splitlines()
    assert lines == [f"qpod: lost the connection to host {on_host.name}"], lines
    r = qexec("echo", "back", cwd=remote_repo)  # the next command connects again
    assert (r.returncode, r.stdout) == (0, b"back\n"), r.stderr
    wait_until(lambda: not _running(remote_repo, "sleep 1234.5"), "nothing left running there")


def test_which_ps_and_doctor_name_the_host(remote_repo: Path, on_host: sshd_host.SshHost) -> None:
    assert qexec("true", cwd=remote_repo).returncode == 0
    r = run_qpod("which", "cat", cwd=remote_repo)
    assert r.stdout.startswith("host:") and "over ssh" not in r.stdout  # not routed: this machine's own
    r = run_qpod("which", "make", cwd=remote_repo)
    assert f"on host {on_host.name} over ssh" in r.stdout, r.stdout
    assert "a terminal's stdin is read only when" in r.stdout, r.stdout
    r = run_qpod("ps", cwd=remote_repo)
    row = [ln for ln in r.stdout.splitlines() if str(remote_repo) in ln]
    assert r.returncode == 0 and len(row) == 1 and row[0].split()[-1] == on_host.name, r.stdout
    r = run_qpod("doctor")
    for want in (
        f"ok   host {on_host.name}: ssh root@127.0.0.1 works without a prompt",
        f"ok   host {on_host.name}: podman ",
        f"ok   trivial container starts on host {on_host.name}",
    ):
        assert want in r.stdout, r.stdout
    r = run_qpod("stop", "rbb")
    assert r.returncode == 0 and f"on host {on_host.name}" in r.stdout, r.stdout
    # stopped there: the bridge starts it again for the next command
    r = qexec("echo", "again", cwd=remote_repo)
    assert (r.returncode, r.stdout) == (0, b"again\n"), r.stderr
    assert ran_on(remote_repo) == f"{on_host.name}\n".encode()


def test_an_unknown_or_unreachable_host_fails_with_125_never_on_this_machine(
    on_host: sshd_host.SshHost, make_repo: Callable[..., Path], busybox_image: str
) -> None:
    root = make_repo("nohost-" + uuid.uuid4().hex[:6])
    r = run_qpod("env", "add", "ghost", "--image", busybox_image, "--host", "no-such-conn")
    assert r.returncode == 0 and "host 'no-such-conn' is not a podman ssh connection yet" in r.stderr, r.stderr
    assert run_qpod("init", "ghost", cwd=root).returncode == 0
    r = qexec("sh", "-c", "echo ran-somewhere", cwd=root)
    assert r.returncode == 125 and b"ran-somewhere" not in r.stdout
    assert r.stderr.decode().splitlines() == [
        "qpod: host 'no-such-conn' is not a podman ssh connection (add it: podman system connection add no-such-conn "
        "ssh://USER@HOST[:PORT]/PATH/TO/podman.sock --identity KEY)"
    ], r.stderr
    r = run_qpod("doctor")
    assert "FAIL host no-such-conn" in r.stdout and r.returncode == 1


def test_a_tree_the_host_does_not_see_is_refused(
    on_host: sshd_host.SshHost,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    make_repo: Callable[..., Path],
    busybox_image: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a second "host" whose sessions see this test's directory empty: a tree it does not share
    blind = sshd_host.SshHost(
        tmp_path_factory.mktemp("blind"), name="blind", hide=str(tmp_path), podman_socket=on_host.socket
    )
    try:
        on_host.add_connection(blind)
        remote._connections = None
        root = make_repo("unshared-" + uuid.uuid4().hex[:6])
        assert run_qpod("env", "add", "rblind", "--image", busybox_image, "--host", "blind").returncode == 0
        assert run_qpod("init", "rblind", cwd=root).returncode == 0
        r = qexec("sh", "-c", "echo built-a-stale-tree", cwd=root)
        assert r.returncode == 125 and b"built-a-stale-tree" not in r.stdout
        lines = r.stderr.decode().splitlines()
        assert len(lines) == 1 and re.fullmatch(
            rf"qpod: host 'blind' does not see this tree at {re.escape(str(root))} \(a marker written here is not "
            r"there\): an environment on another host needs the repository at the same path on both machines, as "
            r"with a home shared over NFS",
            lines[0],
        ), lines
        assert not list((root / ".git").glob("qpod-marker-*"))  # the marker is cleaned up
    finally:
        blind.stop()
        remove_containers_of(str(tmp_path))


def test_connections_are_read_from_podman_and_ssh_runs_without_prompts(on_host: sshd_host.SshHost) -> None:
    conn = remote.connection(on_host.name)
    assert (conn.host, conn.user, conn.port, conn.socket) == ("127.0.0.1", "root", on_host.port, on_host.socket)
    argv = remote.bridge_argv(conn, "qpod-x-y-1")
    assert "BatchMode=yes" in argv and f"UserKnownHostsFile={on_host.home}/.ssh/known_hosts" in argv
    control = remote.control_dir()
    assert os.stat(control).st_mode & 0o777 == 0o700
    # the remote command is one word list, quoted for the remote shell: a path with spaces or
    # quotes stays one argument
    assert argv[-1].startswith("exec ") and "--bridge" in argv[-1]


@pytest.mark.rootless
def test_a_developer_with_rootless_podman_builds_on_a_host(host: sshd_host.SshHost) -> None:
    """A normal user: their own key, known_hosts and podman connection, their rootless podman
    serving the "remote" side; the tests' install of this checkout (rootless_user.QPOD)."""
    from rootless_user import PREFIX, ensure_installed, make_user

    ensure_installed()
    user = make_user("qpodremote")
    # useradd leaves the password locked ("!"), and sshd without PAM refuses a locked account
    # even for a key: "*" is no password, not locked
    subprocess.run(["usermod", "-p", "*", user.name], check=True, capture_output=True)
    service = None
    try:
        ssh_dir = user.home / ".ssh"
        for d in (ssh_dir, user.home / ".config" / "containers", user.home / "rsock"):
            assert user.run("mkdir", "-p", "-m", "700", str(d)).returncode == 0
        assert user.run("rm", "-f", str(ssh_dir / "id"), str(ssh_dir / "id.pub")).returncode == 0
        assert user.run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh_dir / "id")).returncode == 0
        # sshd reads a user's keys as that user: theirs, in their home
        assert user.run("cp", str(ssh_dir / "id.pub"), str(ssh_dir / "authorized_keys")).returncode == 0
        known = (host.home / ".ssh" / "known_hosts").read_text()
        sock = user.home / "rsock" / "podman.sock"
        conf = (
            f"[engine]\n[engine.service_destinations]\n  [engine.service_destinations.{host.name}]\n"
            f'    uri = "ssh://{user.name}@127.0.0.1:{host.port}{sock}"\n    identity = "{ssh_dir / "id"}"\n'
        )
        for path, text in ((ssh_dir / "known_hosts", known), (user.home / ".config/containers/containers.conf", conf)):
            assert user.run("sh", "-c", 'cat > "$0"', str(path), input=text).returncode == 0
        # the build server's podman: the user's own, rootless
        service = subprocess.Popen(
            user.argv("podman", "system", "service", "--time=0", f"unix://{sock}"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(sock.exists, "the user's podman service")
        r = user.run(
            str(PREFIX / "bin" / "python"),
            "-c",
            "from qpod_engine.podman.local_images import build_busybox_image as b; print(b())",
        )
        assert r.returncode == 0, r.stderr
        image = r.stdout.strip()
        qenv = {"QPOD_CONFIG_DIR": str(user.home / "rcfg"), "QPOD_STATE_DIR": str(user.home / "rstate")}
        assert (
            user.run("rm", "-rf", str(user.home / "rcfg"), str(user.home / "rstate"), str(user.home / "far")).returncode
            == 0
        )
        repo = user.home / "far"
        assert user.run("git", "init", "-q", str(repo)).returncode == 0
        assert user.qpod("env", "add", "far", "--image", image, "--host", host.name, **qenv).returncode == 0
        assert user.qpod("init", "far", cwd=repo, **qenv).returncode == 0
        before = _sessions_logged(host)
        r = user.qpod("exec", "sh", "-c", "id -u; echo built > out; echo err >&2; exit 3", cwd=repo, **qenv)
        assert (r.returncode, r.stdout, r.stderr) == (3, f"{user.uid}\n", "err\n"), r
        assert (repo / "out").stat().st_uid == user.uid  # rootless keep-id there: the file is the user's
        log = host.log.read_text(errors="replace")
        assert _sessions_logged(host) > before and f"Accepted publickey for {user.name}" in log
        r = user.qpod("ps", **qenv)
        assert r.returncode == 0 and r.stdout.splitlines()[1].split()[-1] == host.name, r.stdout
    finally:
        if service is not None:
            os.killpg(service.pid, signal.SIGKILL)
            service.wait(timeout=30)
        user.run("podman", "rm", "-af", "-t", "0", timeout=120)
        user.stop_everything()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_the_dashboard_shows_stops_and_measures_a_container_on_a_host(
    remote_repo: Path, on_host: sshd_host.SshHost
) -> None:
    from qpod_engine.api import Engine
    from qpod_engine.config.containers import container_name
    from qpod_engine.podman import lifecycle as podman_backend
    from qpod_tui.app import make_app
    from qpod_tui.screens.dialogs import ConfirmScreen

    assert qexec("true", cwd=remote_repo).returncode == 0
    name = container_name("rbb", os.path.realpath(remote_repo))
    app = make_app(Engine(), view="containers", watch=False)
    async with app.run_test(size=(160, 40)) as pilot:
        view = app.view("containers")

        await wait_for(pilot, lambda: name in view.containers)
        assert view.containers[name].host == on_host.name
        row = dict(zip(view.COLUMNS, view.table.get_row(name), strict=True))
        assert str(row["Environment"]) == f"rbb @{on_host.name}"
        # its figures come from that host's podman
        cid = view.containers[name].id
        await wait_for(pilot, lambda: cid in view.stats)
        assert view.stats[cid].memory > 0 and on_host.name in podman_backend._clients
        view.table.move_cursor(row=view.table.get_row_index(name))
        await pilot.press("s")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await wait_for(pilot, lambda: view.containers[name].state in ("exited", "stopped"))
    r = qexec("echo", "started-again", cwd=remote_repo)  # the next command starts it there
    assert (r.returncode, r.stdout) == (0, b"started-again\n"), r.stderr
    assert ran_on(remote_repo) == f"{on_host.name}\n".encode()


def test_a_long_running_process_reaches_a_host_again_after_its_forward_dropped(
    remote_repo: Path, on_host: sshd_host.SshHost
) -> None:
    from qpod_engine.podman import lifecycle as podman_backend

    assert qexec("true", cwd=remote_repo).returncode == 0
    first = podman_backend.client(on_host.name)
    assert first.ping()
    on_host.drop_connections()  # the forward's ssh ends with its connection
    wait_until(lambda: not remote.forward_alive(on_host.name), "the forward to end")
    again = podman_backend.client(on_host.name)
    assert again is not first and again.ping()
    # the host's own service answers (through the new forward), not this machine's
    assert again.info()["host"]["remoteSocket"]["path"] == f"unix://{on_host.socket}"
