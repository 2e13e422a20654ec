"""A repository declares its own environment in .qpod.yaml (an image, or a Containerfile built by
podman), used once the user allows its content, switched by a checkout with no qpod command in
between (issue 9: environments that travel with the branch). Real git, real podman, offline."""

import json
import os
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import git, remove_containers_of, run_qpod

from qpod_engine.config import repo_file as repo_env
from qpod_engine.config import snapshot
from qpod_engine.routing.policy import decide

MAKEFILE = "all:\n\t@echo gcc-$$(gcc -dumpversion)\n\t@cat /etc/qpod-flavour 2>/dev/null || echo no-flavour\n"


def qpod_shell(script: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("QPOD_SHELL")}
    return subprocess.run(
        [sys.executable, "-m", "qpod_engine.cli.shell", "--shell", "/bin/sh", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def commit(root: Path, files: dict[str, str], message: str) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", message, cwd=root)


def remove_images(*tags: str) -> None:
    env = {**os.environ, "QPOD_OFF": "1"}
    env.pop("LD_PRELOAD", None)
    subprocess.run(["podman", "rmi", "-f", *tags], capture_output=True, env=env)


def built_tag(root: Path) -> str:
    rf = repo_env.load(str(root))
    assert rf is not None and rf.build is not None, rf
    return rf.build.tag


# --- the file: validation, the gate, precedence (no podman needed) -----------------------------


def test_errors_in_the_repository_file_name_file_and_line(qpod_home: Path, make_repo: Callable[..., Path]) -> None:
    root = make_repo(
        "bad",
        {
            "README": "x\n",
            "ci/Containerfile": "FROM scratch\n",
            ".qpod.yaml": "commands: [make]\nimage: a\nbuild: ci/Containerfile\n",
        },
    )
    r = run_qpod("allow", cwd=root, input="")
    assert r.returncode == 2
    assert f"{root}/.qpod.yaml:3: give 'image' or 'build', not both" in r.stdout
    assert "not allowed: fix the problems above first" in r.stderr

    (root / ".qpod.yaml").write_text("image: a\nmounts: [relative:/x]\ncolour: blue\n")
    r = run_qpod("allow", cwd=root, input="")
    assert r.returncode == 2
    assert f"{root}/.qpod.yaml:3: unknown key 'colour'" in r.stdout
    assert f"{root}/.qpod.yaml:2: mount 'relative:/x': host path must be absolute" in r.stdout

    (root / ".qpod.yaml").write_text(
        "# a recipe that leaves the repository\nbuild:\n  containerfile: ../../etc/passwd\n"
    )
    r = run_qpod("allow", cwd=root, input="")
    assert r.returncode == 2 and f"{root}/.qpod.yaml:3: 'build: containerfile'" in r.stdout
    assert "leads outside the repository" in r.stdout
    assert not Path(os.environ["QPOD_CONFIG_DIR"], "allowed.json").exists()


def test_a_file_that_is_a_link_to_a_fifo_is_refused_not_waited_for(
    qpod_home: Path, make_repo: Callable[..., Path], tmp_path: Path
) -> None:
    root = make_repo("fifo")
    os.mkfifo(tmp_path / "pipe")
    (root / ".qpod.yaml").symlink_to(tmp_path / "pipe")
    r = run_qpod("allow", cwd=root, timeout=30)
    assert r.returncode == 2
    assert r.stderr == f"qpod: {root}/.qpod.yaml: cannot read: a symbolic link (qpod reads only a regular file)\n"


def test_a_file_asking_for_the_host_is_shown_literally_before_it_is_allowed(
    qpod_home: Path, make_repo: Callable[..., Path]
) -> None:
    evil = (
        "image: localhost/qpod-busybox:latest\n"
        "mounts: ['/:/host']\n"
        'cap_add: ["SYS_ADMIN\\e]0;pwned\\a"]\n'
        "run_as: root\n"
        "podman_options: {privileged: true}\n"
        "host: build-farm\n"
    )
    root = make_repo("evil", {"README": "x\n", ".qpod.yaml": evil})
    r = run_qpod("allow", cwd=root, input="")  # not a terminal: nothing is asked, nothing recorded
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "! mount of a host path outside the repository: /:/host" in r.stdout
    assert "! capabilities: SYS_ADMIN\\x1b]0;pwned\\x07" in r.stdout and "\x1b" not in r.stdout
    assert "! run_as: root" in r.stdout and '! podman options: {"privileged": true}' in r.stdout
    assert "! host: build-farm (commands run on the machine of that podman connection" in r.stdout
    assert "qpod allow --yes" in r.stderr
    assert not Path(os.environ["QPOD_CONFIG_DIR"], "allowed.json").exists()
    assert run_qpod("which", "make", cwd=root).stdout.startswith("host: not in a bound repository")
    assert "not allowed (review and use it with: qpod allow)" in run_qpod("status", cwd=root).stdout

    r = run_qpod("allow", "--yes", cwd=root)
    assert r.returncode == 0 and "! mount of a host path outside the repository: /:/host" in r.stdout
    record = Path(os.environ["QPOD_CONFIG_DIR"], "allowed.json")
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert list(json.loads(record.read_text())["allowed"]) == [str(root)]
    assert run_qpod("which", "make", cwd=root).stdout.startswith("container (.qpod.yaml)")


def test_an_explicit_binding_wins_and_init_without_env_takes_the_file(
    qpod_home: Path, make_repo: Callable[..., Path]
) -> None:
    root = make_repo("both", {"README": "x\n", ".qpod.yaml": "image: localhost/img:1\ncommands: [make, ninja]\n"})
    assert run_qpod("env", "add", "bb", "--image", "localhost/bb:1").returncode == 0
    assert run_qpod("init", "bb", cwd=root).returncode == 0
    r = run_qpod("allow", cwd=root)
    assert r.returncode == 0 and "explicit binding to environment 'bb' still wins" in r.stdout
    assert run_qpod("which", "ninja", cwd=root).stdout.startswith("host: 'ninja' is not routed by environment 'bb'")
    assert "bb (repository binding, wins over its .qpod.yaml)" in run_qpod("status", cwd=root).stdout

    r = run_qpod("init", cwd=root)  # no ENV: the file, shown, allowed and bound in one step
    assert r.returncode == 0 and "image: localhost/img:1" in r.stdout, r.stderr
    assert run_qpod("which", "ninja", cwd=root).stdout.startswith(
        "container (.qpod.yaml): 'ninja' is a command of the repository file .qpod.yaml"
    )
    assert "environment:  repository file .qpod.yaml (allowed)" in run_qpod("status", cwd=root).stdout

    r = run_qpod("deny", cwd=root)
    assert r.returncode == 0 and "its commands run on the host" in r.stdout
    assert run_qpod("which", "make", cwd=root).stdout.startswith("host: not in a bound repository")


def test_a_branch_rule_wins_on_its_branches_and_the_file_applies_on_the_others(
    qpod_home: Path, make_repo: Callable[..., Path]
) -> None:
    root = make_repo("rules", {".qpod.yaml": "image: localhost/img:1\n"})
    assert run_qpod("env", "add", "old", "--image", "localhost/old:1").returncode == 0
    assert run_qpod("init", "old", "--branch", "release/*", cwd=root).returncode == 0
    r = run_qpod("allow", cwd=root)
    assert r.returncode == 0 and "uses its .qpod.yaml" in r.stdout, r.stdout
    assert run_qpod("which", "make", cwd=root).stdout.startswith("container (.qpod.yaml)")
    git("checkout", "-q", "-b", "release/2018.3", cwd=root)
    assert run_qpod("which", "make", cwd=root).stdout.startswith("container (old)")
    assert (
        "old (branch 'release/2018.3' matches rule 'release/*', wins over its .qpod.yaml)"
        in run_qpod("status", cwd=root).stdout
    )


def test_a_checkout_switches_the_environment_with_no_qpod_command_between(
    qpod_home: Path, make_repo: Callable[..., Path]
) -> None:
    root = make_repo("switch", {"README": "x\n", ".qpod.yaml": "image: localhost/one:1\ncommands: [make]\n"})
    git("checkout", "-q", "-b", "other", cwd=root)
    commit(root, {".qpod.yaml": "image: localhost/two:2\ncommands: [make, waf]\n"}, "two")
    git("checkout", "-q", "-b", "none", cwd=root)
    git("rm", "-q", ".qpod.yaml", cwd=root)
    git("commit", "-q", "-m", "no file", cwd=root)
    for branch in ("master", "other"):
        git("checkout", "-q", branch, cwd=root)
        assert run_qpod("allow", cwd=root).returncode == 0

    def where(cmd: str) -> tuple[str, str | None, str | None]:
        snap = snapshot.load()  # what the launcher does: recompiled when a watched file changed
        d = decide(f"/usr/bin/{cmd}", [cmd], str(root), snapshot.targets(snap))
        env = (
            snapshot.environment_entry(snap, d.target.environment, d.target.root)
            if d.target and d.target.environment
            else None
        )
        return d.where, env and env.get("image"), d.target.why if d.target else None

    assert where("make")[:2] == ("container", "localhost/two:2") and where("waf")[0] == "container"
    git("checkout", "-q", "master", cwd=root)
    assert where("make")[:2] == ("container", "localhost/one:1") and where("waf")[0] == "host"
    git("checkout", "-q", "none", cwd=root)
    assert where("make") == ("host", None, "no .qpod.yaml in the checked-out tree")
    git("checkout", "-q", "other", cwd=root)
    assert where("make")[:2] == ("container", "localhost/two:2")
    (root / ".qpod.yaml").write_text("image: localhost/two:2\ncommands: [make, waf, ls]\n")  # an edit: gated
    assert where("make") == ("container", None, "repository file .qpod.yaml (changed, not allowed: run qpod allow)")
    assert run_qpod("which", "make", cwd=root).stdout == (
        "container (.qpod.yaml): 'make' is a command of the repository file .qpod.yaml; it would fail (exit 125): "
        f"{root}/.qpod.yaml: changed since you allowed it; review and allow it with 'qpod allow' in {root} "
        "(or 'qpod deny')\n"
    )
    assert where("ls")[0] == "host"  # an unallowed file's own list routes nothing
    assert repo_env.waiting(snapshot.load()) == [
        (str(root), repo_env.gate_message(str(root / ".qpod.yaml"), str(root), changed=True))
    ]


def test_a_missing_containerfile_fails_in_one_line_and_its_return_is_seen(
    qpod_home: Path, make_repo: Callable[..., Path]
) -> None:
    root = make_repo("recipe", {".qpod.yaml": "build: ci/Containerfile\n", "ci/Containerfile": "FROM scratch\n"})
    assert run_qpod("allow", cwd=root).returncode == 0
    (root / "ci" / "Containerfile").unlink()
    r = run_qpod("exec", "true", cwd=root)
    assert (r.returncode, r.stderr) == (
        125,
        f"qpod: {root}/.qpod.yaml:1: 'build: containerfile': 'ci/Containerfile' is not a file in the repository\n",
    )
    git("checkout", "-q", "--", "ci/Containerfile", cwd=root)  # back: the next command sees it, no qpod between
    assert run_qpod("which", "make", cwd=root).stdout.startswith(
        "container (.qpod.yaml): 'make' is a command of the repository file .qpod.yaml"
    )
    assert "it would fail" not in run_qpod("which", "make", cwd=root).stdout


# --- with podman: the gate, the two branches, the build cache --------------------------------


@pytest.mark.podman
def test_an_edited_file_fails_routed_commands_in_one_line_until_allowed(
    qpod_home: Path, make_repo: Callable[..., Path], busybox_image: str
) -> None:
    root = make_repo(
        "gate-" + uuid.uuid4().hex[:6],
        {
            "README": "x\n",
            ".qpod.yaml": f"image: {busybox_image}\ncommands: [make]\nenv: {{WHERE: container}}\n",
            "Makefile": "all:\n\t@echo made-on-host\n",
        },
    )
    try:
        assert run_qpod("allow", cwd=root).returncode == 0
        r = run_qpod("exec", "sh", "-c", "echo $WHERE", cwd=root)
        assert (r.returncode, r.stdout) == (0, "container\n"), r.stderr
        (root / ".qpod.yaml").write_text(f"image: {busybox_image}\ncommands: [make]\nenv: {{WHERE: elsewhere}}\n")
        r = qpod_shell("make; echo make=$?; ls >/dev/null; echo ls=$?", cwd=root)
        assert r.stdout == "make=125\nls=0\n", (r.stdout, r.stderr)
        assert r.stderr.splitlines() == [
            f"qpod: {root}/.qpod.yaml: changed since you allowed it; review and allow "
            f"it with 'qpod allow' in {root} (or 'qpod deny')"
        ]
        assert run_qpod("allow", cwd=root).returncode == 0
        r = run_qpod("exec", "sh", "-c", "echo $WHERE", cwd=root)
        assert (r.returncode, r.stdout) == (0, "elsewhere\n"), r.stderr
        assert run_qpod("deny", cwd=root).returncode == 0
        r = qpod_shell("make", cwd=root)
        assert (r.returncode, r.stdout) == (0, "made-on-host\n"), r.stderr
    finally:
        remove_containers_of(str(root))


@pytest.mark.podman
@pytest.mark.demo
def test_two_branches_one_image_one_containerfile_follow_git_checkout(
    qpod_home: Path, make_repo: Callable[..., Path], debian11_image: str
) -> None:
    root = make_repo(
        "branches-" + uuid.uuid4().hex[:6],
        {"Makefile": MAKEFILE, ".qpod.yaml": f"image: {debian11_image}\ncommands: [make]\n"},
    )
    git("checkout", "-q", "-b", "built", cwd=root)
    commit(
        root,
        {
            ".qpod.yaml": "build:\n  containerfile: ci/Containerfile\n  args: {FLAVOUR: built-from-the-branch}\n",
            "ci/Containerfile": f'FROM {debian11_image}\nARG FLAVOUR=plain\nRUN echo "$FLAVOUR" > /etc/qpod-flavour\n',
        },
        "a Containerfile",
    )
    tag = built_tag(root)
    remove_images(tag)
    try:
        assert run_qpod("allow", cwd=root).returncode == 0
        git("checkout", "-q", "master", cwd=root)
        assert run_qpod("allow", cwd=root).returncode == 0
        # one shell: git checkout is the only thing between the builds
        r = qpod_shell(
            "make; git checkout -q built && make; git checkout -q master && make; gcc -dumpversion", cwd=root
        )
        assert r.returncode == 0, (r.stdout, r.stderr)
        host_gcc = subprocess.run(["gcc", "-dumpversion"], capture_output=True, text=True).stdout
        assert r.stdout.splitlines() == [
            "gcc-10",
            "no-flavour",
            "gcc-10",
            "built-from-the-branch",
            "gcc-10",
            "no-flavour",
            host_gcc.strip(),
        ], r.stderr
        assert f"qpod: building {tag} from {root}/ci/Containerfile" in r.stderr
        git("checkout", "-q", "built", cwd=root)
        status = run_qpod("status", cwd=root).stdout
        assert "environment:  repository file .qpod.yaml (allowed)" in status
        assert f"image:        {tag} (built from ci/Containerfile)" in status
    finally:
        remove_containers_of(str(root))
        remove_images(tag)


@pytest.mark.podman
def test_a_build_is_reused_while_unchanged_and_rebuilt_when_its_context_changes(
    qpod_home: Path, make_repo: Callable[..., Path], busybox_image: str
) -> None:
    from qpod_engine.podman.imagebuild import ensure_built

    root = make_repo(
        "cache-" + uuid.uuid4().hex[:6],
        {
            ".qpod.yaml": "build: {containerfile: ci/Containerfile, context: ci}\ncommands: [make]\n",
            "ci/Containerfile": f"FROM {busybox_image}\nCOPY marker /marker\n",
            "ci/marker": "one\n",
        },
    )
    tags = [built_tag(root)]
    remove_images(tags[0])
    try:
        assert run_qpod("allow", cwd=root).returncode == 0
        started = time.monotonic()
        r = run_qpod("exec", "cat", "/marker", cwd=root)
        miss = time.monotonic() - started
        assert (r.returncode, r.stdout) == (0, "one\n") and f"qpod: building {tags[0]}" in r.stderr, r.stderr
        remove_containers_of(str(root))  # the next command makes a container again: from the same image
        r = run_qpod("exec", "cat", "/marker", cwd=root)
        assert (r.returncode, r.stdout) == (0, "one\n") and "building" not in r.stderr, r.stderr
        build = snapshot.environment_entry(snapshot.load(), ".qpod.yaml", str(root))["build"]
        started = time.monotonic()
        assert ensure_built(build, {}) is False
        hit = time.monotonic() - started
        print(f"build cache: miss (build + container + command) {miss:.2f}s, hit (image exists) {hit:.3f}s")

        (root / "ci" / "marker").write_text("two\n")  # a context file changes: a new tag, a new image
        tags.append(built_tag(root))
        assert tags[1] != tags[0]
        r = run_qpod("exec", "cat", "/marker", cwd=root)
        assert (r.returncode, r.stdout) == (0, "two\n") and f"qpod: building {tags[1]}" in r.stderr, r.stderr

        # the old recipe's image is pruned; the one the checked-out file gives stays
        assert run_qpod("prune", "--dry-run").stdout == f"would remove {tags[0]}:latest\n"
        remove_containers_of(str(root))
        assert run_qpod("prune").stdout == f"removed {tags[0]}:latest\n"
        exists = [subprocess.run(["podman", "image", "exists", t]).returncode for t in tags]
        assert exists == [1, 0]
    finally:
        remove_containers_of(str(root))
        remove_images(*tags)


@pytest.mark.podman
def test_parallel_commands_wait_for_one_build(
    qpod_home: Path, make_repo: Callable[..., Path], busybox_image: str
) -> None:
    root = make_repo(
        "jobs-" + uuid.uuid4().hex[:6],
        {
            ".qpod.yaml": "build: {containerfile: Containerfile, args: {N: '4'}}\n",
            "Containerfile": f'FROM {busybox_image}\nARG N\nRUN echo "jobs-$N" > /marker\n',
        },
    )
    tag = built_tag(root)
    remove_images(tag)
    try:
        assert run_qpod("allow", cwd=root).returncode == 0
        cmd = [sys.executable, "-m", "qpod_engine.cli", "exec", "cat", "/marker"]
        procs = [
            subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)
        ]  # as make -j4 would start them
        outs = [p.communicate(timeout=240) for p in procs]
        results = [(p.returncode, out, err) for p, (out, err) in zip(procs, outs, strict=True)]
        assert [(rc, out) for rc, out, _ in results] == [(0, "jobs-4\n")] * 4, results
        assert sum(err.count(f"qpod: building {tag}") for _, _, err in results) == 1, results
    finally:
        remove_containers_of(str(root))
        remove_images(tag)


def test_the_gate_names_a_hostile_path_literally_in_one_line(qpod_home: Path, make_repo: Callable[..., Path]) -> None:
    root = make_repo("evil\x1b]0;title\x07-\u202erepo", {".qpod.yaml": "image: localhost/none:1\n"})
    assert run_qpod("allow", cwd=root).returncode == 0
    (root / ".qpod.yaml").write_text("image: localhost/none:2\n")
    r = run_qpod("exec", "true", cwd=root)
    shown = str(root).replace("\x1b", "\\x1b").replace("\x07", "\\x07").replace("\u202e", "\\u202e")
    assert r.returncode == 125 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(
        f"qpod: {shown}/.qpod.yaml: changed since you allowed it; review and allow it with 'qpod allow' in {shown}"
    )
    assert "\x1b" not in r.stderr and "\u202e" not in r.stderr


def test_init_without_env_needs_a_file_and_asks_at_a_terminal(qpod_home: Path, make_repo: Callable[..., Path]) -> None:
    import pty

    plain = make_repo("plain")
    r = run_qpod("init", cwd=plain)
    assert (
        r.returncode == 2
        and "no .qpod.yaml at the repository's root; bind an environment with: qpod init ENV" in r.stderr
    )

    root = make_repo("asks", {".qpod.yaml": "image: localhost/none:1\ncap_add: [SYS_PTRACE]\n"})
    for answer, status in (("n\n", 1), ("y\n", 0)):
        leader, follower = pty.openpty()
        try:
            os.write(leader, answer.encode())  # typed ahead: the terminal keeps it for the prompt
            p = subprocess.run(
                [sys.executable, "-m", "qpod_engine.cli", "init"],
                cwd=root,
                stdin=follower,
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            os.close(leader)
            os.close(follower)
        assert p.returncode == status, (p.stdout, p.stderr)
        assert "! capabilities: SYS_PTRACE" in p.stdout and "allow it? [y/N] " in p.stdout
        assert Path(os.environ["QPOD_CONFIG_DIR"], "allowed.json").exists() == (status == 0)
    assert run_qpod("which", "make", cwd=root).stdout.startswith("container (.qpod.yaml)")


def test_a_repository_file_cannot_build_for_another_host(qpod_home: Path, make_repo: Callable[..., Path]) -> None:
    root = make_repo(
        "farbuild", {"Containerfile": "FROM scratch\n", ".qpod.yaml": "host: build1\nbuild: Containerfile\n"}
    )
    r = run_qpod("allow", cwd=root, input="")
    assert r.returncode == 2 and "not allowed: fix the problems above first" in r.stderr, r.stderr
    assert (
        f"error: {root}/.qpod.yaml:2: 'build' with 'host' is not supported: build the image on that host and "
        "name it with 'image'"
    ) in r.stdout, r.stdout
