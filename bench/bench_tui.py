"""qpod tui with a big config: 200 repositories, 50 environments, 100 containers, 100,000 log records.

    python bench/bench_tui.py [--records 100000] [--runs 3] [--podman]

Builds that config in a temp dir (real git repositories, real environment files, a real
command log rotated as the launcher rotates it), then measures:

- first paint in a real terminal: ``qpod tui`` started in tmux until the repository table is
  on screen (Python start and imports included);
- in a fresh headless process: first paint, the longest UI stall while the containers view
  (on screen, the log indexed) refreshes its rows and CPU/memory figures five times, opening the
  log view, paging through it, each filter's scan time and the longest UI stall while a filter
  scans, and the peak memory.

Targets (issue 10): first paint at most 0.5 s, no frame over 50 ms during a containers refresh,
at most 150 MB.

Containers: 100 synthetic rows unless ``--podman`` creates 100 real (never started) labelled
containers, removed afterwards (they would show up in other tests' ``qpod ps`` meanwhile).
"""

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LOG_MAX_BYTES = 20 * 1024 * 1024  # the launcher's default rotation size


# --- the data -------------------------------------------------------------------------------


def build(work: Path, repos: int, envs: int, records: int) -> list[str]:
    """Config and state for the benchmark under ``work``; returns the repository roots."""
    import pygit2

    from qpod_engine.config import bindings, snapshot
    from qpod_engine.config import environments as config

    for i in range(envs):
        config.save_environment(
            config.Environment(
                name=f"env-{i:02d}",
                image=f"localhost/bench-{i % 5}:latest",
                mounts=["/opt/tools:/opt/tools:ro"],
                env={"CC": "gcc"},
            )
        )
    roots = []
    binds: dict[str, bindings.Binding] = {}
    for i in range(repos):
        root = work / "src" / f"product-{i:03d}"
        pygit2.init_repository(str(root), initial_head="main")
        roots.append(str(root))
        bindings.bind(binds, str(root), f"env-{i % envs:02d}", None)
        if i % 7 == 0:
            bindings.bind(binds, str(root), f"env-{(i + 1) % envs:02d}", "release/*")
    bindings.save_bindings(binds)
    snapshot.compile_config()
    write_log(Path(os.environ["QPOD_STATE_DIR"]) / "commands.log", records, roots, envs)
    return roots


def write_log(log: Path, count: int, roots: list[str], envs: int) -> None:
    """``count`` records, rotated into commands.log.N at LOG_MAX_BYTES like the launcher does."""
    commands = (["make", "-j8"], ["make", "test"], ["gdb", "-batch", "./app"], ["waf", "build"], ["make", "install"])
    log.parent.mkdir(parents=True, exist_ok=True)
    chunks: list[bytes] = []
    size = 0
    files: list[list[bytes]] = []
    t0 = time.time() - count * 10
    for i in range(count):
        root = roots[i % len(roots)]
        env = f"env-{i % envs:02d}"
        argv = commands[i % len(commands)]
        rec = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t0 + i * 10)) + ".000+00:00",
            "repo": root,
            "branch": "main",
            "env": env,
            "container": f"qpod-{env}-{os.path.basename(root)}-0badc0de",
            "cwd": root + "/build",
            "argv": argv,
            "path": f"/usr/bin/{argv[0]}",
            "reason": f"'{argv[0]}' is a command of environment '{env}'",
            "status": 2 if i % 9 == 0 else 0,
            "duration": round(i % 600 / 7, 3),
        }
        line = (json.dumps(rec, separators=(",", ":")) + "\n").encode()
        if size + len(line) > LOG_MAX_BYTES:
            files.append(chunks)
            chunks, size = [], 0
        chunks.append(line)
        size += len(line)
    files.append(chunks)
    names = [f"{log}.{n}" for n in range(len(files) - 1, 0, -1)] + [str(log)]
    for name, lines in zip(names, files, strict=True):
        Path(name).write_bytes(b"".join(lines))


def create_containers(roots: list[str], count: int, envs: int) -> list[str]:
    from qpod_engine.podman.local_images import build_busybox_image

    image = build_busybox_image()
    env = {**os.environ, "QPOD_OFF": "1"}
    env.pop("LD_PRELOAD", None)
    names = []
    for i in range(count):
        name = f"qpod-bench-{os.getpid()}-{i:03d}"
        subprocess.run(
            [
                "podman",
                "create",
                "--name",
                name,
                "--label",
                "qpod=1",
                "--label",
                f"qpod.env=env-{i % envs:02d}",
                "--label",
                f"qpod.repo={roots[i % len(roots)]}",
                image,
                "sleep",
                "1",
            ],
            check=True,
            capture_output=True,
            env=env,
        )
        names.append(name)
    return names


def remove_containers(names: list[str]) -> None:
    if names:
        env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
        subprocess.run(["podman", "rm", "-f", *names], capture_output=True, env={**env, "QPOD_OFF": "1"})


# --- first paint in a real terminal ---------------------------------------------------------


def tmux_first_paint(marker: str) -> float | None:
    """Seconds from launching ``qpod tui`` in tmux until ``marker`` is on its screen."""
    if not shutil.which("tmux"):
        return None
    name = f"qpod-bench-{os.getpid()}"
    env = " ".join(f"{k}={os.environ[k]}" for k in ("QPOD_CONFIG_DIR", "QPOD_STATE_DIR"))
    cmd = f"env {env} TERM=xterm-256color COLUMNS=160 LINES=45 {sys.executable} -m qpod_engine.cli tui"
    start = time.perf_counter()
    subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "160", "-y", "45", cmd], check=True)
    try:
        while time.perf_counter() - start < 30:
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", name], capture_output=True, text=True).stdout
            if marker in screen:
                return time.perf_counter() - start
            time.sleep(0.01)
        return None
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)


# --- headless measurements (in a fresh process) ---------------------------------------------


def child(containers: int, real_podman: bool) -> dict[str, float]:
    start = time.perf_counter()
    from qpod_engine.api import ContainerRow, Engine
    from qpod_tui.app import make_app

    class BenchEngine(Engine):
        """The real engine; containers synthetic unless --podman made real ones."""

        stats_calls = 0

        def containers(self) -> list[ContainerRow]:
            if real_podman:
                return super().containers()
            return [
                ContainerRow(
                    f"qpod-env-{i % 50:02d}-product-{i:03d}-0badc0de",
                    f"{i:012x}",
                    f"env-{i % 50:02d}",
                    f"/src/product-{i:03d}",
                    "localhost/bench:latest",
                    "running",
                    time.time() - 60 * i,
                )
                for i in range(containers)
            ]

        def container_states(self) -> dict[str, str]:
            return {c.name: c.state for c in self.containers()}

        def image_present(self, ref: str) -> bool:
            return super().image_present(ref) if real_podman else False

        def container_stats(self, ids: list[str], hosts: dict[str, str] | None = None) -> dict[str, Any]:
            if real_podman:
                return super().container_stats(ids, hosts)
            from qpod_engine.podman.stats import Stats

            # figures that move between refreshes, as a busy machine's do (every CPU cell changes)
            self.stats_calls += 1
            return {
                cid: Stats(
                    cpu=(i * 7 + self.stats_calls * 13) % 300 + 0.5,
                    memory=(40 + i + self.stats_calls % 3) << 20,
                    memory_limit=16 << 30,
                    pids=3,
                )
                for i, cid in enumerate(ids)
            }

    figures: dict[str, float] = {}
    app = make_app(BenchEngine(), watch=True, freeze_gc=True)  # as qpod tui runs it
    # every composed frame, as the terminal would receive it (headless: composed, not written)
    frames: list[float] = []
    display = app._display

    def spy(screen, renderable) -> None:  # type: ignore[no-untyped-def]
        if renderable is not None:
            frames.append(time.perf_counter())
        display(screen, renderable)

    app._display = spy  # type: ignore[method-assign]

    async def until(cond, timeout: float = 60.0) -> None:
        t = time.perf_counter()
        while not cond():
            assert time.perf_counter() - t < timeout, "timed out"
            await asyncio.sleep(0.001)

    async def next_frame(after: int) -> float:
        await until(lambda: len(frames) > after)
        return frames[after]

    async def run(pilot) -> None:
        repos = app.view("repositories")
        await until(lambda: repos.table.row_count == 200)
        figures["first_paint_s"] = await next_frame(len(frames)) - start
        await until(lambda: getattr(app, "views_ready", True))  # the others are mounted after the first paint
        containers_view = app.view("containers")
        await until(lambda: containers_view.table.row_count >= containers)  # (+ any other qpod containers)
        figures["all_views_loaded_s"] = time.perf_counter() - start

        # the containers view refreshing its rows and CPU/memory figures: the longest frame gap,
        # once the start is over (the log is indexed a second after start, in a worker)
        log = app.view("log")
        await until(lambda: getattr(log, "scanned", 0) >= 100_000 - 1)
        shown = containers_view.stats
        app.action_show_view("containers")  # (its first draw, and the reload switching to it starts,
        await until(lambda: containers_view.stats is not shown)  # are not refreshes: not timed)
        await next_frame(len(frames))
        await asyncio.sleep(0.1)
        stalls: list[float] = []
        prev = [time.perf_counter()]

        def beat() -> None:
            now = time.perf_counter()
            stalls.append(now - prev[0])
            prev[0] = now

        beat_timer = app.set_interval(0.01, beat)
        for _ in range(5):
            old = containers_view.stats
            containers_view.load()
            await until(lambda old=old: containers_view.stats is not old)  # type: ignore[misc]
            await asyncio.sleep(0.05)
        beat_timer.stop()
        figures["containers_refresh_max_stall_ms"] = max(stalls, default=0) * 1000

        t = time.perf_counter()
        app.action_show_view("log")
        await until(lambda: len(log.table.rows) >= 100_000 - 1)
        figures["log_view_open_s"] = await next_frame(len(frames)) - t
        figures["log_records"] = len(log.table.rows)

        table = log.table
        steps: dict[str, list[float]] = {"page": [], "jump": [], "line": []}
        actions = ["page_up"] * 40 + ["first"] + ["page_down"] * 40 + ["last"] + ["cursor_up"] * 40
        for action in actions:
            n, t = len(frames), time.perf_counter()
            getattr(table, f"action_{action}")()  # what the key runs
            kind = "page" if action.startswith("page") else "line" if action == "cursor_up" else "jump"
            steps[kind].append(await next_frame(n) - t)
            await asyncio.sleep(0.02)  # a fast key repeat
        for kind, times in steps.items():
            figures[f"scroll_{kind}_median_ms"] = statistics.median(times) * 1000
            figures[f"scroll_{kind}_max_ms"] = max(times) * 1000

        # the longest gap between 10 ms ticks while a filter scans: how long the UI could not react
        gaps: list[float] = []
        last = [time.perf_counter()]

        def tick() -> None:
            now = time.perf_counter()
            gaps.append(now - last[0])
            last[0] = now

        timer = app.set_interval(0.01, tick)
        steps_: list[tuple[str, Any]] = [
            ("text", lambda: setattr(log.query_one("#log-text"), "value", "gdb")),
            ("text_and_failed", lambda: setattr(log.query_one("#log-failed"), "value", True)),
            ("env", lambda: setattr(log.query_one("#log-env"), "value", "env-07")),
            ("cleared", log.action_clear_filter),
        ]
        for name, change in steps_:
            generation = log.generation
            gaps.clear()
            last[0] = t = time.perf_counter()
            change()  # (typed text waits FILTER_DELAY for the typing to stop: included)
            await until(lambda g=generation: log.generation > g and not log.scanning)  # type: ignore[misc]
            figures[f"filter_{name}_s"] = await next_frame(len(frames)) - t
            figures[f"filter_{name}_rows"] = len(log.table.rows)
            figures[f"filter_{name}_max_ui_stall_ms"] = max(gaps, default=0) * 1000
        timer.stop()
        figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        app.exit()

    app.run(headless=True, size=(160, 45), auto_pilot=run)
    return figures


# --- driver ---------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(
        description="qpod tui with 200 repositories, 50 environments, 100 containers, 100,000 log records"
    )
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--podman", action="store_true", help="create 100 real containers instead of synthetic rows")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(100, args.podman)))
        return

    work = Path(tempfile.mkdtemp(prefix="qpod-bench-tui-"))
    os.environ["QPOD_CONFIG_DIR"] = str(work / "config")
    os.environ["QPOD_STATE_DIR"] = str(work / "state")
    os.environ.pop("LD_PRELOAD", None)
    names: list[str] = []
    try:
        t = time.perf_counter()
        roots = build(work, 200, 50, args.records)
        print(
            f"built 200 repositories, 50 environments, {args.records:,} log records in "
            f"{time.perf_counter() - t:.1f} s ({work})"
        )
        if args.podman:
            names = create_containers(roots, 100, 50)
        paints = [p for p in (tmux_first_paint(roots[0]) for _ in range(args.runs)) if p is not None]
        runs = []
        for _ in range(args.runs):
            cmd = [sys.executable, __file__, "--child"] + (["--podman"] if args.podman else [])
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"the measuring process failed:\n{done.stderr[-3000:]}")
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        remove_containers(names)
        shutil.rmtree(work, ignore_errors=True)

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    print(f"\nmedians of {args.runs} runs")
    if paints:
        print(
            f"first paint, qpod tui in tmux (process start to table on screen): {statistics.median(paints):.2f} s"
            f"  (runs: {', '.join(f'{p:.2f}' for p in paints)})"
        )
    print(f"first paint, headless (imports to 200 rows drawn):                {med('first_paint_s'):.2f} s")
    print(f"all views loaded (containers included):                           {med('all_views_loaded_s'):.2f} s")
    print(
        f"containers view refresh (rows + CPU/memory), longest UI stall:   "
        f"{med('containers_refresh_max_stall_ms'):.0f} ms"
    )
    print(
        f"log view open ({int(med('log_records')):,} records indexed and drawn):        {med('log_view_open_s'):.2f} s"
    )
    for kind, what in (("line", "one line"), ("page", "one page"), ("jump", "first/last record")):
        print(
            f"log key to frame, {what + ':':18} median {med(f'scroll_{kind}_median_ms'):5.1f} ms, "
            f"max {med(f'scroll_{kind}_max_ms'):5.1f} ms"
        )
    for name in ("text", "text_and_failed", "env", "cleared"):
        print(
            f"log filter {name:16} {int(med(f'filter_{name}_rows')):>7,} rows in {med(f'filter_{name}_s'):.2f} s,"
            f" longest UI stall {med(f'filter_{name}_max_ui_stall_ms'):.0f} ms"
        )
    print(f"peak memory (max RSS of the TUI process):                          {med('peak_rss_mb'):.0f} MB")


if __name__ == "__main__":
    main()
