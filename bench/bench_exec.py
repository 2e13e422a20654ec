"""Launcher speed, measured side by side in one run (these machines are noisy).

    python bench/bench_exec.py [--runs 30] [--cold-runs 5]

Warm: ``qpod exec true`` (the console script, as a user types it) and the preload
library's entry (``python -S launch.py --shim ...``) against ``podman exec CTR true`` on the
same container, alternating. Cold: the first ``qpod exec true`` (no container yet) against
``podman run --rm IMG true``. Prints medians and ratios.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qpod_engine import images, podman_backend, snapshot  # noqa: E402
from qpod_engine.containers import container_name  # noqa: E402


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    t = time.perf_counter()
    r = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.decode().strip()}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--cold-runs", type=int, default=5)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="qpod-bench-"))
    env = {**os.environ, "QPOD_CONFIG_DIR": str(work / "config"), "QPOD_STATE_DIR": str(work / "state")}
    env.pop("LD_PRELOAD", None)
    os.environ.update({k: env[k] for k in ("QPOD_CONFIG_DIR", "QPOD_STATE_DIR")})
    image = images.build_busybox_image()
    repo = work / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    qpod = shutil.which("qpod", path=os.path.dirname(sys.executable)) or shutil.which("qpod")
    assert qpod, "qpod is not installed (pip install .)"
    subprocess.run([qpod, "env", "add", "bench", "--image", image], env=env, check=True, capture_output=True)
    subprocess.run([qpod, "init", "bench"], cwd=repo, env=env, check=True, capture_output=True)
    podman = shutil.which("podman") or "podman"
    name = container_name("bench", str(repo))
    shim = [sys.executable, "-S", snapshot.LAUNCH_SCRIPT, "--shim", "/usr/bin/make", str(repo), "--", "true"]
    runtime = podman_backend.runtime_name("auto")
    run_rm = [podman, "run", "--rm", *(["--runtime", runtime] if runtime else []),
              "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000", image, "true"]
    try:
        cold_q, cold_p = [], []
        for _ in range(args.cold_runs):
            subprocess.run([podman, "rm", "-f", "-t", "0", name], capture_output=True)
            cold_q.append(timed([qpod, "exec", "true"], repo, env))
            cold_p.append(timed(run_rm, repo, env))
        timed([qpod, "exec", "true"], repo, env)  # warm up
        warm = {"qpod exec true": [], "shim launcher": [], "podman exec": []}
        for _ in range(args.runs):
            warm["podman exec"].append(timed([podman, "exec", name, "true"], repo, env))
            warm["qpod exec true"].append(timed([qpod, "exec", "true"], repo, env))
            warm["shim launcher"].append(timed(shim, repo, env))
    finally:
        subprocess.run([podman, "rm", "-f", "-t", "0", name], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)

    base = statistics.median(warm["podman exec"])
    print(f"warm, {args.runs} alternating runs (median):")
    for label, xs in warm.items():
        med = statistics.median(xs)
        print(f"  {label:16} {med * 1000:7.1f} ms   ratio to podman exec {med / base:5.2f}")
    cq, cp = statistics.median(cold_q), statistics.median(cold_p)
    print(f"cold, {args.cold_runs} runs (median): first qpod exec true {cq * 1000:.0f} ms, "
          f"podman run --rm {cp * 1000:.0f} ms, ratio {cq / cp:.2f}")


if __name__ == "__main__":
    main()
