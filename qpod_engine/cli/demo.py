"""``qpod demo``: the whole story on a fresh machine, with no registry.

1. build a Debian 11 image (gcc 10, make, gdb) from Debian packages, or reuse it;
2. define the environment ``debian11``;
3. create a sample "old branch": C code that gcc 10 builds under -Werror and the host's
   newer gcc rejects;
4. show the host build failing, then ``make`` and the program run in ``qpod-shell`` (the
   preload library sends them to the container), and the binary's .comment naming gcc 10;
5. a second sample whose environment comes from its own ``.qpod.yaml`` and Containerfile.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from qpod_engine.base import paths
from qpod_engine.base.errors import QpodError

ENV_NAME = "debian11"

LEGACY_C = r"""#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 2018-era code: it logs the old pointer after realloc. gcc 10 accepted it under
 * -Wall -Werror; gcc 12's new -Wuse-after-free rejects the build. */
static char *name_copy(const char *s) {
    char *p = malloc(strlen(s) + 1);
    strcpy(p, s);
    return p;
}

int main(void) {
    char *n = name_copy("the 2018 branch");
    char *old = n;
    n = realloc(n, 64);
    if (!n) { printf("realloc failed for %p\n", (void *)old); return 1; }
    if (n != old) fprintf(stderr, "moved from %p\n", (void *)old);
    printf("hello from %s, built by gcc %s\n", n, __VERSION__);
    free(n);
    return 0;
}
"""

MAKEFILE = """CFLAGS = -Wall -Werror -O2 -g

legacy: legacy.c
\t$(CC) $(CFLAGS) -o $@ $<

clean:
\trm -f legacy
"""


def _say(msg: str) -> None:
    print(f"\033[1m==> {msg}\033[0m" if sys.stdout.isatty() else f"==> {msg}", flush=True)


def _git(*args: str, cwd: Path) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "qpod demo",
        "GIT_AUTHOR_EMAIL": "demo@qpod.invalid",
        "GIT_COMMITTER_NAME": "qpod demo",
        "GIT_COMMITTER_EMAIL": "demo@qpod.invalid",
    }
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


# the second sample: a branch that carries its own environment, built from its Containerfile
OWN_QPOD_YAML = """# this branch's build environment, versioned with its code (qpod allow / qpod init trust it)
build: Containerfile
"""
OWN_CONTAINERFILE = """FROM localhost/qpod-debian11:latest
ENV LEGACY_RECIPE="the branch's own Containerfile"
"""
OWN_MAKEFILE = MAKEFILE.replace("legacy: legacy.c\n", 'legacy: legacy.c\n\t@echo "environment: $$LEGACY_RECIPE"\n')


def make_sample_repo(root: Path, extra: dict[str, str] | None = None) -> Path:
    """A git repository holding the old branch's code (recreated from scratch each time)."""
    if root.exists():
        shutil.rmtree(root)
    from qpod_engine.base.fileio import make_dirs

    make_dirs(str(root))
    (root / "legacy.c").write_text(LEGACY_C)
    (root / "Makefile").write_text(MAKEFILE)
    (root / ".gitignore").write_text("legacy\n")
    for name, text in (extra or {}).items():
        (root / name).write_text(text)
    _git("init", "-q", "-b", "release/2018", cwd=root)
    _git("add", "-A", cwd=root)
    _git("commit", "-q", "-m", "the 2018 release branch", cwd=root)
    return root


def _qpod(*args: str, cwd: Path) -> int:
    return subprocess.run([sys.executable, "-I", "-m", "qpod_engine.cli", *args], cwd=cwd).returncode


def _comment_section(binary: Path) -> str:
    """The compilers named in the ELF .comment section (read on the host)."""
    data = binary.read_bytes()
    # good enough for a demo: the .comment strings are NUL-separated "GCC: (...) X.Y.Z"
    found = sorted({s.decode(errors="replace") for s in data.split(b"\0") if s.startswith(b"GCC: (")})
    return "; ".join(found) or "(no .comment section)"


def run_demo(directory: str | None = None) -> int:
    from qpod_engine.config import environments as config
    from qpod_engine.config import snapshot
    from qpod_engine.podman import local_images as images

    t0 = time.monotonic()
    _say("1/6 the old OS: a Debian 11 image with gcc 10, make, gdb and python3, built here from Debian packages")
    ref = images.build_debian11_image(progress=lambda line: print(f"    {line}", flush=True))
    _say(f"    image ready: {ref}")

    _say(f"2/6 environment '{ENV_NAME}'")
    env = config.Environment(name=ENV_NAME, image=ref, cap_add=["SYS_PTRACE"], seccomp="unconfined")
    config.save_environment(env)
    print(f"    {paths.environment_file(ENV_NAME)}: image {ref}, commands {', '.join(env.commands)}")

    root = Path(directory).resolve() if directory else Path(paths.state_dir()) / "demo" / "legacy-2018"
    _say(f"3/6 an old branch in {root}, bound with 'qpod init {ENV_NAME}'")
    make_sample_repo(root)
    if _qpod("init", ENV_NAME, cwd=root) != 0:
        raise QpodError("demo: qpod init failed")
    snapshot.compile_config()

    host_gcc = subprocess.run(["gcc", "-dumpfullversion"], capture_output=True, text=True).stdout.strip()
    _say(f"4/6 on the host (gcc {host_gcc or 'not installed'}), the old branch does not build:")
    host = subprocess.run(["make", "-C", str(root), "CC=gcc"], capture_output=True, text=True)
    for line in (host.stdout + host.stderr).splitlines():
        if "error:" in line:
            print(f"    {line.strip()}")
            break
    print(f"    host make exit status: {host.returncode}")
    subprocess.run(["make", "-C", str(root), "clean"], capture_output=True)

    _say("5/6 in qpod-shell (your shell, with every launch seen), the same commands run in the container:")
    script = "make && ./legacy"
    print(f"    $ cd {root} && qpod-shell -c '{script}'", flush=True)
    status = subprocess.run(
        [sys.executable, "-I", "-m", "qpod_engine.cli.shell", "--shell", "/bin/sh", "-c", script], cwd=root
    ).returncode
    if status != 0:
        raise QpodError(f"demo: the build in the container failed (exit {status})")
    binary = root / "legacy"
    st = binary.stat()
    print(f"    .comment of {binary}: {_comment_section(binary)}")
    print(f"    owner of the build output: uid {st.st_uid} (you are uid {os.getuid()})")
    print("    log of redirected commands (qpod log):", flush=True)
    _qpod("log", "-n", "2", "--repo", str(root), cwd=root)

    own = root.parent / f"{root.name}-own-env"
    _say(f"6/6 a branch that carries its environment: {own} has .qpod.yaml and a Containerfile")
    make_sample_repo(own, {"Makefile": OWN_MAKEFILE, ".qpod.yaml": OWN_QPOD_YAML, "Containerfile": OWN_CONTAINERFILE})
    print(f"    $ cd {own} && qpod init   (no ENV: shows the file, allows this content of it, binds)", flush=True)
    if _qpod("init", cwd=own) != 0:
        raise QpodError("demo: qpod init (the repository's own .qpod.yaml) failed")
    print(f"    $ qpod-shell -c '{script}'   (the first command builds the image from the Containerfile)", flush=True)
    status = subprocess.run(
        [sys.executable, "-I", "-m", "qpod_engine.cli.shell", "--shell", "/bin/sh", "-c", script], cwd=own
    ).returncode
    if status != 0:
        raise QpodError(f"demo: the build in the branch's own environment failed (exit {status})")
    print(f"    .comment of {own / 'legacy'}: {_comment_section(own / 'legacy')}")
    _say(
        f"done in {time.monotonic() - t0:.0f} s. Try: cd {root} && qpod-shell, then make, ./legacy, "
        "gdb ./legacy, qpod tui"
    )
    return status
