"""A repository's own environment (.qpod.yaml: an image, or a Containerfile podman builds) with
real podman: an edited file fails routed commands in one line until allowed again, a git
checkout switches between an image and a Containerfile build with no qpod command between, a
build is reused while its recipe and context are unchanged, and parallel commands wait for one
build. The file's validation and gate without podman: tests/unit/test_config_repo_file.py."""

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import git, remove_containers_of, run_qpod, run_qpod_shell

from qpod_engine.config import repo_file as repo_env
from qpod_engine.config import snapshot

pytestmark = pytest.mark.podman

MAKEFILE = "all:\n\t@echo gcc-$$(gcc -dumpversion)\n\t@cat /etc/qpod-flavour 2>/dev/null || echo no-flavour\n"


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
        r = run_qpod_shell("make; echo make=$?; ls >/dev/null; echo ls=$?", cwd=root)
        assert r.stdout == "make=125\nls=0\n", (r.stdout, r.stderr)
        assert r.stderr.splitlines() == [
            f"qpod: {root}/.qpod.yaml: changed since you allowed it; review and allow "
            f"it with 'qpod allow' in {root} (or 'qpod deny')"
        ]
        assert run_qpod("allow", cwd=root).returncode == 0
        r = run_qpod("exec", "sh", "-c", "echo $WHERE", cwd=root)
        assert (r.returncode, r.stdout) == (0, "elsewhere\n"), r.stderr
        assert run_qpod("deny", cwd=root).returncode == 0
        r = run_qpod_shell("make", cwd=root)
        assert (r.returncode, r.stdout) == (0, "made-on-host\n"), r.stderr
    finally:
        remove_containers_of(str(root))


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
        r = run_qpod_shell(
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
        r = run_qpod("exec", "cat", "/marker", cwd=root)
        assert (r.returncode, r.stdout) == (0, "one\n") and f"qpod: building {tags[0]}" in r.stderr, r.stderr
        remove_containers_of(str(root))  # the next command makes a container again: from the same image
        r = run_qpod("exec", "cat", "/marker", cwd=root)
        assert (r.returncode, r.stdout) == (0, "one\n") and "building" not in r.stderr, r.stderr
        build = snapshot.environment_entry(snapshot.load(), ".qpod.yaml", str(root))["build"]
        assert ensure_built(build, {}) is False  # nothing to build (how fast: bench/)

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
