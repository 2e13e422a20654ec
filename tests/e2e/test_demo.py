"""The main job end to end: a real Debian 11 environment builds an old branch with gcc 10."""

import json
import subprocess
from pathlib import Path

import pytest
from conftest import remove_containers_of, run_qpod

pytestmark = [pytest.mark.podman, pytest.mark.demo]


@pytest.mark.timeout(1500)  # on a fresh machine the demo builds the Debian 11 image first
def test_demo_builds_with_gcc10_in_container(qpod_home: Path, tmp_path: Path) -> None:
    repo = tmp_path / "legacy"
    try:
        r = run_qpod("demo", "--dir", str(repo), timeout=1500)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "host make exit status: 2" in r.stdout  # the host's gcc 12 rejects the old code
        assert "hello from the 2018 branch, built by gcc 10." in r.stdout
        comment = subprocess.run(
            ["readelf", "-p", ".comment", str(repo / "legacy")], capture_output=True, text=True
        ).stdout
        assert "GCC: (Debian 10." in comment and "12." not in comment
        # the build went through the launcher: one record per redirected command
        recs = [json.loads(x) for x in run_qpod("log", "--json", "--repo", str(repo)).stdout.splitlines()]
        assert [r["argv"] for r in recs] == [["make"], ["./legacy"]]
        assert all(r["env"] == "debian11" and r["status"] == 0 for r in recs)
        # the second sample: its environment built from its own .qpod.yaml and Containerfile
        own = tmp_path / "legacy-own-env"
        assert "environment: the branch's own Containerfile" in r.stdout
        comment = subprocess.run(
            ["readelf", "-p", ".comment", str(own / "legacy")], capture_output=True, text=True
        ).stdout
        assert "GCC: (Debian 10." in comment
        mine = [json.loads(x) for x in run_qpod("log", "--json", "--repo", str(own)).stdout.splitlines()]
        assert [(x["argv"], x["env"], x["status"]) for x in mine] == [
            (["make"], ".qpod.yaml", 0),
            (["./legacy"], ".qpod.yaml", 0),
        ]
        # gdb is there and can run the program (SYS_PTRACE, seccomp unconfined)
        g = run_qpod("exec", "gdb", "-batch", "-ex", "run", "./legacy", cwd=repo, timeout=120)
        assert g.returncode == 0, g.stderr
        assert "hello from the 2018 branch" in g.stdout and "exited normally" in g.stdout
    finally:
        remove_containers_of(str(repo))
        remove_containers_of(str(tmp_path / "legacy-own-env"))
