"""What the preload library costs a program launch that stays on the host.

A small C spawner does ``posix_spawn`` + ``waitpid`` of ``/bin/true`` in a loop, run with no
preloaded library, with an empty one (the floor: what the dynamic loader charges for any
LD_PRELOAD) and with qpod's, each from a directory outside any watched root and from inside one
(``/bin/true`` is not on the root's list, so the library reads the rules and decides "host").
A fourth set-up, an empty library linked with qpod's flags, separates what the link layout
saves from what the library's code costs. The spawner is itself preloaded, so its spawn goes
through the hook; the children load the library too. Runs of all set-ups alternate, so drift
hits them alike; the medians of the per-run means are compared side by side.

    python bench/bench_preload.py [--rounds 12] [--spawns 300]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from _common import SPAWNER_C, build_module, compile_c  # noqa: E402 - bench/, beside this script

from qpod_engine.config.rules import seal_rules  # noqa: E402 - the checkout's, next to this script

# the hook alone: execve of a missing file fails in the kernel at once, so the loop measures the
# decision (stat of the rules, getcwd, the cached rules) on top of a bare system call
DECIDE_C = r"""
#include <stdio.h>
#include <time.h>
#include <unistd.h>
extern char **environ;
int main(void) {
    char *args[] = {"make", NULL};
    struct timespec a, b;
    int n = 100000;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < n; i++)
        execve("/nonexistent/make", args, environ);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.3f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / 1e3 / n);
    return 0;
}
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--spawns", type=int, default=300, help="spawns per run")
    args = ap.parse_args()
    build = build_module()
    with tempfile.TemporaryDirectory(prefix="qpod-bench-") as tmp:
        t = Path(tmp)
        qpod_lib = build.compile_library(t / "qpod" / build.LIB_NAME)  # the current source
        empty_lib = build.compile_empty(t / "empty" / "libempty.so")
        (t / "e.c").write_text("int qpod_empty_preload;\n")  # the same, linked like qpod's library
        empty_flags = build.compile_library(t / "empty2" / "libempty.so", [t / "e.c"])
        spawner = compile_c(build, t / "spawner", SPAWNER_C)
        decider = compile_c(build, t / "decider", DECIDE_C)
        watched, outside = t / "repo", t / "elsewhere"
        watched.mkdir()
        outside.mkdir()
        rules = t / "rules"
        rules.write_text(
            seal_rules(
                f"qpod-rules\t1\nlauncher\t{sys.executable}\t-S\t/nonexistent/launch.py\n"
                f"root\t{t / 'other'}\tmake\nroot\t{watched}\tmake\twaf\tgdb\n"
            )
        )
        base = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("QPOD_")}
        libs = {
            "none": {},
            "empty": {"LD_PRELOAD": str(empty_lib)},
            "empty2": {"LD_PRELOAD": str(empty_flags)},
            "qpod": {
                "LD_PRELOAD": str(qpod_lib),
                "QPOD_PRELOAD": str(qpod_lib),
                "QPOD_RULES": str(rules),
                "QPOD_SHELL": "1",
            },
        }
        setups = [(where, cwd, lib) for where, cwd in (("outside", outside), ("inside", watched)) for lib in libs]
        means: dict[tuple[str, str], list[float]] = {(w, lib): [] for w, _, lib in setups}
        for _ in range(args.rounds):
            for where, cwd, lib in setups:
                out = subprocess.run(
                    [str(spawner), str(args.spawns), "/bin/true"],
                    cwd=cwd,
                    env={**base, **libs[lib]},
                    capture_output=True,
                    text=True,
                    check=True,
                )
                if out.stderr:
                    raise SystemExit(f"unexpected output from the spawner ({lib}, {where}): {out.stderr}")
                means[(where, lib)].append(float(out.stdout))
        decide_us = {}
        qpod_env = {**base, **libs["qpod"]}
        no_rules = {**qpod_env, "QPOD_RULES": "/nonexistent"}
        for what, env in (("no library", base), ("qpod, no rules", no_rules), ("qpod, rules", qpod_env)):
            runs = [
                float(
                    subprocess.run(
                        [str(decider)], cwd=watched, env=env, capture_output=True, text=True, check=True
                    ).stdout
                )
                for _ in range(3)
            ]
            decide_us[what] = min(runs)

    total = args.rounds * args.spawns * len(setups)
    print(
        f"posix_spawn + waitpid of /bin/true: {args.rounds} alternating runs of {args.spawns} spawns per set-up "
        f"({total} spawns); median of the run means, microseconds per spawn\n"
    )
    print(
        f"{'where':<9}{'no lib':>10}{'empty lib':>11}{'qpod lib':>10}   {'empty/none':>10}{'qpod/empty':>11}"
        f"{'qpod/none':>10}   {'empty, qpod flags':>17}{'qpod/that':>10}"
    )
    ratios = {}
    for where in ("outside", "inside"):
        m = {lib: statistics.median(means[(where, lib)]) for lib in libs}
        ratios[where] = m["qpod"] / m["empty"]
        print(
            f"{where:<9}{m['none']:>10.1f}{m['empty']:>11.1f}{m['qpod']:>10.1f}   {m['empty'] / m['none']:>10.3f}"
            f"{ratios[where]:>11.3f}{m['qpod'] / m['none']:>10.3f}   {m['empty2']:>17.1f}"
            f"{m['qpod'] / m['empty2']:>10.3f}"
        )
    print(
        "\nthe decision alone (execve of a missing file in a watched repo, microseconds per call): "
        + ", ".join(f"{k} {v:.2f}" for k, v in decide_us.items())
    )
    print("\noutside: any cwd not under a watched root; inside: cwd in a watched root, the command stays on the host")
    print("empty lib: cc -O2 -fPIC -shared; empty, qpod flags: linked as qpod's library is (two load segments)")
    print(
        f"targets: qpod/empty <= 1.03 outside ({'met' if ratios['outside'] <= 1.03 else 'MISSED'}), "
        f"<= 1.06 inside ({'met' if ratios['inside'] <= 1.06 else 'MISSED'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
