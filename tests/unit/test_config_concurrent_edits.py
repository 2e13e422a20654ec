"""Every read-modify-write of the config takes the config lock and reads again under it: 20
``qpod init`` at once leave 20 bindings (6 survived without the lock), and the compiled rules
know every one of them."""

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from conftest import REPO_ROOT, run_qpod

from qpod_engine.base import paths
from qpod_engine.config import bindings


def _start(*args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "qpod_engine.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_twenty_concurrent_inits_all_survive(qpod_home: Path, make_repo: Callable[..., Path]) -> None:
    assert run_qpod("env", "add", "e", "--image", "localhost/x:1").returncode == 0
    assert run_qpod("env", "add", "f", "--image", "localhost/y:1").returncode == 0
    repos = [make_repo(f"r{i:02d}") for i in range(20)]
    procs = [_start("init", "e", cwd=r) for r in repos]
    procs += [_start("init", "f", "--branch", f"rel/{i}.*", cwd=r) for i, r in enumerate(repos[:5])]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert out.startswith("bound ")
    binds = bindings.load_bindings()
    assert sorted(binds) == sorted(os.path.realpath(r) for r in repos)
    for i, r in enumerate(repos[:5]):
        assert binds[os.path.realpath(r)].branches == {f"rel/{i}.*": "f"}
    # the snapshot compiled last saw them all (compiles run one after the other, under the lock)
    with open(paths.snapshot_file()) as f:
        snap = json.load(f)
    assert sorted(repo["root"] for repo in snap["repos"]) == sorted(binds)


def test_concurrent_env_adds_and_unbinds(qpod_home: Path, make_repo: Callable[..., Path]) -> None:
    assert run_qpod("env", "add", "e", "--image", "localhost/x:1").returncode == 0
    repos = [make_repo(f"u{i:02d}") for i in range(10)]
    for r in repos:
        assert run_qpod("init", "e", cwd=r).returncode == 0
    procs = [_start("unbind", cwd=r) for r in repos[:5]]
    procs += [_start("env", "add", f"n{i}", "--image", f"localhost/n:{i}") for i in range(5)]
    procs += [_start("init", "e", "--branch", "b*", cwd=r) for r in repos[5:]]
    for p in procs:
        _out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    binds = bindings.load_bindings()
    assert sorted(binds) == sorted(os.path.realpath(r) for r in repos[5:])
    assert all(b.branches == {"b*": "e"} and b.environment == "e" for b in binds.values())
    assert sorted(run_qpod("env", "list", "--json").stdout.count(f'"n{i}"') for i in range(5)) == [1] * 5
