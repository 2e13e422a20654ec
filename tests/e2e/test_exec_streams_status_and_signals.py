"""qpod exec against real podman: cwd, stdin, stdout/stderr, exit status, signals, env, owner,
the log record, and the container's life (reused, recreated, stopped or removed behind qpod's
back)."""

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import container_processes, remove_containers_of, run_qpod, stop_service_on, wait_until
from tmux_driver import Tmux

from qpod_engine.log import cmdlog

pytestmark = pytest.mark.podman


def qpod_popen(*args: str, cwd: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "qpod_engine.cli", *args], cwd=cwd, **kw)


def test_cwd_maps_to_same_subdirectory(bound_repo: Path) -> None:
    r = run_qpod("exec", "pwd", cwd=bound_repo / "sub" / "dir")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(bound_repo / "sub" / "dir")


def test_runs_in_the_container_not_on_host(bound_repo: Path) -> None:
    r = run_qpod("exec", "cat", "/proc/self/cgroup", cwd=bound_repo)
    host = Path("/proc/self/cgroup").read_text()
    assert r.returncode == 0 and r.stdout != host
    r = run_qpod("exec", "sh", "-c", "echo $container", cwd=bound_repo)
    assert r.stdout.strip() == "podman"


def test_stdin_is_piped_without_tty(bound_repo: Path) -> None:
    r = run_qpod("exec", "cat", cwd=bound_repo, input="x\nsecond line\n")
    assert r.returncode == 0 and r.stdout == "x\nsecond line\n"


def test_stdout_and_stderr_stay_separate(bound_repo: Path) -> None:
    r = run_qpod("exec", "sh", "-c", "echo to-out; echo to-err >&2", cwd=bound_repo)
    assert r.stdout == "to-out\n" and r.stderr == "to-err\n"


@pytest.mark.parametrize(
    ("script", "status"),
    [
        ("exit 0", 0),
        ("exit 3", 3),
        ("exit 255", 255),
        ("kill -SEGV $$", -signal.SIGSEGV),
    ],
)
def test_exit_status_passes_through(bound_repo: Path, script: str, status: int) -> None:
    r = run_qpod("exec", "sh", "-c", script, cwd=bound_repo)
    assert r.returncode == status


def test_command_not_found_and_not_executable(bound_repo: Path) -> None:
    r = run_qpod("exec", "no-such-command-x", cwd=bound_repo)
    assert r.returncode == 127 and "no-such-command-x" in r.stderr
    (bound_repo / "noexec.sh").write_text("echo hi\n")
    r = run_qpod("exec", "./noexec.sh", cwd=bound_repo)
    assert r.returncode == 126


LOOP = 'trap "echo got-{sig}; exit 42" {sig}; echo ready; while :; do sleep 0.1; done'


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_reaches_command_without_tty(bound_repo: Path, sig: signal.Signals) -> None:
    name = sig.name[3:]
    p = qpod_popen(
        "exec",
        "sh",
        "-c",
        LOOP.format(sig=name),
        cwd=bound_repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert p.stdout.readline() == "ready\n"
    p.send_signal(sig)
    out, err = p.communicate(timeout=30)
    assert out == f"got-{name}\n", err
    assert p.returncode == 42


def test_signal_default_action_gives_128_plus_n(bound_repo: Path) -> None:
    p = qpod_popen(
        "exec",
        "sh",
        "-c",
        "echo ready; exec sleep 100",
        cwd=bound_repo,
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert p.stdout.readline() == "ready\n"
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=30)
    # the launcher dies of the same signal, as the command did: the shell sees 128+15
    assert p.returncode == -signal.SIGTERM


def _sleepers(root: Path, seconds: str = "") -> list[str]:
    """The ``sleep`` processes in the repository's container (its own pid namespace)."""
    return [cmd for _, cmd in container_processes(root) if cmd.split()[:1] == ["sleep"] and seconds in cmd]


def test_killing_the_client_stops_the_whole_command(bound_repo: Path) -> None:
    p = qpod_popen(
        "exec",
        "sh",
        "-c",
        "sleep 301 & sleep 302 & echo started; wait",
        cwd=bound_repo,
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert p.stdout.readline() == "started\n"
    assert len(_sleepers(bound_repo)) == 2
    p.kill()  # the client: no handler, no goodbye
    p.wait()
    wait_until(lambda: _sleepers(bound_repo) == [], "the command's processes in the container to end", 30)


def test_environment_passthrough_and_deny(bound_repo: Path) -> None:
    env = {
        "LANG": "C.UTF-8",
        "LC_TIME": "C",
        "SECRET": "s",
        "MAKEFLAGS": "-j2 -- X=1",
        "CFLAGS": "-g -O0",
        "PATH": os.environ["PATH"] + ":/host-only",
        "TMPDIR": "/host/tmp",
        "LD_PRELOAD": "",
        "QPOD_SHELL": "1",
        "QPOD_RULES": "/x",
    }
    r = run_qpod("exec", "env", cwd=bound_repo, env=env)
    assert r.returncode == 0, r.stderr
    seen = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    # the caller's environment by default, as toolbx gives it
    assert seen["LANG"] == "C.UTF-8" and seen["LC_TIME"] == "C" and seen["FIXED"] == "1" and seen["SECRET"] == "s"
    assert seen["MAKEFLAGS"] == "-j2 -- X=1" and seen["CFLAGS"] == "-g -O0"
    # but not what describes the host: the image's PATH, no host TMPDIR, never the loader's or qpod's
    assert "/host-only" not in seen["PATH"] and "TMPDIR" not in seen and "LD_PRELOAD" not in seen
    assert not [k for k in seen if k.startswith("QPOD_")]
    # deny wins; a host-specific variable named exactly in passthrough is passed
    envfile = Path(os.environ["QPOD_CONFIG_DIR"]) / "environments" / "bb.yaml"
    envfile.write_text(envfile.read_text() + "deny: [SECRET]\npassthrough: ['*', TMPDIR]\n")
    seen = dict(
        line.split("=", 1)
        for line in run_qpod("exec", "env", cwd=bound_repo, env=env).stdout.splitlines()
        if "=" in line
    )
    assert "SECRET" not in seen and seen["TMPDIR"] == "/host/tmp" and seen["CFLAGS"] == "-g -O0"


def test_files_belong_to_invoking_user_rootful(bound_repo: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("rootful case")
    os.chmod(bound_repo, 0o777)
    # the repository lies in root's private pytest dir, which the user cannot enter (natively neither):
    # share nothing, so the container shows the repository's own mount only
    assert run_qpod("env", "set", "bb", "share=").returncode == 0
    r = run_qpod(
        "exec", "sh", "-c", "touch made-by-build; id -u", cwd=bound_repo, env={"SUDO_UID": "4321", "SUDO_GID": "4322"}
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "4321"
    st = (bound_repo / "made-by-build").stat()
    assert (st.st_uid, st.st_gid) == (4321, 4322)


def test_log_record_written(bound_repo: Path) -> None:
    assert run_qpod("exec", "sh", "-c", "exit 4", cwd=bound_repo / "sub").returncode == 4
    recs = [r for r in cmdlog.read() if not cmdlog.is_start(r)]
    assert len(recs) == 1
    rec = recs[0]
    assert rec["repo"] == str(bound_repo) and rec["env"] == "bb" and rec["status"] == 4
    assert rec["cwd"] == str(bound_repo / "sub") and rec["argv"] == ["sh", "-c", "exit 4"]
    assert rec["branch"] == "master"  # make_repo's branch: the record says which branch was built
    assert rec["container"].startswith("qpod-bb-") and rec["duration"] > 0 and "qpod exec" in rec["reason"]
    out = run_qpod("log", "--json").stdout.splitlines()
    assert json.loads(out[-1])["status"] == 4
    # the warm path's record (the native-exec client writes it, not the CLI): the same fields
    prog = bound_repo / "sub" / "exit5.sh"
    prog.write_text("#!/bin/sh\nexit 5\n")
    prog.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("QPOD_SHELL")}
    shell = [sys.executable, "-m", "qpod_engine.cli.shell", "--shell", "/bin/sh", "-c", "./exit5.sh"]
    assert subprocess.run(shell, cwd=prog.parent, env=env, timeout=120).returncode == 5
    warm = [r for r in cmdlog.read() if not cmdlog.is_start(r)][-1]
    assert (warm["argv"], warm["status"], warm["branch"]) == (["./exit5.sh"], 5, "master"), warm


def _container_id(root: Path) -> str:
    ps = json.loads(run_qpod("ps", "--json").stdout)
    ids = [c["id"] for c in ps if c["repository"] == str(root) and c["state"] == "running"]
    assert len(ids) == 1, ps
    return ids[0]


def test_container_is_reused_and_recreated_on_config_change(bound_repo: Path) -> None:
    assert run_qpod("exec", "true", cwd=bound_repo).returncode == 0
    first = _container_id(bound_repo)
    assert run_qpod("exec", "true", cwd=bound_repo).returncode == 0
    assert _container_id(bound_repo) == first
    # routing-only change: same container
    assert (
        run_qpod(
            "env", "add", "bb", "--replace", "--image", "localhost/qpod-busybox:latest", "--env", "FIXED=2"
        ).returncode
        == 0
    )
    assert run_qpod("exec", "true", cwd=bound_repo).returncode == 0
    assert _container_id(bound_repo) == first
    # a mount changes the container: recreated
    assert (
        run_qpod(
            "env", "add", "bb", "--replace", "--image", "localhost/qpod-busybox:latest", "--mount", "/etc:/hostetc:ro"
        ).returncode
        == 0
    )
    r = run_qpod("exec", "ls", "/hostetc/hostname", cwd=bound_repo)
    assert r.returncode == 0, r.stderr
    assert _container_id(bound_repo) != first


def test_container_removed_or_stopped_behind_qpods_back(bound_repo: Path) -> None:
    assert run_qpod("exec", "true", cwd=bound_repo).returncode == 0
    name = json.loads(run_qpod("status", "--json", cwd=bound_repo).stdout)["container"]
    env = {**os.environ, "QPOD_OFF": "1"}
    subprocess.run(["podman", "stop", "-t", "0", name], check=True, capture_output=True, env=env)
    assert run_qpod("exec", "echo", "again", cwd=bound_repo).stdout == "again\n"
    subprocess.run(["podman", "rm", "-f", "-t", "0", name], check=True, capture_output=True, env=env)
    r = run_qpod("exec", "echo", "recreated", cwd=bound_repo)
    assert r.returncode == 0 and r.stdout == "recreated\n", r.stderr


def test_stop_and_ps(bound_repo: Path) -> None:
    assert run_qpod("exec", "true", cwd=bound_repo).returncode == 0
    assert "running" in run_qpod("ps").stdout
    r = run_qpod("stop", "bb")
    assert r.returncode == 0 and "stopped qpod-bb-" in r.stdout
    assert run_qpod("stop").returncode == 2


def test_unpullable_image_is_one_line_125(qpod_home: Path, make_repo) -> None:
    root = make_repo("r")
    assert run_qpod("env", "add", "gone", "--image", "127.0.0.1:5999/team/nope:1").returncode == 0
    assert run_qpod("init", "gone", cwd=root).returncode == 0
    r = run_qpod("exec", "true", cwd=root)
    assert r.returncode == 125
    lines = r.stderr.strip().splitlines()
    assert len(lines) <= 2 and lines[-1].startswith("qpod: cannot pull image 127.0.0.1:5999/team/nope:1: ")
    # nothing listens there: the hint says so (asked of the registry, not read from podman's words)
    assert "127.0.0.1:5999 does not answer (connection refused)" in lines[-1], lines[-1]


def test_podman_missing_is_one_line_125(bound_repo: Path, tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("sh", "git"):
        os.symlink(f"/usr/bin/{tool}" if tool == "git" else "/bin/sh", bindir / tool)
    r = run_qpod("exec", "true", cwd=bound_repo, env={"PATH": str(bindir)})
    assert r.returncode == 125
    assert r.stderr.strip() == "qpod: podman is not installed (apt-get install podman runc)"


def test_api_socket_started_on_demand(bound_repo: Path, tmp_path: Path) -> None:
    sock = tmp_path / "api" / "podman.sock"
    r = run_qpod("ps", "--json", env={"QPOD_PODMAN_SOCKET": str(sock)})
    assert r.returncode == 0, r.stderr
    assert sock.exists()
    stop_service_on(str(sock))


def test_outside_bound_repo_runs_on_host_untouched(qpod_home: Path, tmp_path: Path) -> None:
    r = run_qpod("exec", "cat", "/proc/self/cgroup", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == Path("/proc/self/cgroup").read_text()
    r = run_qpod("exec", "sh", "-c", "exit 7", cwd=tmp_path)
    assert r.returncode == 7
    assert list(cmdlog.read()) == []  # host runs are not redirected commands


def test_tty_and_ctrl_c_in_a_real_terminal(bound_repo: Path) -> None:
    env = {k: os.environ[k] for k in ("QPOD_CONFIG_DIR", "QPOD_STATE_DIR", "PATH")}
    t = Tmux("bash --norc --noprofile", env=env, cwd=str(bound_repo))
    try:
        # wait for each prompt before typing: podman -t reads type-ahead into the container
        t.type("PS1='P''S> '")
        t.wait_count("PS> ", 1)
        qpod = f"{sys.executable} -m qpod_engine.cli"
        # markers are split by quotes so that the typed command line itself never matches
        t.type(f'{qpod} exec sh -c \'test -t 0 && echo STDIN"-"TTY; test -t 1 && echo STDOUT"-"TTY\'')
        s = t.wait_count("PS> ", 2)
        assert "STDIN-TTY" in s and "STDOUT-TTY" in s
        t.type(f"{qpod} exec sh -c 'echo LONG\"-\"RUNNING; sleep 100'")
        t.wait_for("LONG-RUNNING")
        wait_until(lambda: _sleepers(bound_repo, "100"), "the command's sleep in the container")
        t.send("C-c")
        t.wait_count("PS> ", 3, timeout=20)
        # as natively, the command died of SIGINT and the shell sees 130
        t.type('echo status"="$?')
        t.wait_for("status=130", timeout=20)
        t.wait_count("PS> ", 4)
        # piped output: no TTY for stdout, the command still sees the terminal on stdin
        t.type(f'{qpod} exec sh -c \'test -t 1 || echo NO"-"TTY-OUT; test -t 0 && echo IN"-"TTY\' | cat')
        s = t.wait_count("PS> ", 5)
        assert "NO-TTY-OUT" in s and "IN-TTY" in s
    finally:
        t.kill()


def test_exec_env_override_in_unbound_repository(bound_repo: Path, make_repo) -> None:
    other = make_repo("unbound-" + bound_repo.name)
    try:
        r = run_qpod("exec", "--env", "bb", "sh", "-c", "echo $container; pwd", cwd=other)
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == ["podman", str(other)]
        r = run_qpod("exec", "--env", "nope", "true", cwd=other)
        assert r.returncode == 125 and "unknown environment 'nope' (known: bb)" in r.stderr
    finally:
        remove_containers_of(str(other))


def test_log_follow_shows_new_records(bound_repo: Path) -> None:
    p = qpod_popen("log", "-f", "--json", cwd=bound_repo, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    try:
        # the follower follows once a record appended now reaches it (not only as an old one)
        def follows() -> bool:
            cmdlog.append({"argv": ["probe"], "status": 0})
            return bool(select.select([p.stdout], [], [], 0.2)[0])

        wait_until(follows, "qpod log -f to follow the log")
        assert run_qpod("exec", "sh", "-c", "exit 6", cwd=bound_repo).returncode == 6
        rec = {"argv": ["probe"]}
        while rec["argv"] == ["probe"]:
            rec = json.loads(p.stdout.readline())
        if rec["status"] is None:  # the start record comes first
            assert rec["argv"] == ["sh", "-c", "exit 6"]
            rec = json.loads(p.stdout.readline())
        assert rec["argv"] == ["sh", "-c", "exit 6"] and rec["status"] == 6
    finally:
        p.terminate()
        p.wait(timeout=10)


def test_hung_podman_service_gives_the_prompt_back_on_ctrl_c(bound_repo: Path, tmp_path: Path) -> None:
    import socket
    import threading

    assert run_qpod("exec", "true", cwd=bound_repo).returncode == 0
    name = json.loads(run_qpod("status", "--json", cwd=bound_repo).stdout)["container"]
    # a stopped container: the launcher must ask the (silent) service to start it
    subprocess.run(["podman", "stop", "-t", "0", name], capture_output=True, env={**os.environ, "QPOD_OFF": "1"})
    sock_path = str(tmp_path / "hung.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)
    srv.listen(8)
    held = []
    stop = threading.Event()

    def accept_and_say_nothing() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept_and_say_nothing, daemon=True)
    t.start()
    try:
        env = {**os.environ, "QPOD_PODMAN_SOCKET": sock_path}
        p = qpod_popen("exec", "true", cwd=bound_repo, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until(lambda: held or p.poll() is not None, "the launcher to ask the silent service")
        assert p.poll() is None  # stuck on the silent service
        p.send_signal(signal.SIGINT)
        p.wait(timeout=20)  # a hang guard: Ctrl-C gives the prompt back
        assert p.returncode in (130, -signal.SIGINT)
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        srv.close()


def test_container_has_its_own_pid_namespace_with_the_agent_as_pid_1(bound_repo: Path) -> None:
    r = run_qpod("exec", "cat", "/proc/1/cmdline", cwd=bound_repo)
    assert r.returncode == 0 and r.stdout.split("\0")[0].endswith("/qpod-agent"), r.stdout
    # no host process is visible in the container
    r = run_qpod("exec", "sh", "-c", "ls /proc | grep -c '^[0-9]'", cwd=bound_repo)
    assert int(r.stdout) < 20
