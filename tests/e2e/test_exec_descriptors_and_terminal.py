"""Native exec: a redirected command gets the caller's own file descriptors, signals and terminal
(the agent in the container, the client on the host), so that it cannot be told from the native
one. Real podman, real terminals (tmux), qpod-shell where a shell types the command."""

import json
import os
import pwd
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import container_processes, remove_containers_of, run_qpod, wait_until
from tmux_driver import Tmux

pytestmark = pytest.mark.podman

QPOD = f"{sys.executable} -m qpod_engine.cli"


def env_file(name: str, image: str, **extra: object) -> None:
    """An environment written as a user would (YAML); the caller's variables pass by default."""
    import yaml

    data = {"image": image, **extra}
    d = Path(os.environ["QPOD_CONFIG_DIR"]) / "environments"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.yaml").write_text(yaml.safe_dump(data))


# a b c say where they ran: Debian 11 in the container, the host's Debian otherwise
MAKEFILE = """\
a b c:
\t@echo built-$@-on-debian-$$(cut -d. -f1 /etc/debian_version)
slow:
\t@echo slow-started; sleep 3; echo slow-finished
pause:
\t@echo pause-started; sleep 46.5; echo pause-finished
tree:
\t@$(MAKE) -s leaf1 & $(MAKE) -s leaf2 & wait
leaf1 leaf2:
\t@echo $@-started; sleep 41.5; echo $@-finished
jobs:
\t@$(MAKE) -j4 -s j1 j2 j3 j4
j1 j2 j3 j4:
\t@echo $@
show:
\t@echo var-$(VAR)
"""


@pytest.fixture
def deb_repo(qpod_home: Path, make_repo: Callable[..., Path], debian11_image: str) -> Iterator[Path]:
    root = make_repo("nx-" + uuid.uuid4().hex[:6], {"Makefile": MAKEFILE, "targets.txt": "a\nb\nc\n"})
    env_file("deb11", debian11_image)
    assert run_qpod("init", "deb11", cwd=root).returncode == 0
    yield root
    remove_containers_of(str(root))


def shell_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "SHELL": "/bin/bash",
        "TERM": "xterm",
        "LANG": "C.UTF-8",
        "QPOD_CONFIG_DIR": os.environ["QPOD_CONFIG_DIR"],
        "QPOD_STATE_DIR": os.environ["QPOD_STATE_DIR"],
    }


def qpod_shell_c(command: str, cwd: Path, tmp_path: Path, **kw: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "qpod_engine.cli.shell", "--shell", "/bin/bash", "-c", command],
        cwd=cwd,
        env=shell_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        **kw,
    )


def in_container(root: Path, pattern: str) -> list[str]:
    """Command lines of the container's processes matching ``pattern`` (read inside it)."""
    return [cmd for _, cmd in container_processes(root) if re.search(pattern, cmd)]


class Shell:
    """bash in qpod-shell, in tmux; each command ends with a marker the shell computes, so the
    screen holds it only once the command finished."""

    def __init__(self, cwd: Path, tmp_path: Path, width: int = 160, height: int = 48) -> None:
        env = shell_env(tmp_path)
        self.t = Tmux(
            f"{sys.executable} -m qpod_engine.cli.shell --shell /bin/bash",
            env=env,
            cwd=str(cwd),
            width=width,
            height=height,
        )
        self.n = 0
        self.t.wait_for("in qpod mode")
        self.t.type("PS1='P''S> '; set +o histexpand")
        self.t.wait_for("PS> ")

    def run(self, command: str, timeout: float = 120) -> str:
        self.n += 1
        self.t.type(f'{command}; echo "DONE-$((1000+{self.n}))-$?"')
        screen = self.t.wait_for(f"DONE-{1000 + self.n}-", timeout)
        return screen[screen.rfind(f"DONE-$((1000+{self.n}))") :]

    def status(self, out: str) -> int:
        m = re.search(rf"DONE-{1000 + self.n}-(\d+)", out)
        assert m, out
        return int(m.group(1))

    def close(self) -> None:
        self.t.kill()


@pytest.fixture
def tmux_ok() -> None:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")


# --- descriptors ----------------------------------------------------------------------------


def test_read_loop_feeding_make_builds_every_target(deb_repo: Path, tmp_path: Path) -> None:
    """podman exec -i read ahead the whole file: only the first target was built. Each make
    says where it ran (the container's Debian 11), so a loop that routed nothing fails."""
    r = qpod_shell_c("while read t; do make -s $t; done < targets.txt", deb_repo, tmp_path)
    assert r.stdout.split() == ["built-a-on-debian-11", "built-b-on-debian-11", "built-c-on-debian-11"], r.stderr
    # what the command leaves unread stays for the next reader
    r = qpod_shell_c("{ make -s a; cat; } < targets.txt", deb_repo, tmp_path)
    assert r.stdout.split() == ["built-a-on-debian-11", "a", "b", "c"], r.stderr


def test_big_stdin_through_qpod_exec_cat(bound_repo: Path, tmp_path: Path) -> None:
    big = tmp_path / "big"
    with open(big, "wb") as f:
        for _ in range(100):
            f.write(os.urandom(1 << 20))
    want = subprocess.run(["sha256sum", str(big)], capture_output=True, text=True).stdout.split()[0]
    p = subprocess.run(
        f"{QPOD} exec cat < {big} | sha256sum; echo ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        cwd=bound_repo,
        capture_output=True,
        text=True,
        timeout=300,
    )
    got, status = p.stdout.split()[0], p.stdout.split()[-1]
    assert (got, status) == (want, "0"), p.stderr
    # seq | qpod exec: the pipe is the command's own (podman's relay reset the connection)
    p = subprocess.run(
        f"seq 1 100000 | {QPOD} exec wc -l", shell=True, cwd=bound_repo, capture_output=True, text=True, timeout=120
    )
    assert p.stdout.strip() == "100000" and p.returncode == 0, p.stderr


def test_sigpipe_reaches_the_command(bound_repo: Path) -> None:
    p = subprocess.run(
        f"{QPOD} exec yes | head -3; echo status=${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        cwd=bound_repo,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.stdout.split() == ["y", "y", "y", "status=141"], p.stderr


def test_descriptors_beyond_stderr_are_handed_over(bound_repo: Path) -> None:
    p = subprocess.run(
        f"{QPOD} exec sh -c 'echo to-fd-5 >&5' 5>&1 >/dev/null",
        shell=True,
        cwd=bound_repo,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.stdout == "to-fd-5\n", p.stderr


def test_stderr_stays_separate_under_a_terminal(deb_repo: Path, tmp_path: Path, tmux_ok: None) -> None:
    sh = Shell(deb_repo, tmp_path)
    try:
        out = sh.run("make nosuchtarget 2> err.log")
        assert sh.status(out) == 2 and "No rule" not in out
        assert "No rule to make target 'nosuchtarget'" in (deb_repo / "err.log").read_text()
        out = sh.run("make nosuchtarget 2>/dev/null")
        assert sh.status(out) == 2 and "No rule" not in out
        out = sh.run("make -s a 2>/dev/null")
        assert "built-a-on-debian-11" in out
    finally:
        sh.close()


# --- terminal and job control -----------------------------------------------------------------


def test_ctrl_z_jobs_fg_and_type_ahead(deb_repo: Path, tmp_path: Path, tmux_ok: None) -> None:
    sh = Shell(deb_repo, tmp_path)
    t = sh.t
    try:
        # type-ahead: keys typed while the build runs are the shell's afterwards
        t.type("make -s slow")
        t.wait_for("slow-started")
        t.type('echo AHEAD-""TYPED')  # the screen shows the typed line with the quotes
        t.wait_for("AHEAD-TYPED\n", 60)
        assert "slow-finished" in t.screen()
        # Ctrl-Z stops the build (natively: the job is stopped, jobs lists it, fg resumes it)
        t.type("make -s pause")
        t.wait_for("pause-started")
        wait_until(lambda: in_container(deb_repo, r"^sleep 46\.5"), "the build sleeping")
        t.send("C-z")
        t.wait_for("Stopped")
        out = sh.run("jobs")
        assert "Stopped" in out and "make -s pause" in out
        assert in_container(deb_repo, r"^sleep 46\.5"), "the build went away while stopped"
        t.type("fg")
        t.wait_for("make -s pause\n")  # bash names the job it resumes
        t.send("C-c")
        wait_until(lambda: not in_container(deb_repo, r"^sleep 46\.5"), "the build gone after fg, Ctrl-C")
        out = sh.run("true")
        assert sh.status(out) == 0 and "pause-finished" not in out
    finally:
        sh.close()


def test_ctrl_c_reaches_the_whole_recursive_build(deb_repo: Path, tmp_path: Path, tmux_ok: None) -> None:
    sh = Shell(deb_repo, tmp_path)
    t = sh.t
    try:
        t.type("make -s tree | tee log")
        t.wait_for("leaf2-started")
        wait_until(lambda: len(in_container(deb_repo, r"^sleep 41\.5")) == 2, "both leaves sleeping")
        t.send("C-c")
        wait_until(lambda: not in_container(deb_repo, r"^sleep 41\.5|make"), "the build gone")
        t.wait_for("PS> ", 30)
        assert "leaf1-finished" not in t.screen() and "leaf2-finished" not in t.screen()
    finally:
        sh.close()


def test_closing_the_terminal_ends_the_build(deb_repo: Path, tmp_path: Path, tmux_ok: None) -> None:
    sh = Shell(deb_repo, tmp_path)
    try:
        sh.t.type("make -s tree")
        sh.t.wait_for("leaf2-started")
        wait_until(lambda: len(in_container(deb_repo, r"^sleep 41\.5")) == 2, "both leaves sleeping")
    finally:
        sh.close()  # SIGHUP to the terminal's jobs
    wait_until(lambda: not in_container(deb_repo, r"^sleep 41\.5|make"), "the build gone after SIGHUP")


def test_background_job_of_a_script_keeps_sigint_ignored(bound_repo: Path) -> None:
    """sh starts 'cmd &' with SIGINT and SIGQUIT ignored; the command must start that way too."""
    script = "{} grep SigIgn /proc/self/status & wait"
    native = subprocess.run(["sh", "-c", script.format("")], capture_output=True, text=True).stdout.split()[1]
    r = subprocess.run(
        ["sh", "-c", script.format(f"{QPOD} exec")], cwd=bound_repo, capture_output=True, text=True, timeout=60
    )
    assert r.stdout.split()[1] == native and int(native, 16) & (1 << (signal.SIGINT - 1)), (native, r.stdout)


def test_jobserver_crosses_into_the_container(deb_repo: Path, tmp_path: Path) -> None:
    """A host make -j4 whose recipe runs a sub-make in a bound repository: the sub-make is
    redirected and uses the parent's jobserver (no 'jobserver unavailable: using -j1')."""
    outer = tmp_path / "outer"
    outer.mkdir()
    (outer / "Makefile").write_text(f"all:\n\t+cd {deb_repo} && $(MAKE) -s j1 j2 j3 j4 show\n")
    r = qpod_shell_c("make -j4 -s VAR=from-the-host", outer, tmp_path)
    assert r.returncode == 0, r.stderr
    # make's command-line variables reach the redirected sub-make too (through MAKEFLAGS)
    assert sorted(r.stdout.split()) == ["j1", "j2", "j3", "j4", "var-from-the-host"], r.stdout
    assert "jobserver" not in r.stderr, r.stderr
    recs = json.loads("[" + ",".join(run_qpod("log", "--json").stdout.splitlines()) + "]")
    assert [rec["argv"][:2] for rec in recs] == [["make", "-s"]]  # the sub-make, and only it


def test_interactive_bash_with_job_control(deb_repo: Path, tmp_path: Path, tmux_ok: None) -> None:
    t = Tmux(f"{QPOD} exec bash --norc --noprofile", env=shell_env(tmp_path), cwd=str(deb_repo))
    try:
        t.wait_for("bash")
        t.type("PS1='IN''BASH$ '")
        t.wait_for("INBASH$ ")
        t.type("sleep 43.5 &")
        t.wait_for("[1] ")
        t.type("jobs")
        t.wait_for("Running")
        t.type("kill %1; tty; exit 7")
        t.wait_dead()
        assert "/dev/pts/" in t.screen() and "no job control" not in t.screen()
    finally:
        t.kill()


def test_dev_tty_prompt(bound_repo: Path, tmp_path: Path, tmux_ok: None) -> None:
    t = Tmux("bash --norc --noprofile", env=shell_env(tmp_path), cwd=str(bound_repo))
    try:
        t.type("PS1='P''S> '")
        t.wait_for("PS> ")
        t.type(f'{QPOD} exec sh -c \'printf "na""me? " > /dev/tty; read x < /dev/tty; echo got=$x\' | cat')
        t.wait_for("name? ")
        t.type("bob")
        t.wait_for("got=bob")
        t.wait_count("PS> ", 2)
    finally:
        t.kill()


def test_window_resize_reaches_the_command(bound_repo: Path, tmp_path: Path, tmux_ok: None) -> None:
    t = Tmux("bash --norc --noprofile", env=shell_env(tmp_path), cwd=str(bound_repo), width=100, height=30)
    try:
        t.type("PS1='P''S> '")
        t.wait_for("PS> ")
        # the caller's descriptors: SIGWINCH is forwarded to the command's group
        t.type(f'{QPOD} exec sh -c \'trap "echo WIN""CH" WINCH; echo READY; while :; do sleep 0.1; done\'')
        t.wait_for("READY")
        subprocess.run(["tmux", "resize-window", "-t", t.name, "-x", "90", "-y", "25"], check=True)
        t.wait_for("WINCH")
        t.send("C-c")
        t.wait_count("PS> ", 2)
        # a terminal-owning program: its pty follows the host terminal's size
        t.type(f"{QPOD} exec sh")
        t.wait_for("# ")
        # the tmux driver exports COLUMNS and LINES (bash keeps them current and passes them on,
        # as it would natively), and busybox's stty prefers them to the terminal: drop them
        t.type("unset COLUMNS LINES; stty size")
        t.wait_for("25 90")
        subprocess.run(["tmux", "resize-window", "-t", t.name, "-x", "80", "-y", "20"], check=True)
        # tmux resizes asynchronously: ask until the pty reports the new size

        def new_size_seen() -> bool:
            t.type("stty size")
            return "20 80" in t.screen()

        wait_until(new_size_seen, t.screen, 30, interval=0.3)
        t.type("exit")
        t.wait_count("PS> ", 3)
    finally:
        t.kill()


def test_gdb_ctrl_c_interrupts_the_inferior(deb_repo: Path, tmp_path: Path, tmux_ok: None) -> None:
    has_gdb = run_qpod("exec", "sh", "-c", "command -v gdb", cwd=deb_repo)
    if has_gdb.returncode != 0:
        pytest.skip("the Debian 11 image has no gdb")
    t = Tmux(f"{QPOD} exec gdb -q -nx --args sleep 44.5", env=shell_env(tmp_path), cwd=str(deb_repo))
    try:
        t.wait_for("(gdb)")
        t.type("run")
        wait_until(lambda: in_container(deb_repo, r"^(/bin/|/usr/bin/)?sleep 44\.5"), "the inferior running")
        t.send("C-c")
        t.wait_for("SIGINT")
        t.type("kill")
        t.wait_for("(y or n)")
        t.type("y")
        t.wait_for("killed]")
        t.type("quit")
        t.wait_dead()
    finally:
        t.kill()


# --- the agent's boundary ---------------------------------------------------------------------


@pytest.mark.rootless  # knocks as nobody
def test_agent_socket_is_private_and_refuses_another_uid(bound_repo: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to act as a second user")
    assert run_qpod("exec", "true", cwd=bound_repo).returncode == 0
    name = json.loads(run_qpod("status", "--json", cwd=bound_repo).stdout)["container"]
    d = Path(os.environ["QPOD_STATE_DIR"]) / "agents" / name
    assert (d.stat().st_mode & 0o777) == 0o700
    # open the way (as a careless chmod would) and knock as nobody: the agent checks the peer
    nobody = pwd.getpwnam("nobody")
    probe = (
        "import socket,struct,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); d=s.recv(8);"
        "print(*struct.unpack('Ii', d) if len(d)==8 else ['closed'])"
    )
    os.chmod(d, 0o755)
    os.chmod(d / "agent.sock", 0o777)
    dfd = os.open(d, os.O_PATH)  # handed to the other user: the way in, past private parents
    try:
        r = subprocess.run(
            [
                "setpriv",
                f"--reuid={nobody.pw_uid}",
                f"--regid={nobody.pw_gid}",
                "--clear-groups",
                sys.executable,
                "-S",
                "-c",
                probe,
                f"/proc/self/fd/{dfd}/agent.sock",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            pass_fds=(dfd,),
        )
    finally:
        os.close(dfd)
    assert r.stdout.split() == ["7", "13"], (r.stdout, r.stderr)  # QP_REFUSED, EACCES


def test_running_command_has_a_start_record(bound_repo: Path) -> None:
    p = subprocess.Popen(
        [*QPOD.split(), "exec", "sh", "-c", "echo up; exec sleep 45.5"],
        cwd=bound_repo,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout.readline() == "up\n"
        recs = [json.loads(x) for x in run_qpod("log", "--json").stdout.splitlines()]
        assert recs and recs[-1]["status"] is None and recs[-1]["state"] == "running"
        assert recs[-1]["argv"] == ["sh", "-c", "echo up; exec sleep 45.5"]
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
    recs = [json.loads(x) for x in run_qpod("log", "--json").stdout.splitlines()]
    assert len(recs) == 1 and recs[0]["status"] == 128 + signal.SIGTERM


def test_eighty_parallel_commands_lose_no_output(bound_repo: Path, tmp_path: Path) -> None:
    (bound_repo / "say.sh").write_text("#!/bin/sh\necho said-$1\n")
    (bound_repo / "say.sh").chmod(0o755)
    script = "for i in $(seq 1 80); do ./say.sh $i > out.$i & done; wait"
    r = qpod_shell_c(script, bound_repo, tmp_path)
    assert r.returncode == 0, r.stderr
    missing = [i for i in range(1, 81) if (bound_repo / f"out.{i}").read_text() != f"said-{i}\n"]
    assert missing == [], r.stderr
    recs = [json.loads(x) for x in run_qpod("log", "-n", "1000", "--json").stdout.splitlines()]
    assert len(recs) == 80 and all(rec["status"] == 0 for rec in recs)


def test_missing_command_in_the_image_is_one_line_127(bound_repo: Path) -> None:
    r = run_qpod("exec", "waf", "configure", cwd=bound_repo)
    assert r.returncode == 127
    assert r.stderr == "qpod: waf: not found in environment bb (image localhost/qpod-busybox:latest)\n"


def test_protocol_garbage_is_refused_without_running_anything(bound_repo: Path) -> None:
    assert run_qpod("exec", "true", cwd=bound_repo).returncode == 0
    name = json.loads(run_qpod("status", "--json", cwd=bound_repo).stdout)["container"]
    d = Path(os.environ["QPOD_STATE_DIR"]) / "agents" / name
    fd = os.open(d, os.O_PATH)
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(f"/proc/self/fd/{fd}/agent.sock")
        s.sendall(struct.pack("IIII", 0x51504F44, 1, 1 << 30, 0))
        assert struct.unpack("Ii", s.recv(8)) == (7, 71)  # QP_REFUSED, EPROTO
        s.close()
    finally:
        os.close(fd)
    assert run_qpod("exec", "echo", "still-fine", cwd=bound_repo).stdout == "still-fine\n"


def test_agent_that_cannot_run_falls_back_to_podman_exec(
    qpod_home: Path, make_repo: Callable[..., Path], busybox_image: str, tmp_path: Path
) -> None:
    """An environment whose seccomp profile forbids listen(): the agent cannot serve, so the
    container is made again with podman exec as the transport, and commands still run."""
    profile = tmp_path / "no-listen.json"
    profile.write_text(
        json.dumps(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["listen"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
            }
        )
    )
    root = make_repo("locked-" + uuid.uuid4().hex[:6])
    env_file("locked", busybox_image, seccomp=str(profile))
    assert run_qpod("init", "locked", cwd=root).returncode == 0
    try:
        r = run_qpod("exec", "sh", "-c", "echo out; echo err >&2; exit 3", cwd=root)
        assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
        ps = [c for c in json.loads(run_qpod("ps", "--json").stdout) if c["repository"] == str(root)]
        assert [c["transport"] for c in ps] == ["exec"]
        r = run_qpod("exec", "sh", "-c", "read x; echo got-$x", cwd=root, input="piped\n")
        assert r.stdout == "got-piped\n"
        recs = [json.loads(x) for x in run_qpod("log", "--json").stdout.splitlines()]
        assert [(rec["status"], rec["branch"]) for rec in recs] == [(3, "master"), (0, "master")]  # this writer's too
        doctor = run_qpod("doctor").stdout
        assert "uses the podman exec fallback (qpod-agent: listen: Operation not permitted)" in doctor, doctor
    finally:
        remove_containers_of(str(root))


def test_workdir_root_maps_cwd_and_programs_and_the_umask_is_kept(
    qpod_home: Path, make_repo: Callable[..., Path], busybox_image: str
) -> None:
    root = make_repo("wr-" + uuid.uuid4().hex[:6], {"sub/dir/tool.sh": "#!/bin/sh\necho tool-in-$(pwd)\n"})
    (root / "sub/dir/tool.sh").chmod(0o755)
    env_file("wr", busybox_image, workdir_root="/qpod", share=[])  # /tmp unshared: root.parent is not visible
    assert run_qpod("init", "wr", cwd=root).returncode == 0
    try:
        r = run_qpod("exec", "pwd", cwd=root / "sub")
        assert (r.returncode, r.stdout) == (0, "/qpod/sub\n"), r.stderr
        r = subprocess.run(
            f"{QPOD} exec {root}/sub/dir/tool.sh",
            shell=True,
            cwd=root / "sub",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.stdout == "tool-in-/qpod/sub\n", r.stderr
        r = subprocess.run(
            f"umask 027; {QPOD} exec sh -c 'umask; touch made'",
            shell=True,
            cwd=root,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.stdout.strip() == "0027" and (root / "made").stat().st_mode & 0o777 == 0o640, r.stderr
        # the repository's program started from outside it: that cwd does not exist in the container
        r = run_qpod("exec", str(root / "sub/dir/tool.sh"), cwd=root.parent)
        assert r.returncode == 125 and "not visible in the container of environment 'wr'" in r.stderr
    finally:
        remove_containers_of(str(root))


def test_messages_show_hostile_names_literally(bound_repo: Path) -> None:
    r = run_qpod("exec", "nosuch\x1b]0;pwned\x07\nfake", cwd=bound_repo)
    assert r.returncode == 127
    assert r.stderr == (
        "qpod: nosuch\\x1b]0;pwned\\x07\\nfake: not found in environment bb (image localhost/qpod-busybox:latest)\n"
    )
