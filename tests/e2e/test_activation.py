"""qpod activate: with no qpod-shell typed, a new user's plain terminals (bash, zsh, fish login
shells in tmux, as a terminal tab or ssh gives them) and the programs of their desktop session
(the environment systemd's user environment generators produce for them, run as systemd runs
them) build in the repository's container; after qpod deactivate they build on the host again;
with the library moved away (qpod moved or removed) they start with no ld.so message.

The user runs the tests' install of this checkout (setup.sh, which also installs the generator),
with the Debian 11 image copied into its own podman storage: gcc 10 there, gcc 12 on the host."""

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import parse_generator_output
from rootless_user import PREFIX, User, ensure_installed, make_user, remove_user
from tmux_driver import Tmux

from qpod_engine.routing import preload_lib

pytestmark = [pytest.mark.podman, pytest.mark.rootless, pytest.mark.demo]

USER = "qpodact"
GENERATOR_DIRS = (  # systemd.environment-generator(7), in the order systemd prefers a name
    "/run/systemd/user-environment-generators",
    "/etc/systemd/user-environment-generators",
    "/usr/local/lib/systemd/user-environment-generators",
    "/usr/lib/systemd/user-environment-generators",
)
MAKEFILE = 'version:\n\t@echo "compiler: $$(gcc -dumpfullversion)"\n'
SHELLS = {"bash": "/bin/bash", "zsh": "/usr/bin/zsh", "fish": "/usr/bin/fish"}


@pytest.fixture(scope="module")
def user(debian11_image: str) -> Iterator[User]:
    ensure_installed()
    u = make_user(USER)
    # the image root built, copied into the user's own (rootless) storage
    tar = u.home / "debian11.tar"
    env = {**os.environ, "QPOD_OFF": "1"}
    r = subprocess.run(["podman", "save", "-o", str(tar), debian11_image], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    os.chown(tar, u.uid, u.gid)
    r = u.run("podman", "load", "-i", str(tar), timeout=900)
    assert r.returncode == 0, r.stderr
    tar.unlink()
    repo = u.home / "proj"
    assert u.run("git", "init", "-q", str(repo)).returncode == 0
    (repo / "Makefile").write_text(MAKEFILE)
    os.chown(repo / "Makefile", u.uid, u.gid)
    assert u.qpod("env", "add", "d11", "--image", debian11_image).returncode == 0
    r = u.qpod("init", "d11", cwd=repo)
    assert r.returncode == 0, r.stderr
    yield u
    remove_user(u)


@pytest.fixture
def activated(user: User) -> Iterator[User]:
    r = user.qpod("activate")
    assert r.returncode == 0, r.stdout + r.stderr
    yield user
    user.qpod("deactivate")


def login_terminal(user: User, shell: str = "bash") -> Tmux:
    """A terminal tab as a person opens it: a login shell of the user (su -, as ssh or a console
    gives one), nothing typed before it but what is asked."""
    t = Tmux(f"su - {user.name} -s {SHELLS[shell]}", width=200)
    t.type("echo READY-$((6*7))" if shell != "fish" else "echo READY-(math 6 \\* 7)")
    t.send("Enter")
    t.wait_for("READY-42", timeout=120)
    return t


def run_in(t: Tmux, command: str, done: str) -> str:
    t.type(f"{command}; echo {done}")
    t.send("Enter")
    return t.wait_for_any((f"\n{done}",), timeout=300)


def test_a_plain_login_shell_builds_in_the_container_then_on_the_host_after_deactivate(user: User) -> None:
    r = user.qpod("activate")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "hooked bash" in r.stdout, r.stdout
    st = user.qpod("status", cwd=user.home / "proj")
    assert "activation:   on: new terminals (bash" in st.stdout, st.stdout
    t = login_terminal(user)
    try:
        screen = run_in(t, "cd ~/proj && make version", "END1")
        assert "compiler: 10.2.1" in screen, screen
        # a shell started inside it carries the library once: never nested twice
        screen = run_in(t, "bash -i -c 'echo \"n=$(echo $LD_PRELOAD | grep -o libqpod_preload.so | wc -l)\"'", "END2")
        assert "n=1" in screen, screen
        # the hook replaced the login shell (exec), it did not start a second one under it
        screen = run_in(t, 'echo "parent=$(ps -o comm= -p $PPID)"', "END3")
        assert "parent=su" in screen, screen
    finally:
        t.kill()
    r = user.qpod("deactivate")
    assert r.returncode == 0 and "activation is off" in r.stdout, r.stdout + r.stderr
    assert "qpod activate" not in (user.home / ".bashrc").read_text()
    assert "qpod activate" not in (user.home / ".profile").read_text()
    t = login_terminal(user)
    try:
        screen = run_in(t, "cd ~/proj && make version", "END4")
        assert "compiler: 12." in screen, screen
    finally:
        t.kill()


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_login_shells_build_in_the_container(activated: User, shell: str) -> None:
    t = login_terminal(activated, shell)
    try:
        screen = run_in(t, "cd ~/proj; and make version" if shell == "fish" else "cd ~/proj && make version", "END")
        assert "compiler: 10.2.1" in screen, screen
    finally:
        t.kill()


def session_environment(user: User) -> tuple[dict[str, str], str]:
    """The environment the user's systemd manager gives the session's programs: every user
    environment generator, by name across the directories (the first directory wins a name), run
    as the user in turn, each seeing what the ones before it set. Returns it and their stderr."""
    found: dict[str, str] = {}
    for d in GENERATOR_DIRS:
        if os.path.isdir(d):
            for name in os.listdir(d):
                found.setdefault(name, os.path.join(d, name))
    env = {"HOME": str(user.home), "USER": user.name, "LOGNAME": user.name, "SHELL": "/bin/bash",
           "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}  # fmt: skip
    errors = ""
    for name in sorted(found):
        path = found[name]
        if not os.access(path, os.X_OK) or os.path.isdir(path):
            continue
        r = subprocess.run(["runuser", "-u", user.name, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()), path],
                           capture_output=True, text=True, timeout=60, cwd="/")  # fmt: skip
        errors += r.stderr
        if r.returncode == 0:
            env.update(parse_generator_output(r.stdout))
    return env, errors


def run_as_session_program(user: User, env: dict[str, str], *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", user.name, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv],
                          capture_output=True, text=True, timeout=600, cwd=cwd)  # fmt: skip


def vim_make(user: User, env: dict[str, str]) -> str:
    """vim's :make in the repository, its quickfix list written out: what the editor saw."""
    out = user.home / "proj" / "qf.txt"
    out.unlink(missing_ok=True)
    r = run_as_session_program(
        user, env, "vim", "-Nu", "NONE", "-i", "NONE", "-es",
        "-c", "set makeprg=make\\ version", "-c", "silent make",
        "-c", "call writefile(map(getqflist(), 'v:val.text'), 'qf.txt')", "-c", "qa!",
        cwd=user.home / "proj",
    )  # fmt: skip
    assert out.exists(), r.stdout + r.stderr
    return out.read_text()


def test_a_desktop_program_from_the_session_environment_builds_in_the_container(user: User) -> None:
    assert shutil.which("vim"), "setup.sh --test installs vim"
    gen = "/usr/local/lib/systemd/user-environment-generators/60-qpod"
    assert os.access(gen, os.X_OK), "setup.sh installs the generator"
    env, errors = session_environment(user)
    assert "LD_PRELOAD" not in env and errors == "", (env, errors)  # not activated: nothing
    assert user.qpod("activate").returncode == 0
    try:
        env, errors = session_environment(user)
        assert errors == "", errors
        # through a literal $LIB (the loader expands it; an environment.d file would have made it
        # empty) where 32-bit programs can run, else the library's own path
        ours = env["LD_PRELOAD"].split(":")[0]
        assert ours.startswith(str(PREFIX)) and ours.endswith("/libqpod_preload.so"), env
        assert ("/$LIB/" in ours) == preload_lib.other_class_programs_run(), env
        assert "compiler: 10.2.1" in vim_make(user, env)
    finally:
        assert user.qpod("deactivate").returncode == 0
    env, _ = session_environment(user)
    assert "LD_PRELOAD" not in env, env
    assert "compiler: 12." in vim_make(user, env)


def test_with_the_library_moved_away_nothing_prints_an_ld_so_line(activated: User) -> None:
    lib_dir = next(PREFIX.glob("lib/python3*/site-packages/qpod_engine/_lib"))
    moved = lib_dir.with_name("_lib.moved")
    env_before, _ = session_environment(activated)
    os.rename(lib_dir, moved)
    try:
        # the session: the generator says nothing once the library is gone
        env, errors = session_environment(activated)
        assert "LD_PRELOAD" not in env and errors == "", (env, errors)
        r = run_as_session_program(activated, env, "sh", "-c", "echo started", cwd=activated.home)
        assert (r.returncode, r.stdout, r.stderr) == (0, "started\n", ""), r
        # a terminal: its hook finds no library and adds none
        t = login_terminal(activated)
        try:
            screen = run_in(t, 'echo "ldp=[$LD_PRELOAD]"; ls / >/dev/null', "END")
            assert "ldp=[]" in screen and "cannot be preloaded" not in screen, screen
        finally:
            t.kill()
    finally:
        os.rename(moved, lib_dir)
    assert "LD_PRELOAD" in env_before


def test_activation_is_said_by_status_and_doctor_and_lost_lines_are_named(activated: User) -> None:
    r = activated.qpod("status")
    assert "activation: on: new terminals (bash" in r.stdout, r.stdout
    # a user who edited the line out of ~/.bashrc: doctor says so
    bashrc = activated.home / ".bashrc"
    bashrc.write_text("".join(ln for ln in bashrc.read_text().splitlines(True) if "qpod activate" not in ln))
    r = activated.qpod("doctor")
    lines = [ln for ln in r.stdout.splitlines() if "activation" in ln]
    assert r.returncode == 1, r.stdout
    assert any(ln.startswith("FAIL activation: bash") and ".bashrc" in ln for ln in lines), r.stdout
    assert any(ln.startswith("ok   activation: bash") and ".profile" in ln for ln in lines), r.stdout
    assert any(ln.startswith("ok   activation: desktop programs reached") for ln in lines), r.stdout
    assert activated.qpod("activate").returncode == 0
    assert "qpod activate" in bashrc.read_text().splitlines()[0]
