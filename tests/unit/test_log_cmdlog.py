"""The command log: concurrent writers lose nothing; rotation keeps every record."""

import json
import multiprocessing
import os
from pathlib import Path

from conftest import run_qpod

from qpod_engine.log import cmdlog


def _writer(log: str, who: int, n: int, max_bytes: int) -> None:
    for i in range(n):
        cmdlog.append(
            {"who": who, "i": i, "argv": ["make", "x" * 300], "status": i % 3, "repo": "/r", "env": "e"},
            max_bytes=max_bytes,
            keep=50,
            log=log,
        )


def _run_writers(log: str, procs: int, n: int, max_bytes: int) -> list[dict]:
    ctx = multiprocessing.get_context("fork")
    ps = [ctx.Process(target=_writer, args=(log, w, n, max_bytes)) for w in range(procs)]
    for p in ps:
        p.start()
    for p in ps:
        p.join()
        assert p.exitcode == 0
    return list(cmdlog.read(log))


def test_four_writers_ten_records_each(tmp_path: Path) -> None:
    log = str(tmp_path / "commands.log")
    recs = _run_writers(log, 4, 10, 10 * 1024 * 1024)
    assert len(recs) == 40
    assert sorted((r["who"], r["i"]) for r in recs) == [(w, i) for w in range(4) for i in range(10)]
    raw = Path(log).read_bytes().splitlines()
    assert all(json.loads(line)["argv"][1] == "x" * 300 for line in raw)  # no torn line


def test_rotation_under_concurrency_loses_nothing(tmp_path: Path) -> None:
    log = str(tmp_path / "commands.log")
    recs = _run_writers(log, 4, 100, 20_000)  # ~400 B each: rotates every ~50 records
    assert len(cmdlog.files(log)) > 5
    assert len(recs) == 400
    for w in range(4):  # each writer's records in its own order, across files
        assert [r["i"] for r in recs if r["who"] == w] == list(range(100))


def test_rotation_keeps_bounded_number_of_files(tmp_path: Path) -> None:
    log = str(tmp_path / "commands.log")
    for i in range(200):
        cmdlog.append({"i": i}, max_bytes=200, keep=3, log=log)
    assert len(cmdlog.files(log)) == 4  # current + 3 rotated
    assert sum(os.path.getsize(f) for f in cmdlog.files(log)) <= 4 * 200


def test_follower_sees_appends_across_rotation(tmp_path: Path) -> None:
    log = str(tmp_path / "commands.log")
    cmdlog.append({"i": -1}, log=log)
    f = cmdlog.Follower(log)
    seen = []
    for i in range(30):
        cmdlog.append({"i": i}, max_bytes=100, keep=100, log=log)
        seen += [r["i"] for r in f.poll()]
    seen += [r["i"] for r in f.poll()]
    assert seen == list(range(30))


def test_qpod_log_filters(qpod_home: Path) -> None:
    for i, (env, status) in enumerate([("a", 0), ("b", 2), ("a", 1)]):
        cmdlog.append(
            {
                "time": f"2026-01-01T00:00:0{i}",
                "repo": f"/r/{env}",
                "env": env,
                "argv": ["make", str(i)],
                "status": status,
                "duration": 0.5,
            }
        )
    out = run_qpod("log", "--json", "--env", "a").stdout.splitlines()
    assert [json.loads(x)["argv"][1] for x in out] == ["0", "2"]
    out = run_qpod("log", "--json", "--failed").stdout.splitlines()
    assert [json.loads(x)["argv"][1] for x in out] == ["1", "2"]
    out = run_qpod("log", "--json", "-n", "1").stdout.splitlines()
    assert [json.loads(x)["argv"][1] for x in out] == ["2"]
    out = run_qpod("log", "--json", "--repo", "/r/b").stdout.splitlines()
    assert [json.loads(x)["argv"][1] for x in out] == ["1"]


def test_a_torn_record_does_not_swallow_the_next(tmp_path: Path) -> None:
    log = str(tmp_path / "commands.log")
    cmdlog.append({"i": 1}, log=log)
    with open(log, "ab") as f:
        f.write(b'{"i": 2, "argv": ["ma')  # what a full disk leaves behind
    cmdlog.append({"i": 3}, log=log)
    assert [r["i"] for r in cmdlog.read(log)] == [1, 3]


def test_repo_filter_is_a_path_not_a_prefix() -> None:
    flt = cmdlog.Filter(repo="/src/app")
    assert flt.match({"repo": "/src/app"}) and flt.match({"repo": "/src/app/"[:-1]})
    assert not flt.match({"repo": "/src/app2"})
    assert cmdlog.Filter(repo="/src/app/sub").match({"repo": "/src/app"})  # asked from inside the repository
