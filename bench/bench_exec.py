"""Native exec speed and memory, measured side by side in one run (these machines are noisy).

    python bench/bench_exec.py [--runs 30] [--cold-runs 5] [--no-debian]

Prints medians and ratios for the targets of the "Native exec" issue:

- warm ``qpod exec true`` (the installed console script, as a user types it) against
  ``podman exec CTR true`` on the same container, alternating;
- in qpod-shell, an up-to-date ``make -q`` redirected to the container against the same
  ``make -q`` on the host (``QPOD_OFF=1``), alternating, timed inside the shell;
- a 50-file ``make -j2`` through qpod-shell against ``podman exec CTR make -j2``;
- the first ``qpod exec true`` (no container yet) against ``podman run --rm IMG true``;
- host memory while a redirected command runs (every qpod process on the host), and the
  agent's memory in the container (PID 1, plus its session process per running command).

The make figures need the Debian 11 image (built locally on first use, about a minute).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import descendants, report, rss_kb, setup_repo, shell_loop, timed  # noqa: E402 - bench/, beside this script

from qpod_engine.config.containers import container_name  # noqa: E402
from qpod_engine.podman import lifecycle as podman_backend  # noqa: E402
from qpod_engine.podman import local_images as images


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--cold-runs", type=int, default=5)
    ap.add_argument("--no-debian", action="store_true", help="skip the make figures (no Debian 11 image)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="qpod-bench-"))
    env = {**os.environ, "QPOD_CONFIG_DIR": str(work / "config"), "QPOD_STATE_DIR": str(work / "state")}
    env.pop("LD_PRELOAD", None)
    os.environ.update({k: env[k] for k in ("QPOD_CONFIG_DIR", "QPOD_STATE_DIR")})
    # the qpod a user types (setup.sh: the native-exec client itself), and the console script of
    # a venv install (pip install .: Python's start, then the client)
    qpod = shutil.which("qpod")
    script = shutil.which("qpod", path=os.path.dirname(sys.executable))
    assert qpod and shutil.which("qpod-shell"), "qpod is not installed (sudo bash scripts/setup.sh)"
    podman = shutil.which("podman") or "podman"
    bb = images.build_busybox_image()
    repo = setup_repo(work, "bench", bb, env, qpod, {})
    name = container_name("bench", str(repo))
    runtime = podman_backend.runtime_name("auto")
    run_rm = [
        podman,
        "run",
        "--rm",
        *(["--runtime", runtime] if runtime else []),
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1000:1000",
        bb,
        "true",
    ]
    names = [name]
    print(f"qpod: {qpod} -> {os.path.realpath(qpod)}; venv console script: {script}")
    try:
        cold_q, cold_p = [], []
        for _ in range(args.cold_runs):
            subprocess.run([podman, "rm", "-f", "-t", "0", name], capture_output=True)
            cold_q.append(timed([qpod, "exec", "true"], repo, env))
            cold_p.append(timed(run_rm, repo, env))
        timed([qpod, "exec", "true"], repo, env)  # warm: the launcher wrote the launch spec
        warm_q, warm_s, warm_p = [], [], []
        for _ in range(args.runs):
            warm_p.append(timed([podman, "exec", name, "true"], repo, env))
            warm_q.append(timed([qpod, "exec", "true"], repo, env))
            if script:
                warm_s.append(timed([script, "exec", "true"], repo, env))
        print("speed (medians):")
        report("warm qpod exec true", warm_q, warm_p, "podman exec", "at most 0.10, goal 0.05")
        if script:
            report("  the same through a venv's console script", warm_s, warm_p, "podman exec", "for information")
        report("cold first qpod exec true", cold_q, cold_p, "podman run --rm", "at most 1.1")

        # memory: a redirected sleep, its host processes and the agent's
        p = subprocess.Popen([qpod, "exec", "sleep", "30"], cwd=repo, env=env, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while (
            "sleep 30" not in subprocess.run([podman, "top", name, "args"], capture_output=True, text=True).stdout
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        host_kb = sum(rss_kb(x) for x in descendants(p.pid))
        pid1 = int(
            subprocess.run([podman, "inspect", "-f", "{{.State.Pid}}", name], capture_output=True, text=True).stdout
        )
        tree = descendants(pid1)
        agent_kb = rss_kb(pid1)
        session_kb = (
            sum(rss_kb(x) for x in tree if "qpod-agent" in Path(f"/proc/{x}/cmdline").read_text(errors="replace"))
            - agent_kb
            if len(tree) > 1
            else 0
        )
        p.terminate()
        p.wait()
        print("memory while a redirected command runs:")
        print(f"  host processes of qpod: {host_kb / 1024:.2f} MB RSS (target at most 5 MB)")
        print(
            f"  agent in the container: {agent_kb / 1024:.2f} MB RSS, plus {session_kb / 1024:.2f} MB for the "
            "session of the running command (target at most 2 MB)"
        )

        if not args.no_debian:
            deb = images.build_debian11_image()
            cfiles = {f"f{i}.c": f"int f{i}(int x) {{ return x * {i}; }}\n" for i in range(50)}
            makefile = (
                "OBJS := $(patsubst %.c,%.o,$(wildcard f*.c))\n"
                "all: libf.a\nlibf.a: $(OBJS)\n\tar rcs $@ $^\n%.o: %.c\n\tgcc -O1 -c $< -o $@\n"
                "clean:\n\trm -f *.o libf.a\n"
            )
            drepo = setup_repo(work, "benchdeb", deb, env, qpod, {**cfiles, "Makefile": makefile})
            names.append(container_name("benchdeb", str(drepo)))
            subprocess.run(["qpod-shell", "-c", "make -s -j2"], cwd=drepo, env=env, check=True, capture_output=True)
            xs, ys = shell_loop(drepo, env, args.runs, "make -q", "QPOD_OFF=1 make -q")
            report("qpod-shell: redirected up-to-date make -q", xs, ys, "host make -q", "at most 2.0, goal 1.3")
            direct = f"{podman} exec -w {drepo} {names[-1]} make -s -j2"
            xs, ys = shell_loop(drepo, env, max(3, args.runs // 5), "make -s -j2", direct, prep="make -s clean")
            report("qpod-shell: 50-file make -j2", xs, ys, "podman exec make", "at most 1.05")
    finally:
        for n in names:
            subprocess.run([podman, "rm", "-f", "-t", "0", n], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
