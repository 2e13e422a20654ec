"""What the preload library costs host-only work once every shell and desktop program carries it
("activation"), measured side by side in one run: every set-up runs once per round, rounds
alternate, the medians of the rounds are compared (these machines are shared and noisy).

    .venv/bin/python bench/bench_activation.py [--rounds 11] [--runs 40] [--skip WHAT ...]
        [--baseline-lib DIR]

"With the library" is the environment qpod-shell gives (``qpod_engine.cli.shell.qpod_env``:
this checkout's library and its compiled rules, with one bound repository); "empty" an empty
preloaded library (the floor: what ld.so charges for mapping any LD_PRELOAD); "none" no preload.

- ``work``: real host work, each run by bash carrying the set-up's environment: ``git status``
  x 200 in a clone of this repository, a small pytest suite (plain tests and a few that start
  programs), a host build of a 20-file C project with make (outside any bound repository).
  Target: qpod at most 1% slower than none (goal: not measurable).
- ``true``: 2,000 ``posix_spawn`` + ``waitpid`` of ``/bin/true`` by a small C spawner. Target:
  qpod at most 1.01x the empty library.
- ``faults``: minor page faults per host command (``/bin/true``) launched by bash, each set-up
  (a count, not a time: exact on a noisy machine). Most of what the library costs a shell's
  command is pages its fork child writes or runs first.
- ``memory``: what the library adds to a sleeping process, from /proc/PID/smaps_rollup. Target:
  at most 100 kB.
- ``--venv V...``: a warm ``qpod exec true`` by ``V/bin/qpod`` of each venv (a pip install), in a
  repository of its own, alternating between the venvs.
- ``--baseline-lib DIR``: another build's ``_lib`` (``python preload/build.py DIR``, e.g. of
  main's sources) measured in the same rounds as "base", to see what a change of the library
  does to the work and true figures.
- ``makeq``: an up-to-date ``make -q`` in a bound repository (container warm) redirected by the
  library as in qpod-shell, against the same ``make -q`` on the host (``QPOD_OFF=1``), alternating
  inside qpod-shell. Target: at most 1.3x (goal 1.2x). Needs the Debian 11 image (built on first
  use).
"""

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import (  # noqa: E402 - bench/, beside this script
    SPAWNER_C,
    build_module,
    compile_c,
    report,
    setup_repo,
    shell_loop,
    smaps_rollup_kb,
    timed,
)

from qpod_engine.config.containers import container_name  # noqa: E402
from qpod_engine.podman import local_images as images  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

PYTESTS = """
import json
import subprocess


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def test_numbers():
    assert fib(18) == 2584


def test_json_round_trip():
    data = [{"k": i, "v": str(i) * 10} for i in range(2000)]
    assert json.loads(json.dumps(data)) == data


def test_text():
    words = " ".join(str(i) for i in range(5000)).split()
    assert len(set(words)) == 5000


def test_starts_git():
    out = subprocess.run(["git", "--version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("git version")


def test_starts_a_shell():
    assert subprocess.run(["sh", "-c", "exit 3"]).returncode == 3
"""

MAKEFILE = (
    "OBJS := $(patsubst %.c,%.o,$(wildcard f*.c))\n"
    "all: libf.a\nlibf.a: $(OBJS)\n\tar rcs $@ $^\n%.o: %.c\n\tgcc -O1 -c $< -o $@\n"
    "clean:\n\trm -f *.o libf.a\n"
)


def c_files(n: int) -> dict[str, str]:
    return {f"f{i}.c": f"int f{i}(int x) {{ return x * {i}; }}\n" for i in range(n)}


def median_pairs(xs: list[float], ys: list[float]) -> float:
    """The median of the rounds' ratios x/y (each round's runs ran side by side in time)."""
    return statistics.median(x / y for x, y in zip(xs, ys, strict=True))


def spread(xs: list[float]) -> float:
    """Half the interquartile range, relative to the median: how far apart the rounds are."""
    q = statistics.quantiles(xs, n=4)
    return (q[2] - q[0]) / 2 / statistics.median(xs)


def wait_sleeping(pid: int, prog: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if os.readlink(f"/proc/{pid}/exe") == prog:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "S":
                        return
        except OSError:
            pass
        time.sleep(0.01)
    raise SystemExit(f"process {pid} did not start {prog}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=11, help="rounds of the work, true and memory figures")
    ap.add_argument("--runs", type=int, default=40, help="make -q pairs")
    ap.add_argument("--baseline-lib", metavar="DIR", help="another build's _lib, measured beside this one")
    ap.add_argument("--skip", nargs="*", default=[], choices=["work", "true", "faults", "memory", "makeq"])
    ap.add_argument(
        "--venv",
        nargs="*",
        default=[],
        help="venvs (pip install .): time V/bin/qpod exec true",
    )
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="qpod-bench-activation-"))
    cfg = {"QPOD_CONFIG_DIR": str(work / "config"), "QPOD_STATE_DIR": str(work / "state")}
    os.environ.update(cfg)
    base = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("QPOD_")}
    base.update(cfg)
    bindir = Path(sys.executable).parent  # this checkout's install (pip install -e .)
    qpod, qpod_shell = str(bindir / "qpod"), str(bindir / "qpod-shell")
    podman = shutil.which("podman") or "podman"
    names: list[str] = []
    build = build_module()
    try:
        # a bound repository, so the rules hold a root as a user's do (busybox: no build needed)
        brepo = setup_repo(work, "bench", images.build_busybox_image(), base, qpod, {})
        names.append(container_name("bench", str(brepo)))
        subprocess.run([qpod_shell, "-c", "true"], env=base, check=True)  # compiles the rules
        from qpod_engine.cli.shell import qpod_env

        envs = {
            "none": base,
            "empty": {**base, "LD_PRELOAD": str(build.compile_empty(work / "empty" / "libempty.so"))},
            "qpod": qpod_env(base),
        }
        if args.baseline_lib:
            lib = Path(args.baseline_lib).resolve()
            env = qpod_env(base)
            env["LD_PRELOAD"] = env["LD_PRELOAD"].replace(str(Path(env["QPOD_PRELOAD"]).parent), str(lib))
            envs["base"] = {**env, "QPOD_PRELOAD": str(lib / "libqpod_preload.so")}
        print(f"library: {envs['qpod']['LD_PRELOAD']}; rules: {envs['qpod']['QPOD_RULES']}\n")

        if "work" not in args.skip:
            clone = work / "clone"
            subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(clone)], check=True)
            tests = work / "pytests"
            tests.mkdir()
            for i in range(4):
                (tests / f"test_{i}.py").write_text(PYTESTS)
            cproj = work / "cproj"
            cproj.mkdir()
            for rel, text in {**c_files(20), "Makefile": MAKEFILE}.items():
                (cproj / rel).write_text(text)
            loads = {
                "git status x200": (clone, "for i in $(seq 200); do git status >/dev/null; done"),
                "pytest, 20 tests": (tests, f"{sys.executable} -m pytest -q -p no:cacheprovider >/dev/null"),
                "make, 20 C files": (cproj, "make -s clean && make -s"),
            }
            times: dict[tuple[str, str], list[float]] = {(w, e): [] for w in loads for e in envs}
            for i in range(args.rounds):
                for w, (cwd, script) in loads.items():
                    for e, env in envs.items() if i % 2 else reversed(envs.items()):
                        times[(w, e)].append(timed(["bash", "-c", script], cwd, env))
            print(
                f"host work, {args.rounds} alternating rounds: median seconds per run; the ratios are the medians "
                "of each round's (its runs side by side in time); spread: half the IQR of the runs"
            )
            print(f"  {'workload':18}{'none':>9}{'empty':>9}{'qpod':>9}  {'qpod/none':>10}{'qpod/empty':>11}  spread")
            for w in loads:
                m = {e: statistics.median(times[(w, e)]) for e in envs}
                rn, re_ = (median_pairs(times[(w, "qpod")], times[(w, e)]) for e in ("none", "empty"))
                sp = max(spread(times[(w, e)]) for e in envs)
                print(
                    f"  {w:18}{m['none']:>9.3f}{m['empty']:>9.3f}{m['qpod']:>9.3f}  {rn:>10.3f}{re_:>11.3f}  "
                    f"{sp * 100:.1f}%"
                )
            if "base" in envs:
                for w in loads:
                    print(f"  {w:18}qpod/base {median_pairs(times[(w, 'qpod')], times[(w, 'base')]):.3f}")
            print("  target: qpod/none at most 1.01 (goal: not measurable)\n")

        if "true" not in args.skip:
            spawner = compile_c(build, work / "spawner", SPAWNER_C)
            us: dict[str, list[float]] = {e: [] for e in envs}
            for i in range(args.rounds):
                for e, env in envs.items() if i % 2 else reversed(envs.items()):
                    out = subprocess.run(
                        [str(spawner), "2000", "/bin/true"], cwd=work, env=env, capture_output=True, text=True
                    )
                    if out.returncode or out.stderr:
                        raise SystemExit(f"the spawner failed ({e}): {out.stderr}")
                    us[e].append(float(out.stdout))
            m = {e: statistics.median(v) for e, v in us.items()}
            # the ratio of each round's runs (side by side in time), their median
            r = median_pairs(us["qpod"], us["empty"])
            print(f"2,000 spawns of /bin/true, {args.rounds} alternating rounds: median microseconds per spawn")
            print(
                f"  none {m['none']:.1f}  empty {m['empty']:.1f}  qpod {m['qpod']:.1f}   empty/none "
                f"{median_pairs(us['empty'], us['none']):.3f}  qpod/empty {r:.3f}  "
                f"qpod/none {median_pairs(us['qpod'], us['none']):.3f} (ratios: medians of the rounds')"
                f"   (target qpod/empty at most 1.01: {'met' if r <= 1.01 else 'MISSED'})"
            )
            if "base" in envs:
                print(f"  base {m['base']:.1f}  qpod/base {median_pairs(us['qpod'], us['base']):.3f}")
            print()

        if "faults" not in args.skip:
            per: dict[str, list[float]] = {e: [] for e in envs}
            for _ in range(3):
                for e, env in envs.items():
                    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
                    subprocess.run(["bash", "-c", "for i in $(seq 300); do /bin/true; done"], env=env, check=True)
                    per[e].append((resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - before) / 300)
            low = {e: min(v) for e, v in per.items()}  # the least disturbed of 3 runs
            print("minor page faults per host command launched by bash (bash's and the command's)")
            figures = "  ".join(f"{e} {v:.1f}" for e, v in low.items())
            print(f"  {figures}   qpod-empty {low['qpod'] - low['empty']:+.1f}\n")

        if "memory" not in args.skip:
            sleep = os.path.realpath("/bin/sleep")
            mem: dict[str, list[dict[str, int]]] = {e: [] for e in envs}
            for _ in range(max(5, args.rounds // 2)):
                for e, env in envs.items():
                    p = subprocess.Popen([sleep, "60"], env=env)
                    try:
                        wait_sleeping(p.pid, sleep)
                        mem[e].append(smaps_rollup_kb(p.pid))
                    finally:
                        p.kill()
                        p.wait()
            print("memory of a sleeping /bin/sleep (smaps_rollup, median kB)")
            fields = ("Rss", "Pss", "Private_Clean", "Private_Dirty")
            print("  " + "".join(f"{f:>15}" for f in ("", *fields)))
            med = {e: {f: statistics.median(x[f] for x in mem[e]) for f in fields} for e in envs}
            for e in envs:
                print("  " + f"{e:>15}" + "".join(f"{med[e][f]:>15.0f}" for f in fields))
            for a, b in (("qpod", "none"), ("qpod", "empty")):
                print("  " + f"{a + '-' + b:>15}" + "".join(f"{med[a][f] - med[b][f]:>15.0f}" for f in fields))
            added = med["qpod"]["Rss"] - med["none"]["Rss"]
            verdict = "met" if added <= 100 else "MISSED"
            print(f"  target: at most 100 kB added (Rss qpod-none {added:.0f} kB: {verdict})\n")

        if args.venv:
            bb = images.build_busybox_image()
            repos = {}
            for i, v in enumerate(args.venv):
                repos[v] = setup_repo(work, f"benchvenv{i}", bb, base, qpod, {})
                names.append(container_name(f"benchvenv{i}", str(repos[v])))
                timed([f"{v}/bin/qpod", "exec", "true"], repos[v], base)  # warm: container, launch spec
            t: dict[str, list[float]] = {v: [] for v in args.venv}
            for _ in range(args.runs):
                for v in args.venv:
                    t[v].append(timed([f"{v}/bin/qpod", "exec", "true"], repos[v], base))
            print(f"warm qpod exec true, {args.runs} alternating runs (median):")
            for v in args.venv:
                with open(f"{v}/bin/qpod", "rb") as f:
                    kind = "the native client" if f.read(4) == b"\x7fELF" else "a Python console script"
                print(f"  {v}/bin/qpod ({kind}): {statistics.median(t[v]) * 1000:.2f} ms")
            print()

        if "makeq" not in args.skip:
            deb = images.build_debian11_image()
            drepo = setup_repo(work, "benchdeb", deb, base, qpod, {**c_files(50), "Makefile": MAKEFILE})
            names.append(container_name("benchdeb", str(drepo)))
            subprocess.run([qpod_shell, "-c", "make -s -j2"], cwd=drepo, env=base, check=True, capture_output=True)
            xs, ys = shell_loop(drepo, base, args.runs, "make -q", "QPOD_OFF=1 make -q", shell=qpod_shell)
            print(f"make -q, up to date, {len(xs)} alternating pairs in qpod-shell (median):")
            report("redirected make -q (container warm)", xs, ys, "host make -q", "target at most 1.3, goal 1.2")
    finally:
        for n in names:
            subprocess.run([podman, "rm", "-f", "-t", "0", n], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
