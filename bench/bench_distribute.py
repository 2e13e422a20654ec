"""``distribute:`` measured side by side in one run (these machines are noisy): what a compile
costs when distcc sends it to a build host over the ssh channel, against the same compile in
the local container.

    python bench/bench_distribute.py [--runs 15]

The build host is this machine through a real sshd on 127.0.0.1 (tests/sshd_host.py), so the
figures hold no network time: add a round trip and the bytes of the preprocessed file (and the
object back) at your link's speed. Two environments of the Debian 11 image, one with
``distribute: [b1/4]``; each run compiles the same file with ``qpod exec gcc -O2 -c`` in each,
alternating (DISTCC_FALLBACK=0: a job that did not go there fails the bench). Also timed, to
show where the overhead goes: ``gcc -E`` in the local container (what stays local per job:
distcc preprocesses here), a bare channel on the shared ssh connection, and ``podman exec -i``
there (what each job starts on the host). Prints medians.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import sshd_host  # noqa: E402
from _common import timed  # noqa: E402

from qpod_engine.podman import distribute, local_images, remote  # noqa: E402


def source(lines: int) -> str:
    """One C file of ``lines`` statements over a few functions (gcc -O2 takes its time)."""
    funcs = []
    for f in range(max(1, lines // 50)):
        body = "".join(f"    x = x * {j % 13 + 3} + {f} - (x >> {j % 7 + 1}) ^ (x << {j % 5});\n" for j in range(50))
        funcs.append(f"int f{f}(int x) {{\n{body}    return x;\n}}\n")
    return "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n" + "".join(funcs)


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:7.1f} ms"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    why = sshd_host.available()
    if why:
        raise SystemExit(why)
    work = Path(tempfile.mkdtemp(prefix="qpod-bench-distribute-"))
    host = sshd_host.SshHost(work / "b1", name="b1")
    env = {**os.environ, **host.env(), "QPOD_CONFIG_DIR": str(work / "config"), "QPOD_STATE_DIR": str(work / "state")}
    env.pop("LD_PRELOAD", None)
    os.environ.update({k: env[k] for k in ("QPOD_CONFIG_DIR", "QPOD_STATE_DIR", "HOME", "CONTAINERS_CONF")})
    qpod = shutil.which("qpod", path=os.path.dirname(sys.executable)) or "qpod"
    podman = shutil.which("podman") or "podman"
    image = local_images.build_debian11_image()
    repos = {"here": work / "here", "there": work / "there"}
    try:
        sizes = {"small (50 lines)": 50, "medium (1000 lines)": 1000, "large (4000 lines)": 4000}
        for repo in repos.values():
            repo.mkdir()
            subprocess.run(["git", "init", "-q", str(repo)], check=True)
            for label, n in sizes.items():
                (repo / f"{label.split()[0]}.c").write_text(source(n))
        setup = [
            ["env", "add", "bench-here", "--image", image],
            ["env", "add", "bench-there", "--image", image, "--distribute", "b1/4"],
        ]
        for argv in setup:
            subprocess.run([qpod, *argv], env=env, check=True, capture_output=True)
        for name, repo in repos.items():
            subprocess.run([qpod, "init", f"bench-{name}"], cwd=repo, env=env, check=True, capture_output=True)
            timed([qpod, "exec", "true"], repo, env)  # the containers (there: the distccd too)
        strict = {**env, "DISTCC_FALLBACK": "0"}  # a job that does not go there fails
        conn = remote.connection("b1")
        channel = [*remote.ssh_options(conn), "--", conn.host, "true"]
        served = distribute.distccd_name("bench-there", "b1")
        exec_there = [
            *remote.ssh_options(conn),
            "--",
            conn.host,
            f"podman --url unix://{conn.socket} exec -i {served} true",
        ]
        print(f"build host: this machine over sshd on 127.0.0.1; {args.runs} runs each, medians; image {image}")
        print(f"{'file':<22}{'local container':>18}{'sent to b1':>16}{'overhead':>14}{'gcc -E here':>16}")
        for label in sizes:
            f = f"{label.split()[0]}.c"
            here, there, pre = [], [], []
            for _ in range(args.runs):
                here.append(timed([qpod, "exec", "gcc", "-O2", "-c", f, "-o", "x.o"], repos["here"], env))
                there.append(timed([qpod, "exec", "gcc", "-O2", "-c", f, "-o", "x.o"], repos["there"], strict))
                pre.append(timed([qpod, "exec", "gcc", "-E", f, "-o", "x.i"], repos["here"], env))
            over = statistics.median(there) - statistics.median(here)
            print(f"{label:<22}{ms(here):>18}{ms(there):>16}{over * 1000:11.1f} ms{ms(pre):>16}")
        bare, podman_exec = [], []
        for _ in range(args.runs):
            bare.append(timed(channel, work, env))
            podman_exec.append(timed(exec_there, work, env))
        print(f"where it goes: a channel on the shared ssh connection {ms(bare)}", end="")
        print(f"; podman exec -i there {ms(podman_exec)}")
        jobs = subprocess.run(
            [podman, "exec", served, "grep", "-c", "COMPILE_OK", distribute.SERVER_LOG], capture_output=True, text=True
        ).stdout.strip()
        print(f"compiles distccd logged on b1: {jobs} (want {args.runs * len(sizes)})")
    finally:
        ids: list[str] = []
        for name in ("bench-here", "bench-there"):
            ids += subprocess.run(
                [podman, "ps", "-aq", "--filter", f"label=qpod.env={name}"], capture_output=True, text=True
            ).stdout.split()
        if ids:
            subprocess.run([podman, "rm", "-f", "-t", "0", *set(ids)], capture_output=True)
        host.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
