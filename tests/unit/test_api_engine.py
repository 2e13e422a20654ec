"""qpod_engine.api: the facade the TUI uses, against real config files and real git repositories."""

import json
import os
import subprocess

import pytest

from qpod_engine.api import Engine, FieldError, LogIndex
from qpod_engine.base import paths
from qpod_engine.base.errors import QpodError
from qpod_engine.config import bindings, snapshot
from qpod_engine.config.fields import DEFAULT_COMMANDS
from qpod_engine.config.form import form_to_data
from qpod_engine.log import cmdlog


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("QPOD_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("QPOD_STATE_DIR", str(tmp_path / "state"))
    return tmp_path


def git_repo(path) -> str:
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    return os.path.realpath(path)


def new_env(engine: Engine, name: str, image: str = "localhost/qpod-busybox:latest") -> None:
    form = {**engine.environment_form(None), "name": name, "image": image}
    engine.save_environment(engine.environment_from_form(form), create=True)


def test_bind_writes_what_qpod_init_writes(home):
    engine = Engine()
    new_env(engine, "old")
    new_env(engine, "new")
    root = git_repo(home / "repo")
    assert engine.bind(str(home / "repo" / "."), "old") == root
    engine.add_branch_rule(root, "release/*", "new")
    assert bindings.load_bindings()[root] == bindings.Binding(root, "old", {"release/*": "new"})
    # the compiled snapshot follows, so the launcher sees the change at once
    assert snapshot.load()["repos"] == [{"root": root, "environment": "old", "branches": [["release/*", "new"]]}]
    [row] = engine.repositories()
    assert (row.root, row.branch, row.environment, row.container_state) == (root, "main", "old", "unknown")
    assert row.to_dict()["repository"] == root

    engine.set_environment(root, "new")
    engine.remove_branch_rule(root, "release/*")
    assert bindings.load_bindings()[root] == bindings.Binding(root, "new", {})
    engine.unbind(root)
    assert engine.repositories() == []


def test_bind_errors_name_their_field(home):
    engine = Engine()
    new_env(engine, "good")
    with pytest.raises(FieldError) as err:
        engine.bind(str(home), "good")
    assert err.value.field == "path" and "not inside a git repository" in err.value.message
    root = git_repo(home / "repo")
    with pytest.raises(FieldError) as err:
        engine.bind(root, "missing")
    assert err.value.field == "environment" and "unknown environment 'missing'" in err.value.message
    # a broken environment file is refused, as qpod init refuses it
    with open(paths.environment_file("broken"), "w") as f:
        f.write("image: [unterminated\n")
    with pytest.raises(FieldError) as err:
        engine.bind(root, "broken")
    assert err.value.field == "environment" and "broken.yaml" in err.value.message
    with pytest.raises(FieldError) as err:
        engine.add_branch_rule(root, "  ", "good")
    assert err.value.field == "branch"


@pytest.mark.parametrize(
    ("field", "value", "expect"),
    [
        ("name", "bad name", "environment name 'bad name'"),
        ("image", "  ", "'image' must be a non-empty string"),
        ("mounts", "relative:/x", "host path must be absolute"),
        ("env", "1BAD=x", "'env': '1BAD' is not a valid variable name"),
        ("env", "NOEQUALS", "expected NAME=VALUE"),
        ("commands", "bin/make", "must be a bare command name"),
        ("workdir_root", "relative", "'workdir_root' must be an absolute path"),
        ("ulimits", "nofile=lots", "'ulimits': 'nofile' must be SOFT[:HARD]"),
        ("ulimits", "nofile", "expected NAME=SOFT[:HARD]"),
        ("podman_options", "a: [", "invalid YAML"),
        ("podman_options", "- a list", "'podman_options' must be a mapping"),
        ("share", "home nfs", "'share': 'nfs' is not one of home, tmp"),
        ("run_as", "nobody", "'run_as' must be one of user, root"),
    ],
)
def test_form_validation_names_the_field(home, field, value, expect):
    engine = Engine()
    form = {**engine.environment_form(None), "name": "ok", "image": "img", field: value}
    with pytest.raises(FieldError) as err:
        engine.environment_from_form(form)
    assert err.value.field == field
    assert expect in err.value.message


def test_form_round_trip_keeps_every_setting(home):
    engine = Engine()
    form = {
        **engine.environment_form(None),
        "name": "full",
        "image": "img:1",
        "mounts": "/a:/b:ro\n/c:/d",
        "env": "CC=gcc\nEMPTY=",
        "commands": "make, gdb cmake",
        "cap_add": "SYS_PTRACE",
        "seccomp": "unconfined",
        "ulimits": "nofile=1024:4096 core=-1",
        "run_as": "root",
        "podman_options": "shm_size: 1g",
    }
    env = engine.environment_from_form(form)
    assert env.mounts == ["/a:/b:ro", "/c:/d"] and env.env == {"CC": "gcc", "EMPTY": ""}
    assert env.commands == ["make", "gdb", "cmake"] and env.ulimits == {"nofile": "1024:4096", "core": "-1"}
    assert env.podman_options == {"shm_size": "1g"} and env.run_as == "root"
    engine.save_environment(env, create=True)
    assert engine.environment_form(engine.load_environment("full")) == engine.environment_form(env)
    with pytest.raises(FieldError) as err:
        engine.save_environment(env, create=True)
    assert err.value.field == "name" and "exists" in err.value.message


def test_form_shows_every_problem_at_once_in_screen_order(home):
    engine = Engine()
    form = {
        **engine.environment_form(None),
        "name": "bad name",
        "image": "",
        "mounts": "rel:/x",
        "ulimits": "nofile",
        "share": "home nfs",
        "podman_options": "- a list",
    }
    _env, problems = engine.check_form(form)
    assert [p.field for p in problems] == ["name", "image", "mounts", "share", "ulimits", "podman_options"]
    assert "'share': 'nfs' is not one of home, tmp" in problems[3].message
    assert form_to_data({"image": " x "})[0]["image"] == "x"


def test_delete_refused_while_bound(home):
    engine = Engine()
    new_env(engine, "used")
    root = git_repo(home / "repo")
    engine.bind(root, "used")
    with pytest.raises(QpodError, match="is used by"):
        engine.delete_environment("used")
    engine.unbind(root)
    engine.delete_environment("used")
    assert engine.environment_names() == []
    with pytest.raises(QpodError, match="unknown environment"):
        engine.delete_environment("used")


def test_environments_list_counts_users_and_reports_broken_files(home):
    engine = Engine()
    new_env(engine, "a")
    root = git_repo(home / "repo")
    engine.bind(root, "a")
    with open(paths.environment_file("zz"), "w") as f:
        f.write("image: x\nbogus: 1\n")
    rows = {r.name: r for r in engine.environments()}
    assert rows["a"].repositories == [root] and rows["a"].settings["commands"] == list(DEFAULT_COMMANDS)
    assert "unknown key 'bogus'" in rows["zz"].error


def test_shell_command_switches_qpod_off(monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "/x/libqpod_preload.so")
    argv, env = Engine().shell_command("qpod-x")
    assert argv[1:] == ["exec", "-it", "qpod-x", "/bin/sh"] and argv[0].endswith("podman")
    assert env["QPOD_OFF"] == "1" and "LD_PRELOAD" not in env


def test_complete_path(tmp_path):
    (tmp_path / "alpha").mkdir()
    (tmp_path / "alps").mkdir()
    (tmp_path / "afile").write_text("")
    engine = Engine()
    assert engine.complete_path(str(tmp_path / "al")) == [str(tmp_path / "alpha") + "/", str(tmp_path / "alps") + "/"]
    assert engine.complete_path(str(tmp_path / "nothing" / "x")) == []


def records(log: str, n: int, start: int = 0, **extra) -> None:
    for i in range(start, start + n):
        cmdlog.append(
            {"repo": f"/r/{i % 3}", "env": f"e{i % 2}", "argv": ["make", f"t{i}"], "status": i % 4, **extra}, log=log
        )


def test_log_index_reads_appends_and_filters(tmp_path):
    log = str(tmp_path / "commands.log")
    index = LogIndex(log)
    assert index.refresh() == (0, False)  # no log yet
    records(log, 10)
    assert index.refresh() == (10, False)
    assert index.record(3)["argv"] == ["make", "t3"]
    with open(log, "ab") as f:
        f.write(b'{"argv": ["half"]')  # a record being written: not indexed until its newline
    assert index.refresh() == (0, False) and len(index) == 10
    with open(log, "ab") as f:
        f.write(b', "status": 0}\n')
    assert index.refresh() == (1, False) and index.record(10)["argv"] == ["half"]
    assert list(index.scan(cmdlog.Filter(failed=True))) == [1, 2, 3, 5, 6, 7, 9]
    assert list(index.scan(cmdlog.Filter(repo="/r/1", env="e1"))) == [1, 7]
    assert list(index.scan(cmdlog.Filter(text="MAKE T4"))) == [4]
    assert list(index.scan(cmdlog.Filter(text="t1"), start=5)) == []
    assert list(index.scan(cmdlog.Filter(), cancelled=lambda: True)) == []


def test_log_index_follows_rotation_and_truncation(tmp_path):
    log = str(tmp_path / "commands.log")
    records(log, 5)
    index = LogIndex(log)
    index.refresh()
    size = os.path.getsize(log)
    # the next appends rotate: commands.log -> commands.log.1, a new commands.log starts
    for i in range(5, 8):
        cmdlog.append({"argv": ["make", f"t{i}"], "status": 0}, max_bytes=size + 10, log=log)
    assert os.path.exists(log + ".1")
    assert index.refresh() == (3, False)
    assert [index.record(i)["argv"][1] for i in range(len(index))] == [f"t{i}" for i in range(8)]
    # a fresh index reads rotated files first
    fresh = LogIndex(log)
    fresh.refresh()
    assert [fresh.record(i)["argv"][1] for i in range(8)] == [f"t{i}" for i in range(8)]
    # truncation: numbering restarts
    with open(log, "w") as f:
        f.write(json.dumps({"argv": ["new"]}) + "\n")
    added, reset = index.refresh()
    assert reset and index.record(len(index) - 1)["argv"] == ["new"]


def test_repository_files_waiting_for_allow_and_allowing_what_was_shown(home):
    engine = Engine()
    root = git_repo(home / "own")
    qy = os.path.join(root, ".qpod.yaml")
    with open(qy, "w") as f:
        f.write("image: localhost/qpod-busybox:latest\nmounts: ['/:/host']\n")
    sha, risky, info = engine.repo_file_summary(root)
    assert any("/:/host" in line for line in risky) and any("localhost/qpod-busybox" in line for line in info)
    engine.allow_repo_file(root, sha)
    assert engine.waiting_files() == {}
    with open(qy, "a") as f:
        f.write("cap_add: [SYS_ADMIN]\n")  # a new commit, an edit: the gate closes again
    waiting = engine.waiting_files()
    assert list(waiting) == [root] and "qpod allow" in waiting[root]
    with pytest.raises(QpodError) as err:
        engine.allow_repo_file(root, sha)  # the content shown before is not what is there now
    assert "changed since it was shown" in str(err.value)
    new_sha, risky, _ = engine.repo_file_summary(root)
    assert any("SYS_ADMIN" in line for line in risky)
    engine.allow_repo_file(root, new_sha)
    assert engine.waiting_files() == {}
