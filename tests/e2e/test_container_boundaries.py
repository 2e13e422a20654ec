"""Safety of what qpod does with containers: a repository never chooses a host directory to
mount, each config acts on its own containers only, commands keep the user's groups, and a
container whose mount sources vanished (state dir deleted) is brought back, not broken."""

import grp
import json
import os
import pwd
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import git, remove_containers_of, run_qpod

pytestmark = pytest.mark.podman


def test_worktree_git_dirs_are_mounted_only_when_they_are_the_worktrees_own(
    qpod_home: Path, make_repo: Callable[..., Path], busybox_image: str, tmp_path: Path
) -> None:
    main = make_repo("main-" + uuid.uuid4().hex[:6])
    wt = tmp_path / ("wt-" + uuid.uuid4().hex[:6])
    git("worktree", "add", "-q", "-b", "feature", str(wt), cwd=main)
    secret = tmp_path / "host-secret"
    secret.mkdir(mode=0o700)
    (secret / "key").write_text("do not read\n")
    assert run_qpod("env", "add", "bb", "--image", busybox_image).returncode == 0
    assert run_qpod("init", "bb", cwd=wt).returncode == 0
    try:
        # a real worktree: its objects live in the main repository's git dir, mounted for it
        r = run_qpod("exec", "ls", str(main / ".git" / "objects"), cwd=wt)
        assert r.returncode == 0, r.stderr
        # code in the container rewrites the worktree's commondir to name a host directory
        gd = main / ".git" / "worktrees" / wt.name
        r = run_qpod("exec", "sh", "-c", f"echo {secret} > {gd}/commondir", cwd=wt)
        assert r.returncode == 0, r.stderr
        remove_containers_of(str(wt))  # the next command makes the container again
        r = run_qpod("exec", "cat", str(secret / "key"), cwd=wt)
        assert r.returncode == 125 and "do not read" not in r.stdout
        assert "not a git worktree entry of this repository" in r.stderr and r.stderr.count("\n") == 1
    finally:
        remove_containers_of(str(wt))


def two_configs(tmp_path: Path) -> tuple[dict[str, str], dict[str, str]]:
    a = {"QPOD_CONFIG_DIR": str(tmp_path / "a" / "config"), "QPOD_STATE_DIR": str(tmp_path / "a" / "state")}
    b = {"QPOD_CONFIG_DIR": str(tmp_path / "b" / "config"), "QPOD_STATE_DIR": str(tmp_path / "b" / "state")}
    return a, b


def test_each_config_acts_on_its_own_containers(
    make_repo: Callable[..., Path], busybox_image: str, tmp_path: Path
) -> None:
    """Two configs, same environment name, same repository: two containers; stop --all in one
    leaves the other's command running."""
    root = make_repo("shared-" + uuid.uuid4().hex[:6])
    a, b = two_configs(tmp_path)
    for cfg in (a, b):
        assert run_qpod("env", "add", "bb", "--image", busybox_image, env=cfg).returncode == 0
        assert run_qpod("init", "bb", cwd=root, env=cfg).returncode == 0
    try:
        long = subprocess.Popen(
            [sys.executable, "-m", "qpod_engine.cli", "exec", "sh", "-c", "echo up; sleep 60"],
            cwd=root,
            env={**os.environ, **b},
            stdout=subprocess.PIPE,
            text=True,
        )
        assert long.stdout.readline() == "up\n"
        assert run_qpod("exec", "true", cwd=root, env=a).returncode == 0
        names_a = [c["name"] for c in json.loads(run_qpod("ps", "--json", env=a).stdout)]
        names_b = [c["name"] for c in json.loads(run_qpod("ps", "--json", env=b).stdout)]
        assert len(names_a) == 1 and len(names_b) == 1 and names_a != names_b
        r = run_qpod("stop", "--all", env=a)
        assert r.returncode == 0 and names_a[0] in r.stdout and names_b[0] not in r.stdout
        assert long.poll() is None  # b's command runs on
        every = [c["name"] for c in json.loads(run_qpod("ps", "--json", "--all-configs", env=a).stdout)]
        assert set(names_a + names_b) <= set(every)
        long.terminate()
        long.wait(timeout=30)
    finally:
        remove_containers_of(str(root))


@pytest.mark.rootless  # a second user runs the command
def test_rootful_commands_keep_the_users_supplementary_groups(bound_repo: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("rootful case")
    user, group = "qpodgrp" + uuid.uuid4().hex[:4], "qpodshare" + uuid.uuid4().hex[:4]
    subprocess.run(["groupadd", group], check=True)
    subprocess.run(["useradd", "-M", "-G", group, user], check=True)
    try:
        pw = pwd.getpwnam(user)
        shared = bound_repo / "shared"
        shared.mkdir()
        os.chown(shared, 0, grp.getgrnam(group).gr_gid)
        os.chmod(shared, 0o2775)
        os.chmod(bound_repo, 0o755)
        # the repository lies in root's private pytest dir, which the user cannot enter (natively neither):
        # share nothing, so the container shows the repository's own mount only
        assert run_qpod("env", "set", "bb", "share=").returncode == 0
        r = run_qpod(
            "exec",
            "sh",
            "-c",
            "touch shared/by-build && id -G",
            cwd=bound_repo,
            env={"SUDO_UID": str(pw.pw_uid), "SUDO_GID": str(pw.pw_gid)},
        )
        assert r.returncode == 0, r.stderr
        assert str(grp.getgrnam(group).gr_gid) in r.stdout.split()
        assert (shared / "by-build").stat().st_uid == pw.pw_uid
    finally:
        subprocess.run(["userdel", user], capture_output=True)
        subprocess.run(["groupdel", group], capture_output=True)


def test_state_dir_deleted_under_a_running_container(bound_repo: Path) -> None:
    assert run_qpod("exec", "true", cwd=bound_repo).returncode == 0
    shutil.rmtree(os.environ["QPOD_STATE_DIR"])
    r = run_qpod("exec", "echo", "back", cwd=bound_repo)
    assert (r.returncode, r.stdout) == (0, "back\n"), r.stderr
    ps = json.loads(run_qpod("ps", "--json").stdout)
    assert [c["transport"] for c in ps] == ["agent"]  # restarted with the new socket dir, no fallback


def test_state_dir_deleted_under_a_stopped_container(bound_repo: Path) -> None:
    assert run_qpod("exec", "true", cwd=bound_repo).returncode == 0
    name = json.loads(run_qpod("status", "--json", cwd=bound_repo).stdout)["container"]
    subprocess.run(["podman", "stop", "-t", "0", name], capture_output=True, env={**os.environ, "QPOD_OFF": "1"})
    shutil.rmtree(os.environ["QPOD_STATE_DIR"])
    r = run_qpod("exec", "echo", "back", cwd=bound_repo)
    assert (r.returncode, r.stdout) == (0, "back\n"), r.stderr
    assert "no such file" not in r.stderr


def test_repository_of_another_user_is_one_line_with_the_fix(
    qpod_home: Path, tmp_path: Path, busybox_image: str
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give the repository to another user")
    root = tmp_path / "theirs"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["chown", "-R", "nobody", str(root)], check=True)
    assert run_qpod("env", "add", "bb", "--image", busybox_image).returncode == 0
    r = run_qpod("init", "bb", cwd=root)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "unexpected" not in r.stderr, r.stderr
    assert "belongs to another user" in r.stderr and f"safe.directory {root}" in r.stderr
