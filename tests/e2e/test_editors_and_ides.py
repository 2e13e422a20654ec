"""Editors and IDEs in an activated session: a program of the desktop session or of an
interactive shell carries the preload library in its environment, is not a shell of qpod's,
and what it starts in a bound repository (vim's :make, Termdebug's gdb, Emacs' compile and gud,
a language server, an IDE's build task spawned from its threads) is the environment's: Debian
11's make, gcc 10, gdb 10, glibc 2.31 headers and clangd 11, where the host has Debian 12's."""

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import (
    build_test_image,
    container_processes,
    parse_generator_output,
    remove_containers_of,
    run_qpod,
    wait_until,
)
from tmux_driver import Tmux

from qpod_engine.base.paths import PACKAGE_DIR

GENERATOR = Path(PACKAGE_DIR) / "activation" / "environment_generator.sh"

pytestmark = [pytest.mark.podman, pytest.mark.demo]


def session_environment(base: dict[str, str]) -> dict[str, str]:
    """The environment an activated desktop-session program carries: ``qpod activate`` run in
    ``base`` (its own home: the user's startup files are not touched), then qpod's systemd user
    environment generator run as systemd runs it, its output read as systemd reads it."""
    r = subprocess.run([sys.executable, "-I", "-m", "qpod_engine.cli", "activate"], env=base,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    gen = subprocess.run([str(GENERATOR)], env=base, capture_output=True, text=True, timeout=60, cwd="/")
    assert gen.returncode == 0 and gen.stderr == "", gen.stderr
    env = {**base, **parse_generator_output(gen.stdout)}
    assert "libqpod_preload.so" in env.get("LD_PRELOAD", ""), gen.stdout
    return env


@pytest.fixture
def activated(qpod_home: Path, tmp_path: Path) -> dict[str, str]:
    """The session environment over the test run's own (no library, no qpod-shell of its own)."""
    base = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith(("QPOD_SHELL", "QPOD_RULES"))}
    home = tmp_path / "home"
    home.mkdir()
    base.update({"TERM": "xterm", "LANG": "C.UTF-8", "HOME": str(home)})
    base.pop("LC_ALL", None)
    return session_environment(base)


@pytest.fixture
def bind_debian11(
    qpod_home: Path, make_repo: Callable[..., Path], debian11_image: str
) -> Iterator[Callable[[str, dict[str, str]], Path]]:
    """Repositories bound to the Debian 11 environment 'deb11'; their containers go afterwards."""
    assert run_qpod("env", "add", "deb11", "--image", debian11_image).returncode == 0
    roots: list[Path] = []

    def bind(name: str, files: dict[str, str]) -> Path:
        root = make_repo(f"{name}-{uuid.uuid4().hex[:6]}", files)
        r = run_qpod("init", "deb11", cwd=root)
        assert r.returncode == 0, r.stderr
        roots.append(root)
        return root

    yield bind
    for root in roots:
        remove_containers_of(str(root))


def comment_of(binary: Path) -> str:
    return " ".join(s.decode() for s in binary.read_bytes().split(b"\0") if s.startswith(b"GCC: ("))


def needs(*programs: str) -> None:
    for program in programs:
        if shutil.which(program) is None:
            pytest.skip(f"{program} is not installed (scripts/setup.sh --test installs it)")


# ---- building from the editor: vim's :make, Emacs' M-x compile ---------------------------------

# line 3 is an error for gcc 10 only, line 5 for every gcc: the list of errors says which compiler
BAD_C = """\
/* the environment's gcc 10 rejects line 3; every gcc rejects line 5 */
#if __GNUC__ == 10
#error rejected-by-gcc-10
#endif
int broken(void) { return undeclared_name; }
"""
BUILD_MAKEFILE = """\
all: prog bad.o
prog: prog.c
\tgcc -o prog prog.c
\t@echo "built-by-gcc-$$(gcc -dumpfullversion)-on-debian-$$(cut -d. -f1 /etc/debian_version)"
bad.o: bad.c
\tgcc -c bad.c
"""
BUILD_REPO = {"Makefile": BUILD_MAKEFILE, "prog.c": "int main(void) { return 0; }\n", "bad.c": BAD_C}


def test_vim_make_builds_in_the_container_and_lists_the_compilers_errors(
    bind_debian11: Callable[[str, dict[str, str]], Path], activated: dict[str, str], tmp_path: Path
) -> None:
    """:make runs 'make' through vim's shell: the container's make and gcc 10 build, and the
    quickfix list holds gcc 10's errors with their file and line."""
    needs("vim")
    root = bind_debian11("vim-make", BUILD_REPO)
    listing = tmp_path / "quickfix"
    entry = '{_, e -> bufname(e.bufnr) .. "|" .. e.lnum .. "|" .. e.valid .. "|" .. e.text}'
    r = subprocess.run(
        ["vim", "-Nu", "NONE", "-i", "NONE", "-es", "-c", "silent make!",
         "-c", f"call writefile(map(getqflist(), {entry}), '{listing}')", "-c", "qa!"],
        cwd=root, env=activated, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, (r.stdout, r.stderr)
    rows = [line.split("|", 3) for line in listing.read_text().splitlines()]
    errors = [(f, int(n), text.strip()) for f, n, valid, text in rows if valid == "1"]
    assert ("bad.c", 3, "error: #error rejected-by-gcc-10") in errors, rows  # gcc 12 never says it
    assert any(f == "bad.c" and n == 5 and "undeclared_name" in text for f, n, text in errors), rows
    made = [text for _, _, valid, text in rows if valid == "0"]
    assert "built-by-gcc-10.2.1-on-debian-11" in made, made
    assert "GCC: (Debian 10." in comment_of(root / "prog"), comment_of(root / "prog")


# Emacs' interactive compile sets TERM=dumb for the build; in batch it keeps the caller's, and
# gcc would colour its messages (natively too), which compilation-mode does not parse
COMPILE_EL = """\
(require 'compile)
(setq compilation-environment (list "TERM=dumb"))
(let ((buf (compile "make -k")))
  (while (get-buffer-process buf) (accept-process-output nil 0.1))
  (with-current-buffer buf (write-region (point-min) (point-max) "{out}"))
  (let ((errors '()) (next-error-last-buffer buf))
    (with-current-buffer buf (goto-char (point-min)))
    (condition-case nil
        (while t
          (next-error 1)
          (with-current-buffer (window-buffer (selected-window))
            (push (format "%s:%d" (file-name-nondirectory (buffer-file-name)) (line-number-at-pos)) errors)))
      (user-error nil))
    (write-region (mapconcat #'identity (nreverse errors) "\\n") nil "{errors}")))
"""


def test_emacs_compile_builds_in_the_container_and_next_error_visits_gcc_10s_errors(
    bind_debian11: Callable[[str, dict[str, str]], Path], activated: dict[str, str], tmp_path: Path
) -> None:
    """M-x compile (Emacs in batch, the compilation process on a pty as interactively): the
    container's make and gcc 10, and next-error walks to the lines gcc 10 rejected."""
    needs("emacs")
    root = bind_debian11("emacs-compile", BUILD_REPO)
    out, errors = tmp_path / "compilation", tmp_path / "errors"
    script = tmp_path / "compile.el"
    script.write_text(COMPILE_EL.format(out=out, errors=errors))
    r = subprocess.run(
        ["emacs", "--batch", "-Q", "-l", str(script)],
        cwd=root, env=activated, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    log = out.read_text()
    assert "built-by-gcc-10.2.1-on-debian-11" in log and "Compilation exited abnormally with code 2" in log, log
    assert errors.read_text().splitlines() == ["bad.c:3", "bad.c:5"], (errors.read_text(), log)
    assert "GCC: (Debian 10." in comment_of(root / "prog"), comment_of(root / "prog")


# ---- debugging from the editor: vim's Termdebug, Emacs' M-x gdb --------------------------------

LOOP_C = """\
#include <stdio.h>
volatile long counter;
static void spin(void) { for (;;) counter++; }
int main(void) {
    puts("loop-started");
    fflush(stdout);
    spin();
    return 0;
}
"""
DEBUG_REPO = {"loop.c": LOOP_C, "Makefile": "loop: loop.c\n\tgcc -g -O0 -o loop loop.c\n"}

# The editors' debuggers as they come: both hand gdb the path of a pty they opened on the host
# (Termdebug 'new-ui mi /dev/pts/N' in its window mode and 'tty /dev/pts/N'; Emacs
# '-inferior-tty-set /dev/pts/N'), which opens in the container because it sees the host's
# /dev/pts (config/containers.host_terminals); and gdb on the editor's pty is in terminal-owning
# mode, its pty in the container taking the modes of the editor's (Emacs turns echo and onlcr
# off: with them on, gud-mi read its own commands echoed back and never finished its start).


def _gdb_in_container(root: Path) -> bool:
    """gdb, by its name or by the path the editor found it at, in the repository's container."""
    return any(os.path.basename(cmd.split(" ", 1)[0]) == "gdb" for _, cmd in container_processes(root))


def _spinning(root: Path) -> bool:
    """The debugged program runs (not stopped by gdb) in the repository's container."""
    return any(state == "R" and cmd.strip() == f"{root}/loop" for state, cmd in container_processes(root))


def _termdebug(root: Path, env: dict[str, str], prompt_buffer: bool, own_tty: bool = False) -> None:
    """vim, :Termdebug loop, then a session typed at gdb: its version, a breakpoint hit, the
    program run on, Ctrl-C (the window: the key on gdb's terminal; the prompt buffer: Termdebug's
    interrupt, SIGINT to its gdb job) stops it where it spins."""
    assert run_qpod("exec", "make", "-s", "loop", cwd=root).returncode == 0  # gcc 10's -g
    tmux = Tmux("vim -Nu NONE -i NONE loop.c", env=env, cwd=str(root))
    try:
        tmux.wait_for("volatile long counter", 60)
        if prompt_buffer:
            tmux.type(":let g:termdebug_config = {'use_prompt': 1}")
        tmux.type(":packadd termdebug")
        tmux.type(":Termdebug loop")
        wait_until(lambda: _gdb_in_container(root), "gdb in the repository's container", 120)
        tmux.wait_for("gdb>" if prompt_buffer else "(gdb)", 60)  # drawn once gdb took its terminal
        # Debian 11's gdb, the host's is 13 (one line: the window mode's gdb window is short).
        # gdb draws its prompt before Termdebug has finished its start and put the focus in
        # gdb's window (on a loaded machine, seconds later): until then keys reach the program's
        # window, so the question is asked again until gdb answers it

        def gdb_answers() -> bool:
            tmux.type("print $_gdb_major")
            try:
                tmux.wait_for("= 10", 10)
            except AssertionError:
                return False
            return True

        wait_until(gdb_answers, "gdb 10 answering in its window", 180, interval=0)
        if own_tty:
            tmux.type("set inferior-tty")  # the program on gdb's own output, not the window's pty
        tmux.type("break main")
        tmux.type("run")
        screen = tmux.wait_for_any(("Breakpoint 1, main", "exited with code", "opening terminal failed"), 120)
        assert "Breakpoint 1, main" in screen, screen
        tmux.type("continue")
        wait_until(lambda: _spinning(root), "the program running in the container", 60)
        tmux.send("C-c")
        screen = tmux.wait_for("received signal SIGINT", 60)
        assert "in spin () at loop.c" in screen[screen.rfind("received signal SIGINT") :], screen
        assert not _spinning(root)
    finally:
        tmux.kill()


@pytest.mark.parametrize("mode", ["window", "prompt"])
def test_vim_termdebug_debugs_with_the_containers_gdb(
    bind_debian11: Callable[[str, dict[str, str]], Path], activated: dict[str, str], mode: str
) -> None:
    """:Termdebug as it comes (gdb in a terminal window, Termdebug's default, or in its prompt
    buffer): gdb 10 runs in the container, a breakpoint is hit, Ctrl-C interrupts the program."""
    needs("vim", "tmux")
    _termdebug(bind_debian11("termdebug", DEBUG_REPO), activated, prompt_buffer=mode == "prompt")


def test_vim_termdebug_prompt_buffer_debugs_with_the_containers_gdb_on_its_own_output(
    bind_debian11: Callable[[str, dict[str, str]], Path], activated: dict[str, str]
) -> None:
    """Termdebug's prompt buffer with the program's output on gdb's own terminal (``set
    inferior-tty``) instead of the pty Termdebug opened for it on the host: gdb 10 in the container under vim hits the
    breakpoint, and Termdebug's Ctrl-C reaches it and interrupts the running program."""
    needs("vim", "tmux")
    _termdebug(bind_debian11("termdebug", DEBUG_REPO), activated, prompt_buffer=True, own_tty=True)


def test_emacs_gdb_debugs_with_the_containers_gdb(
    bind_debian11: Callable[[str, dict[str, str]], Path], activated: dict[str, str]
) -> None:
    """M-x gdb (gud over gdb -i=mi, on a pty of Emacs'): gdb 10 runs in the container, a
    breakpoint is hit, C-c C-c interrupts the running program."""
    needs("emacs", "tmux")
    root = bind_debian11("emacs-gdb", DEBUG_REPO)
    assert run_qpod("exec", "make", "-s", "loop", cwd=root).returncode == 0
    tmux = Tmux("emacs -nw -Q loop.c", env=activated, cwd=str(root))
    try:
        tmux.wait_for("volatile long counter", 60)
        tmux.send("M-x")
        tmux.type("gdb")
        tmux.wait_for("Run gdb (like this):", 30)
        tmux.send("C-a", "C-k")
        tmux.type("gdb -i=mi loop")
        wait_until(lambda: _gdb_in_container(root), "gdb in the repository's container", 120)
        tmux.wait_for("(gdb)", 60)
        tmux.type("show version")
        tmux.wait_for("GNU gdb (Debian 10.", 60)
        tmux.type("break main")
        tmux.type("run")
        # what shows when it fails: gud's own commands echoed back, the program not started
        screen = tmux.wait_for_any(("Breakpoint 1, main", "exited with code", "-interpreter-exec console"), 120)
        assert "Breakpoint 1, main" in screen and "-interpreter-exec console" not in screen, screen
        tmux.type("continue")
        wait_until(lambda: _spinning(root), "the program running in the container", 60)
        tmux.send("C-c", "C-c")
        tmux.wait_for("received signal SIGINT", 60)
    finally:
        tmux.kill()


# ---- a language server over stdio: clangd ------------------------------------------------------

CLANGD_IMAGE = "localhost/qpod-test-clangd:1"
CLANGD_CONTAINERFILE = (
    "FROM localhost/qpod-debian11:latest\n"
    "RUN apt-get update -q && apt-get install -y -q --no-install-recommends clangd && rm -rf /var/lib/apt/lists/*\n"
)
# glibc's own version macros: 2.31 in Debian 11, 2.36 on the host
PROBE_C = """\
#include <features.h>
#if __GLIBC__ == 2 && __GLIBC_MINOR__ == 31
#warning old-glibc-2.31
#endif
int main(void) { return 0; }
"""
# an editor's client of the Language Server Protocol: JSON-RPC with Content-Length framing over
# clangd's stdin and stdout, clangd started by name in the repository (subprocess: fork and exec)
LSP_CLIENT = """\
import json, os, subprocess, sys

root, source, out = sys.argv[1:4]
server = subprocess.Popen(["clangd", "--log=error"], cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def send(message):
    body = json.dumps({"jsonrpc": "2.0", **message}).encode()
    server.stdin.write(b"Content-Length: %d\\r\\n\\r\\n" % len(body) + body)
    server.stdin.flush()


def receive():
    length = None
    while line := server.stdout.readline().strip():
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    if length is None:
        sys.exit("clangd closed its output")
    return json.loads(server.stdout.read(length))


def answer(request_id):
    while (message := receive()).get("id") != request_id:
        pass
    return message


uri = "file://" + os.path.join(root, source)
send({"id": 1, "method": "initialize",
      "params": {"processId": os.getpid(), "rootUri": "file://" + root, "capabilities": {}}})
info = answer(1)["result"].get("serverInfo", {})
send({"method": "initialized", "params": {}})
with open(os.path.join(root, source)) as f:
    text = f.read()
send({"method": "textDocument/didOpen",
      "params": {"textDocument": {"uri": uri, "languageId": "c", "version": 1, "text": text}}})
while True:
    message = receive()
    if message.get("method") == "textDocument/publishDiagnostics" and message["params"]["uri"] == uri:
        break
send({"id": 2, "method": "shutdown"})
answer(2)
send({"method": "exit"})
server.stdin.close()
with open(out, "w") as f:
    json.dump({"server": info, "diagnostics": message["params"]["diagnostics"], "status": server.wait()}, f)
"""


@pytest.fixture(scope="module")
def clangd_image(debian11_image: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Debian 11 with its clangd (11), built here from Debian's packages."""
    return build_test_image(CLANGD_IMAGE, CLANGD_CONTAINERFILE, tmp_path_factory)


def test_clangd_checks_the_code_against_the_environments_headers(
    qpod_home: Path, make_repo: Callable[..., Path], clangd_image: str, activated: dict[str, str], tmp_path: Path
) -> None:
    """An editor's language client, a program that is not a shell, starts clangd in the
    repository: the diagnostics are computed with the environment's glibc 2.31 headers."""
    root = make_repo("lsp-" + uuid.uuid4().hex[:6], {"probe.c": PROBE_C})
    assert run_qpod("env", "add", "clangd11", "--image", clangd_image).returncode == 0
    assert run_qpod("init", "clangd11", cwd=root).returncode == 0
    # the library resolves a program as exec would before routing it by name: a clangd must be on
    # the host's PATH (as the editor's own would be); this one says so if it is ever run
    host_bin = tmp_path / "host-bin"
    host_bin.mkdir()
    (host_bin / "clangd").write_text("#!/bin/sh\necho 'the host clangd ran' >&2\nexit 3\n")
    (host_bin / "clangd").chmod(0o755)
    env = {**activated, "PATH": f"{host_bin}{os.pathsep}{activated['PATH']}"}
    client, out = tmp_path / "lsp_client.py", tmp_path / "lsp.json"
    client.write_text(LSP_CLIENT)
    try:
        r = subprocess.run(
            [sys.executable, "-I", str(client), str(root), "probe.c", str(out)],
            cwd=root, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        got = json.loads(out.read_text())
        assert got["status"] == 0 and got["server"].get("version", "").startswith("Debian clangd version 11."), got
        messages = [d["message"] for d in got["diagnostics"]]
        assert [m.lower() for m in messages] == ["old-glibc-2.31"], got  # the warning of line 3
        assert got["diagnostics"][0]["range"]["start"]["line"] == 2, got
    finally:
        remove_containers_of(str(root))


# ---- a build task spawned the way IDEs do: posix_spawn from threads ----------------------------

SPAWNER_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

#define N 4
extern char **environ;
static pthread_barrier_t go;
static char **task;  /* per thread: directory, output file, target */
static int err[N], status[N];

static void *build(void *arg)
{
    long i = (long)arg;
    char thread[32];
    snprintf(thread, sizeof thread, "THREAD=%ld", i);
    char *argv[] = {"make", "-s", task[3 * i + 2], thread, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addchdir_np(&fa, task[3 * i]);
    posix_spawn_file_actions_addopen(&fa, 1, task[3 * i + 1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid;
    pthread_barrier_wait(&go); /* every thread spawns at once */
    err[i] = i % 2 ? posix_spawnp(&pid, "make", &fa, NULL, argv, environ)
                   : posix_spawn(&pid, "/usr/bin/make", &fa, NULL, argv, environ);
    if (err[i] == 0 && waitpid(pid, &status[i], 0) != pid)
        err[i] = -1;
    posix_spawn_file_actions_destroy(&fa);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 1 + 3 * N)
        return 100;
    task = argv + 1;
    pthread_t t[N];
    pthread_barrier_init(&go, NULL, N);
    for (long i = 0; i < N; i++)
        pthread_create(&t[i], NULL, build, (void *)i);
    for (int i = 0; i < N; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < N; i++)
        printf("%d %d %d\n", i, err[i], WIFEXITED(status[i]) ? WEXITSTATUS(status[i]) : 128 + WTERMSIG(status[i]));
    return 0;
}
"""
TASK_MAKEFILE = """\
DEBIAN = $$(cut -d. -f1 /etc/debian_version)
ok:
\t@echo "$(THREAD) ok make-on-debian-$(DEBIAN) gcc-$$(gcc -dumpfullversion) in $(notdir $(CURDIR))"
fail:
\t@echo "$(THREAD) fail make-on-debian-$(DEBIAN) in $(notdir $(CURDIR))"; exit 7
"""


def test_build_tasks_spawned_from_threads_of_an_ide_run_in_the_container(
    bind_debian11: Callable[[str, dict[str, str]], Path], activated: dict[str, str], tmp_path: Path
) -> None:
    """A multi-threaded program that is not a shell (an IDE's task runner) spawns make from four
    threads at once, with posix_spawn and posix_spawnp, each in a bound repository given by a
    chdir file action: each make is the container's, with its output and exit status."""
    spawner = tmp_path / "spawner"
    (tmp_path / "spawner.c").write_text(SPAWNER_C)
    subprocess.run(["cc", "-O1", "-pthread", "-o", str(spawner), str(tmp_path / "spawner.c")], check=True)
    repos = [bind_debian11(f"task{n}", {"Makefile": TASK_MAKEFILE}) for n in range(2)]
    plan = [(repos[0], "ok"), (repos[1], "ok"), (repos[0], "fail"), (repos[1], "fail")]
    outs = [tmp_path / f"out{i}" for i in range(len(plan))]
    args = [str(x) for (root, target), out in zip(plan, outs, strict=True) for x in (root, out, target)]
    r = subprocess.run(
        [str(spawner), *args], cwd=tmp_path, env=activated, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, (r.stdout, r.stderr)
    results = [tuple(int(x) for x in line.split()) for line in r.stdout.splitlines()]
    assert results == [(0, 0, 0), (1, 0, 0), (2, 0, 2), (3, 0, 2)], (results, [o.read_text() for o in outs])
    for i, ((root, target), out) in enumerate(zip(plan, outs, strict=True)):
        text = out.read_text()
        first = text.splitlines()[0]
        if target == "ok":
            assert first == f"{i} ok make-on-debian-11 gcc-10.2.1 in {root.name}", text
        else:
            assert first == f"{i} fail make-on-debian-11 in {root.name}", text
            assert "fail] Error 7" in text, text  # make's own report of the recipe's status
