"""An environment on another host, measured side by side in one run (these machines are noisy).

    python bench/bench_remote.py [--runs 20] [--mbytes 20]

The "remote" host is this machine through a real sshd on 127.0.0.1 (tests/sshd_host.py: its
own keys, known_hosts and podman connection). Prints medians and ratios for the targets of the
"Remote build hosts" issue:

- warm ``qpod exec true`` on a ``host:`` environment against
  ``podman --connection HOST exec CTR true`` on the same container, alternating (goal: ratio at
  most 1.1);
- ``cat`` of N MB through each (stdout relayed), alternating;
- 80 commands at once through qpod: wall time, and how many printed all they wrote.
"""

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import sshd_host  # noqa: E402

from qpod_engine.config.containers import container_name  # noqa: E402
from qpod_engine.podman import local_images as images  # noqa: E402


def timed(argv: list[str], cwd: Path, env: dict[str, str], stdin: int | None = subprocess.DEVNULL) -> float:
    t = time.perf_counter()
    r = subprocess.run(argv, cwd=cwd, env=env, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.decode().strip()}")
    return dt


def side_by_side(label: str, a: list[str], b: list[str], cwd: Path, env: dict[str, str], runs: int) -> None:
    qa, qb = [], []
    for _ in range(runs):
        qa.append(timed(a, cwd, env))
        qb.append(timed(b, cwd, env))
    ma, mb = statistics.median(qa), statistics.median(qb)
    print(f"{label}: qpod {ma * 1000:.1f} ms, podman --connection {mb * 1000:.1f} ms, ratio {ma / mb:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--mbytes", type=int, default=20)
    args = ap.parse_args()
    why = sshd_host.available()
    if why:
        raise SystemExit(why)

    work = Path(tempfile.mkdtemp(prefix="qpod-bench-remote-"))
    host = sshd_host.SshHost(work / "sshd")
    env = {**os.environ, **host.env(), "QPOD_CONFIG_DIR": str(work / "config"), "QPOD_STATE_DIR": str(work / "state")}
    env.pop("LD_PRELOAD", None)
    os.environ.update({k: env[k] for k in ("QPOD_CONFIG_DIR", "QPOD_STATE_DIR")})  # container names
    qpod = shutil.which("qpod", path=os.path.dirname(sys.executable)) or "qpod"
    podman = shutil.which("podman") or "podman"
    repo = work / "repo"
    try:
        bb = images.build_busybox_image()
        repo.mkdir()
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
        for argv in (["env", "add", "far", "--image", bb, "--host", host.name], ["init", "far"]):
            subprocess.run([qpod, *argv], cwd=repo, env=env, check=True, capture_output=True)
        timed([qpod, "exec", "true"], repo, env)  # the container, and ssh's shared connection
        name = container_name("far", str(repo))
        via = [podman, "--connection", host.name, "exec", name]
        print(f"host {host.name}: this machine through sshd on 127.0.0.1:{host.port}; container {name}")
        side_by_side("warm exec true", [qpod, "exec", "true"], [*via, "true"], repo, env, args.runs)

        data = work / "data"
        data.write_bytes(os.urandom(args.mbytes << 20))
        cat = ["sh", "-c", f"cat {data} > /dev/null; cat {data}"]
        side_by_side(f"cat of {args.mbytes} MB", [qpod, "exec", *cat], [*via, *cat], repo, env, max(3, args.runs // 4))
        want = hashlib.sha256(data.read_bytes()).hexdigest()
        got = hashlib.sha256(
            subprocess.run([qpod, "exec", "cat", str(data)], cwd=repo, env=env, capture_output=True).stdout
        ).hexdigest()
        print(f"cat of {args.mbytes} MB through qpod: bytes {'intact' if got == want else 'DIFFER'}")

        def one(i: int) -> bool:
            r = subprocess.run(
                [qpod, "exec", "sh", "-c", f"echo {i}; seq 1 2000"], cwd=repo, env=env, capture_output=True, text=True
            )
            return r.returncode == 0 and r.stdout.split("\n", 1)[0] == str(i) and r.stdout.count("\n") == 2001

        t = time.perf_counter()
        with ThreadPoolExecutor(80) as pool:
            ok = sum(pool.map(one, range(80)))
        print(f"80 commands at once: {time.perf_counter() - t:.2f} s, {ok}/80 complete")
    finally:
        subprocess.run(
            [podman, "rm", "-f", "-t", "0", container_name("far", str(repo))],
            capture_output=True,
            env={**os.environ, "QPOD_OFF": "1"},
        )
        host.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
