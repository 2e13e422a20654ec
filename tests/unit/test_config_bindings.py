"""qpod init / unbind / status / repos against real git repositories (pygit2 discovery)."""

import json
from pathlib import Path

import pytest
import yaml
from conftest import git, run_qpod

from qpod_engine.base import paths
from qpod_engine.config.fields import DEFAULT_COMMANDS


def add_env(name: str, image: str = "localhost/none:1") -> None:
    assert run_qpod("env", "add", name, "--image", image).returncode == 0


def test_init_from_subdirectory_binds_repo_root(qpod_home: Path, make_repo) -> None:
    add_env("e1")
    root = make_repo("r", {"a/b/c.txt": "x"})
    r = run_qpod("init", "e1", cwd=root / "a" / "b")
    assert r.returncode == 0, r.stderr
    data = yaml.safe_load(Path(paths.repositories_file()).read_text())
    assert data == {"repositories": {str(root): {"environment": "e1"}}}
    st = json.loads(run_qpod("status", "--json", cwd=root / "a").stdout)
    assert st["repository"] == str(root) and st["environment"] == "e1" and st["branch"] == "master"


def test_branch_rules_choose_environment(qpod_home: Path, make_repo) -> None:
    add_env("new")
    add_env("old")
    root = make_repo("r")
    assert run_qpod("init", "new", cwd=root).returncode == 0
    assert run_qpod("init", "old", "--branch", "release/*", cwd=root).returncode == 0
    st = json.loads(run_qpod("status", "--json", cwd=root).stdout)
    assert st["environment"] == "new" and st["why"] == "repository binding"
    git("checkout", "-q", "-b", "release/2018.3", cwd=root)
    st = json.loads(run_qpod("status", "--json", cwd=root).stdout)
    assert st["environment"] == "old" and "matches rule 'release/*'" in st["why"]
    w = json.loads(run_qpod("which", "--json", "make", cwd=root).stdout)
    assert w["where"] == "container" and w["environment"] == "old"
    # only a branch rule: master runs on the host
    assert run_qpod("unbind", cwd=root).returncode == 0
    assert run_qpod("init", "old", "--branch", "release/*", cwd=root).returncode == 0
    git("checkout", "-q", "master", cwd=root)
    w = json.loads(run_qpod("which", "--json", "make", cwd=root).stdout)
    assert w["where"] == "host" and "bound only for branches release/*" in w["reason"]
    assert run_qpod("unbind", "--branch", "release/*", cwd=root).returncode == 0
    assert json.loads(run_qpod("repos", "--json", "--no-podman").stdout) == []


def test_worktree_is_bound_separately(qpod_home: Path, make_repo, tmp_path: Path) -> None:
    add_env("e1")
    add_env("e2")
    root = make_repo("main")
    wt = tmp_path / "wt"
    git("worktree", "add", "-q", "-b", "feature", str(wt), cwd=root)
    assert run_qpod("init", "e1", cwd=root).returncode == 0
    assert run_qpod("init", "e2", cwd=wt).returncode == 0
    repos = {r["repository"]: r for r in json.loads(run_qpod("repos", "--json", "--no-podman").stdout)}
    assert repos[str(wt)]["environment"] == "e2" and repos[str(wt)]["branch"] == "feature"
    assert repos[str(root)]["environment"] == "e1" and repos[str(root)]["branch"] == "master"


def test_init_errors_are_one_clear_line(qpod_home: Path, make_repo, tmp_path: Path) -> None:
    add_env("known")
    root = make_repo("r")
    r = run_qpod("init", "nope", cwd=root)
    assert r.returncode == 2 and r.stderr.strip() == "qpod: unknown environment 'nope' (known: known)"
    plain = tmp_path / "plain"
    plain.mkdir()
    r = run_qpod("init", "known", cwd=plain)
    assert r.returncode == 2 and "not inside a git repository" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not Path(paths.repositories_file()).exists()


@pytest.mark.podman  # qpod doctor runs every check, a container's start included
def test_moved_repository_is_reported(qpod_home: Path, make_repo, tmp_path: Path) -> None:
    add_env("e1")
    root = make_repo("r")
    assert run_qpod("init", "e1", cwd=root).returncode == 0
    root.rename(tmp_path / "moved")
    repos = json.loads(run_qpod("repos", "--json", "--no-podman").stdout)
    assert repos[0]["exists"] is False and "missing" in repos[0]["why"]
    out = run_qpod("repos", "--no-podman").stdout
    assert "(missing)" in out
    doc = run_qpod("doctor")
    assert f"bound repository {root} exists" in doc.stdout


def test_env_rm_refuses_while_bound(qpod_home: Path, make_repo) -> None:
    add_env("e1")
    root = make_repo("r")
    assert run_qpod("init", "e1", cwd=root).returncode == 0
    r = run_qpod("env", "rm", "e1")
    assert r.returncode == 2 and str(root) in r.stderr
    assert Path(paths.environment_file("e1")).exists()
    assert run_qpod("env", "rm", "e1", "--force").returncode == 0
    assert not Path(paths.environment_file("e1")).exists()


def test_malformed_repositories_file_names_line(qpod_home: Path, make_repo) -> None:
    add_env("e1")
    p = Path(paths.repositories_file())
    p.write_text("repositories:\n  /x:\n    environment: e1\n    branchs: {}\n")
    before = p.read_bytes()
    root = make_repo("r")
    r = run_qpod("init", "e1", cwd=root)
    assert r.returncode == 2
    assert r.stderr.strip() == f"qpod: {p}:4: unknown key 'branchs' (known keys: branches, environment)"
    assert p.read_bytes() == before  # never overwritten on error


def test_hand_edit_is_picked_up_by_rules(qpod_home: Path, make_repo) -> None:
    add_env("e1")
    root = make_repo("r")
    assert run_qpod("which", "make", cwd=root).stdout.startswith("host")
    Path(paths.repositories_file()).write_text(f"repositories:\n  {root}:\n    environment: e1\n")
    assert run_qpod("which", "make", cwd=root).stdout.startswith("container (e1)")
    rules = Path(paths.rules_file()).read_text().splitlines()
    assert "\t".join(["root", str(root), *DEFAULT_COMMANDS]) in rules
