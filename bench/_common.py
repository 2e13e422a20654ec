"""Pieces the benchmarks share: timing a command, a process tree's memory, a bound repository
in a private config, timing commands alternately inside qpod-shell, and the C spawner that
times ``posix_spawn`` + ``waitpid`` of a program in a loop."""

import importlib.util
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# posix_spawn + waitpid of argv[2] argv[1] times; prints microseconds per spawn
SPAWNER_C = r"""
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
extern char **environ;
int main(int argc, char **argv) {
    int n = atoi(argv[1]);
    char *args[] = {argv[2], NULL};
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < n; i++) {
        pid_t pid;
        int st;
        if (posix_spawn(&pid, argv[2], NULL, NULL, args, environ) != 0 || waitpid(pid, &st, 0) < 0 || st != 0)
            return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.3f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / 1e3 / n);
    return 0;
}
"""


def build_module():
    """preload/build.py, loaded without importing the package."""
    spec = importlib.util.spec_from_file_location("qpod_preload_build", ROOT / "preload" / "build.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def compile_c(build, out: Path, source: str) -> Path:
    """A small C program (``source``) compiled with the build's compiler, -O2."""
    src = out.with_suffix(".c")
    src.write_text(source)
    subprocess.run([*build.cc(), "-O2", "-o", str(out), str(src)], check=True)
    return out


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Seconds ``argv`` took; the run must succeed."""
    t = time.perf_counter()
    r = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.decode().strip()}")
    return dt


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def smaps_rollup_kb(pid: int) -> dict[str, int]:
    """/proc/PID/smaps_rollup's fields in kB (Rss, Pss, Private_Dirty, ...)."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1])
    return out


def descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        p, pp = map(int, line.split())
        children.setdefault(pp, []).append(p)
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += children.get(p, [])
    return seen


def setup_repo(work: Path, name: str, image: str, env: dict[str, str], qpod: str, files: dict[str, str]) -> Path:
    """A git repository ``work/name`` holding ``files``, bound to a new environment ``name``."""
    repo = work / name
    repo.mkdir()
    for rel, text in files.items():
        (repo / rel).write_text(text)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([qpod, "env", "add", name, "--image", image, "--replace"], env=env, check=True, capture_output=True)
    subprocess.run([qpod, "init", name], cwd=repo, env=env, check=True, capture_output=True)
    return repo


def shell_loop(
    repo: Path,
    env: dict[str, str],
    runs: int,
    a: str,
    b: str,
    prep: str = "true",
    shell: str = "qpod-shell",
) -> tuple[list[float], list[float]]:
    """Time commands ``a`` and ``b`` alternately inside qpod-shell (bash), per run in seconds;
    ``prep`` runs untimed before each. ``shell``: the qpod-shell to start."""
    script = (
        f"for i in $(seq {runs}); do {prep} >/dev/null 2>&1; "
        f"t0=$EPOCHREALTIME; {a} >/dev/null 2>&1; t1=$EPOCHREALTIME; {prep} >/dev/null 2>&1; "
        f"t1b=$EPOCHREALTIME; {b} >/dev/null 2>&1; t2=$EPOCHREALTIME; echo $t0 $t1 $t1b $t2; done"
    )
    r = subprocess.run(
        [shell, "--shell", "/bin/bash", "-c", script],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    xs, ys = [], []
    for line in r.stdout.split("\n"):
        if line.count(" ") == 3:
            t0, t1, t1b, t2 = map(float, line.split())
            xs.append(t1 - t0)
            ys.append(t2 - t1b)
    return xs, ys


def report(label: str, xs: list[float], ys: list[float], what: str, target: str) -> None:
    x, y = statistics.median(xs), statistics.median(ys)
    print(f"  {label:44} {x * 1000:8.2f} ms vs {what} {y * 1000:8.2f} ms   ratio {x / y:6.3f}   ({target})")
