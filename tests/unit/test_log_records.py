"""The command log's records: one with a wrong type is skipped and counted, never fatal;
``qpod log -f`` misses nothing across rotations; start records (written when a redirected
command begins) are merged with their complete records, and a start without its end is running
while its launcher lives, lost otherwise."""

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT, run_qpod, wait_until

from qpod_engine.base import paths
from qpod_engine.log import cmdlog

GOOD = {
    "time": "2026-01-01T00:00:00.000+00:00",
    "repo": "/r",
    "branch": "main",
    "env": "e",
    "container": "c",
    "cwd": "/r",
    "argv": ["make", "ok"],
    "path": "/usr/bin/make",
    "reason": "x",
    "status": 0,
    "duration": 0.5,
}
BAD_LINES = [
    '{"time":5}',
    '{"duration":"slow"}',
    '{"duration":1e308}',
    '{"duration":NaN}',
    '{"argv":5}',
    '{"argv":["make",3]}',
    '{"status":"0"}',
    '{"status":true}',
    "[1,2]",
    '"just a string"',
    "not json",
    '{"repo":["/r"]}',
    '{"pid":"12"}',
    '{"duration":1e400}',
]


def _write_log(lines: list[str]) -> None:
    log = Path(paths.log_file())
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        for ln in lines:
            f.write(ln + "\n")


def test_malformed_records_are_skipped_and_counted(qpod_home: Path) -> None:
    good = [json.dumps({**GOOD, "argv": ["make", f"t{i}"]}) for i in range(3)]
    _write_log([good[0], *BAD_LINES, good[1], good[2]])
    for args in (["log"], ["log", "--json"], ["log", "--failed"], ["log", "--repo", "/r", "-n", "100"]):
        r = run_qpod(*args)
        assert r.returncode == 0, (args, r.stderr)
        assert f"qpod: {len(BAD_LINES)} malformed records skipped" in r.stderr, (args, r.stderr)
    out = run_qpod("log", "--json").stdout.splitlines()
    assert [json.loads(x)["argv"][1] for x in out] == ["t0", "t1", "t2"]
    text = run_qpod("log").stdout
    assert text.count("\n") == 3 and "0.50s" in text


def test_the_tui_index_survives_malformed_records(qpod_home: Path) -> None:
    from qpod_engine.api import LogIndex
    from qpod_tui.widgets.log_table import record_cells

    _write_log([json.dumps(GOOD), *BAD_LINES, '{"duration":1e308,"argv":["make"],"status":0}'])
    index = LogIndex()
    index.refresh()
    for i in range(len(index)):
        cells = record_cells(index.record(i), 120)
        assert sum(len(t) for t, _ in cells) <= 120  # one row, whatever the record holds
    assert list(index.scan(cmdlog.Filter(text="make"))) == [0]
    assert list(index.scan(cmdlog.Filter(failed=True))) == []


def test_follow_misses_nothing_across_many_rotations(tmp_path: Path) -> None:
    log = str(tmp_path / "commands.log")
    cmdlog.append({"i": -1}, log=log)
    follower = cmdlog.Follower(log)
    seen: list[int] = []
    for i in range(80):
        cmdlog.append({"i": i, "argv": ["x" * 50]}, max_bytes=200, keep=100, log=log)
        if i % 7 == 6:  # several rotations between two polls
            seen += [r["i"] for r in follower.poll()]
    seen += [r["i"] for r in follower.poll()]
    assert seen == list(range(80))


def test_follow_after_the_file_it_read_rotated_out_of_keep(tmp_path: Path) -> None:
    log = str(tmp_path / "commands.log")
    cmdlog.append({"i": -1}, log=log)
    follower = cmdlog.Follower(log)
    for i in range(12):  # one record a file, three files kept: the follower's file is gone
        cmdlog.append({"i": i}, max_bytes=10, keep=3, log=log)
    assert [r["i"] for r in follower.poll()] == [8, 9, 10, 11]  # what is still there, in order


def test_qpod_log_follow_across_rotation_as_a_user_runs_it(qpod_home: Path) -> None:
    """``qpod log -f`` in a real process while another process writes 80 records that rotate
    the log every two records (16 of 80 were missed once)."""
    cmdlog.append({**GOOD, "argv": ["make", "before"]})
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    follower = subprocess.Popen(
        [sys.executable, "-m", "qpod_engine.cli", "log", "-f", "--json", "-n", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert follower.stdout is not None
    try:
        # following: a record appended now reaches it ("-n 0": nothing older is shown)
        def follows() -> bool:
            cmdlog.append({**GOOD, "argv": ["make", "probe"]})
            return bool(select.select([follower.stdout], [], [], 0.2)[0])

        wait_until(follows, "qpod log -f to follow the log")
        writer = (
            "import sys; from qpod_engine.log import cmdlog\n"
            "for i in range(80):\n"
            f"    cmdlog.append({{**{GOOD!r}, 'argv': ['make', 'w%d' % i]}}, max_bytes=700, keep=200)\n"
        )
        subprocess.run([sys.executable, "-c", writer], env=env, check=True)
        got: list[str] = []

        def read_one() -> bool:
            assert follower.stdout is not None
            got.append(json.loads(follower.stdout.readline())["argv"][1])
            return got[-1] == "w79"

        wait_until(read_one, lambda: f"the last record; read {got}", 120, interval=0)
    finally:
        follower.send_signal(signal.SIGINT)
        follower.wait(timeout=60)
    written = [f"w{i}" for i in range(80)]
    assert [g for g in got if g.startswith("w")] == written
    assert len(cmdlog.files()) > 20


def _start_record(rid: str, pid: int, argv: list[str], when: float | None = None) -> dict:
    t = time.time() if when is None else when
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}+00:00"
    return {**GOOD, "time": stamp, "argv": argv, "status": None, "duration": None, "id": rid, "pid": pid}


def test_start_records_merge_with_their_end(qpod_home: Path) -> None:
    live = subprocess.Popen(["sleep", "300"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        cmdlog.append({**GOOD, "argv": ["make", "old-style"]})
        cmdlog.append(_start_record("a1", os.getpid(), ["make", "finished"]))
        cmdlog.append(_start_record("b2", live.pid, ["make", "running"]))
        cmdlog.append(_start_record("c3", dead.pid, ["make", "lost"]))
        cmdlog.append(_start_record("d4", 1, ["make", "pid-reused"], when=time.time() - 1e6))
        cmdlog.append({**GOOD, "argv": ["make", "finished"], "id": "a1", "status": 2, "duration": 1.25})
        out = [json.loads(x) for x in run_qpod("log", "--json").stdout.splitlines()]
        assert [(r["argv"][1], r["status"], r.get("state")) for r in out] == [
            ("old-style", 0, None),
            ("running", None, "running"),
            ("lost", None, "lost"),
            ("pid-reused", None, "lost"),
            ("finished", 2, None),
        ]
        text = run_qpod("log").stdout.splitlines()
        assert "running" in text[1].split() and text[1].endswith("make running")
        assert "lost" in text[2].split()
        assert run_qpod("log", "--json", "--failed").stdout.count("\n") == 1  # only the one that failed
        last = [json.loads(x)["argv"][1] for x in run_qpod("log", "--json", "-n", "2").stdout.splitlines()]
        assert last == ["pid-reused", "finished"]
    finally:
        live.kill()
        live.wait()
    out = [json.loads(x) for x in run_qpod("log", "--json").stdout.splitlines()]
    assert [r.get("state") for r in out if r["argv"][1] == "running"] == ["lost"]  # its launcher is gone now


@pytest.mark.parametrize("n", [1, 2, 3, 5, None])
def test_recent_is_the_tail_of_the_merged_log(tmp_path: Path, n: int | None) -> None:
    log = str(tmp_path / "commands.log")
    seq = ["A", "S1", "S2", "B", "E2", "S3", "E1", "C", "S4"]
    for item in seq:
        rid = item[1:] if item[0] in "SE" else None
        rec = {"argv": [item], "status": None if item[0] == "S" else 0, "pid": 1, "time": "2000-01-01T00:00:00"}
        if rid:
            rec["id"] = rid
        if item[0] == "E":
            rec["argv"] = ["S" + rid]
        cmdlog.append(rec, log=log)
    merged = ["A", "B", "S2", "S3", "S1", "C", "S4"]  # ends stand where written, unfinished where started
    got = [r["argv"][0] for r in cmdlog.recent(n, log=log)]
    assert got == (merged if n is None else merged[-n:])


def test_the_tui_index_shows_commands_once_they_end_and_misses_no_rotation(tmp_path: Path) -> None:
    from qpod_engine.api import LogIndex

    log = str(tmp_path / "commands.log")
    cmdlog.append({**GOOD, "argv": ["make", "first"]}, log=log)
    index = LogIndex(log)
    index.refresh()
    for i in range(30):  # each command: a start record, then its complete record; many rotations
        cmdlog.append(_start_record(f"id{i}", os.getpid(), ["make", f"c{i}"]), max_bytes=900, keep=100, log=log)
        cmdlog.append(
            {**GOOD, "argv": ["make", f"c{i}"], "id": f"id{i}", "status": i % 2}, max_bytes=900, keep=100, log=log
        )
        if i % 10 == 9:
            index.refresh()
    cmdlog.append(_start_record("last", os.getpid(), ["make", "still-running"]), log=log)
    index.refresh()
    assert len(cmdlog.files(log)) > 10
    shown = [index.record(i)["argv"][1] for i in range(len(index))]
    assert shown == ["first", *(f"c{i}" for i in range(30))]  # no start record, no gap
    assert all(index.record(i)["status"] is not None for i in range(len(index)))
    assert [index.record(i)["argv"][1] for i in index.scan(cmdlog.Filter(failed=True))] == [
        f"c{i}" for i in range(1, 30, 2)
    ]
    assert [index.record(i)["argv"][1] for i in index.scan(cmdlog.Filter(text="c2"))] == [
        "c2",
        *(f"c{i}" for i in range(20, 30)),
    ]
