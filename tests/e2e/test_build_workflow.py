"""A redirected build keeps the native workflow: files it writes under your home and /tmp are on
the host, an out-of-tree build directory is bound like a repository, the branch rules follow the
branch git is bisecting or rebasing, an environment change never kills a running build, and
scripts (waf) run in the container however they are started."""

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import git, remove_containers_of, run_qpod, run_qpod_shell, wait_until

HELLO_C = '#include <stdio.h>\nint main(void) { printf("hello from gcc %s\\n", __VERSION__); return 0; }\n'
# autotools-shaped: run from the build directory, writes the Makefile there, installs to --prefix
CONFIGURE = r"""#!/bin/sh
prefix=/usr/local
for a; do case $a in --prefix=*) prefix=${a#--prefix=};; esac; done
srcdir=$(cd "$(dirname "$0")" && pwd)
printf 'hello: %s/hello.c\n\tgcc -O1 -o hello %s/hello.c\ninstall: hello\n\tmkdir -p %s/bin && cp hello %s/bin/\n' \
    "$srcdir" "$srcdir" "$prefix" "$prefix" > Makefile
echo "configured-in-${container:-host}"
"""


def comment_of(binary: Path) -> str:
    return " ".join(s.decode() for s in binary.read_bytes().split(b"\0") if s.startswith(b"GCC: ("))


@pytest.mark.podman
@pytest.mark.demo
def test_configure_in_an_out_of_tree_build_dir_and_install_to_a_prefix(
    qpod_home: Path, make_repo: Callable[..., Path], debian11_image: str, tmp_path: Path
) -> None:
    src = make_repo("src-" + uuid.uuid4().hex[:6], {"hello.c": HELLO_C, "configure": CONFIGURE})
    build, prefix = tmp_path / "build", tmp_path / "inst"
    build.mkdir()
    assert run_qpod("env", "add", "deb11", "--image", debian11_image).returncode == 0
    assert run_qpod("init", "deb11", cwd=src).returncode == 0
    r = run_qpod("init", "deb11", "--dir", str(build))
    assert r.returncode == 0 and f"bound {build}" in r.stdout, r.stderr
    try:
        which = run_qpod("which", "make", cwd=build)
        assert which.stdout.startswith("container (deb11)"), which.stdout
        r = run_qpod_shell(f"sh {src}/configure --prefix={prefix} && make -s && make -s install", cwd=build)
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert "configured-in-podman" in r.stdout
        # written by the container under /tmp (shared by default), so on the host: built by gcc 10
        installed = prefix / "bin" / "hello"
        assert installed.is_file(), list(tmp_path.rglob("*"))
        assert "GCC: (Debian 10." in comment_of(installed), comment_of(installed)
        assert (build / "hello").stat().st_uid == os.getuid()
        status = run_qpod("status", cwd=build)
        assert "not a git work tree" in status.stdout and "deb11" in status.stdout, status.stdout
    finally:
        remove_containers_of(str(src))
        remove_containers_of(str(build))


def test_a_directory_binding_never_swallows_your_home(qpod_home: Path) -> None:
    assert run_qpod("env", "add", "bb", "--image", "localhost/qpod-none:1").returncode == 0
    for path in ("/", os.path.expanduser("~")):
        r = run_qpod("init", "bb", "--dir", path)
        assert r.returncode == 2 and "holds your home directory" in r.stderr, r.stderr
    r = run_qpod("init", "bb", "--dir", "/nonexistent/qpod-build")
    assert r.returncode == 2 and "not a directory" in r.stderr
    assert not (qpod_home / "config" / "repositories.yaml").exists()


@pytest.mark.podman
def test_home_and_tmp_are_shared_unless_the_environment_says_otherwise(bound_repo: Path, tmp_path: Path) -> None:
    target = tmp_path / f"written-{uuid.uuid4().hex[:6]}"
    r = run_qpod("exec", "sh", "-c", f"echo from-$container > {target}", cwd=bound_repo)
    assert r.returncode == 0, r.stderr
    assert target.read_text() == "from-podman\n"
    target.unlink()
    assert run_qpod("env", "set", "bb", "share=").returncode == 0
    r = run_qpod("exec", "sh", "-c", f"mkdir -p {tmp_path} && echo inside > {target} && cat {target}", cwd=bound_repo)
    assert (r.returncode, r.stdout) == (0, "inside\n"), r.stderr
    assert not target.exists()  # the container's own /tmp


def test_branch_rules_follow_the_branch_being_bisected_or_rebased(
    qpod_home: Path, make_repo: Callable[..., Path]
) -> None:
    root = make_repo("bisect-" + uuid.uuid4().hex[:6])
    for name in ("new", "old"):
        assert run_qpod("env", "add", name, "--image", f"localhost/{name}:1").returncode == 0
    assert run_qpod("init", "new", cwd=root).returncode == 0
    assert run_qpod("init", "old", "--branch", "release/*", cwd=root).returncode == 0
    git("checkout", "-q", "-b", "release/2018.3", cwd=root)
    for i in range(3):
        (root / "f").write_text(f"{i}\n")
        git("add", "f", cwd=root)
        git("commit", "-q", "-m", f"c{i}", cwd=root)

    def which() -> str:
        return run_qpod("which", "make", cwd=root).stdout

    assert which().startswith("container (old)")
    git("bisect", "start", "HEAD", "HEAD~3", cwd=root)
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=root).strip() == "HEAD"  # detached by git
    assert which().startswith("container (old)"), which()
    assert "release/2018.3 (bisecting" in run_qpod("status", cwd=root).stdout
    git("bisect", "reset", cwd=root)

    log = root.parent / f"{root.name}.rebase-log"
    cli = f"{sys.executable} -m qpod_engine.cli which make >> {log}"
    git("rebase", "-q", "--force-rebase", "--exec", cli, "HEAD~2", cwd=root)
    seen = log.read_text().splitlines()
    assert len(seen) == 2 and all(x.startswith("container (old)") for x in seen), seen

    git("checkout", "-q", "--detach", "HEAD~1", cwd=root)
    assert which().startswith("container (new)"), which()  # a plain detached HEAD: the any-branch binding
    assert "detached HEAD" in run_qpod("status", cwd=root).stdout


def _ps(cwd: Path) -> list[dict[str, object]]:
    import json

    r = run_qpod("ps", "--json", cwd=cwd)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.podman
def test_an_environment_change_never_kills_a_running_build(bound_repo: Path, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    build = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qpod_engine.cli",
            "exec",
            "sh",
            "-c",
            f"echo started; while [ ! -e {gate} ]; do sleep 0.1; done; echo finished",
        ],
        cwd=bound_repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert build.stdout is not None and build.stdout.readline() == "started\n"
        # a change that shapes the container (capabilities), made while the build runs
        r = run_qpod("env", "set", "bb", "cap_add=SYS_PTRACE", cwd=bound_repo)
        assert r.returncode == 0, r.stderr
        r = run_qpod("exec", "sh", "-c", "grep CapEff /proc/self/status", cwd=bound_repo)
        assert r.returncode == 0, r.stderr  # a new command, in a container of the new config
        rows = _ps(bound_repo)
        assert sorted(bool(c["outdated"]) for c in rows) == [False, True], rows
        assert all(c["state"] == "running" for c in rows), rows
        gate.touch()
        out, err = build.communicate(timeout=120)
        assert (build.returncode, out) == (0, "finished\n"), err  # not 143: it was never killed
        # its last command ended: the outdated container stops itself and leaves the list
        wait_until(
            lambda: [bool(c["outdated"]) for c in _ps(bound_repo)] == [False], "the outdated container to go", 120
        )
    finally:
        gate.touch()
        if build.poll() is None:
            build.kill()
            build.wait()


@pytest.mark.podman
def test_an_idle_container_of_an_old_config_is_simply_replaced(bound_repo: Path) -> None:
    assert run_qpod("exec", "true", cwd=bound_repo).returncode == 0
    [before] = _ps(bound_repo)
    assert run_qpod("env", "set", "bb", "cap_add=SYS_PTRACE", cwd=bound_repo).returncode == 0
    assert _ps(bound_repo)[0]["outdated"] is True
    assert run_qpod("exec", "true", cwd=bound_repo).returncode == 0
    [after] = _ps(bound_repo)
    assert after["id"] != before["id"] and after["outdated"] is False


@pytest.mark.podman
def test_a_routed_command_missing_from_the_image_is_one_line_127(
    bound_repo: Path, tmp_path: Path, busybox_image: str
) -> None:
    """waf on the host's PATH is routed (a command of the environment) but the image has none."""
    host_bin = tmp_path / "bin"
    host_bin.mkdir()
    (host_bin / "waf").write_text("#!/bin/sh\necho host-waf\n")
    (host_bin / "waf").chmod(0o755)
    before = run_qpod("which", "waf", cwd=bound_repo)
    assert before.stdout.startswith("container (bb)") and "in the container" not in before.stdout
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("QPOD_SHELL")}
    env["PATH"] = f"{host_bin}:{env['PATH']}"
    r = subprocess.run(
        [sys.executable, "-m", "qpod_engine.cli.shell", "--shell", "/bin/sh", "-c", "waf configure"],
        cwd=bound_repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 127 and r.stdout == ""
    assert r.stderr == f"qpod: waf: not found in environment bb (image {busybox_image})\n", r.stderr
    after = run_qpod("which", "waf", cwd=bound_repo)  # the container is known now: qpod which looks
    assert after.stdout.rstrip().endswith("not found in the container: it would exit 127"), after.stdout
    assert run_qpod("env", "set", "bb", "commands=make waf sh", cwd=bound_repo).returncode == 0
    there = run_qpod("which", "sh", cwd=bound_repo)  # routing-only change: the same container
    assert "; in the container: " in there.stdout, there.stdout


# a waf-shaped build script: python, run as ./waf or as waf's docs say, python3 ./waf
WAF = r"""#!/usr/bin/env python3
import os, subprocess, sys
where = "container" if os.environ.get("container") else "host"
if "build" in sys.argv:
    subprocess.run(["gcc", "-O1", "-o", "hello", "hello.c"], check=True)
print(f"waf {' '.join(sys.argv[1:])} ran in the {where} with python {sys.version_info[0]}.{sys.version_info[1]}")
"""


@pytest.mark.podman
@pytest.mark.demo
def test_a_waf_script_runs_in_the_container_both_ways(
    qpod_home: Path, make_repo: Callable[..., Path], debian11_image: str
) -> None:
    root = make_repo("waf-" + uuid.uuid4().hex[:6], {"hello.c": HELLO_C, "waf": WAF})
    (root / "waf").chmod(0o755)
    assert run_qpod("env", "add", "deb11", "--image", debian11_image).returncode == 0
    assert run_qpod("init", "deb11", cwd=root).returncode == 0
    try:
        r = run_qpod_shell("python3 ./waf configure build && ./waf build", cwd=root)
        assert r.returncode == 0, (r.stdout, r.stderr)
        # Debian 11's python is 3.9, the host's (Debian 12) 3.11
        assert r.stdout.splitlines() == [
            "waf configure build ran in the container with python 3.9",
            "waf build ran in the container with python 3.9",
        ], r.stdout
        assert "GCC: (Debian 10." in comment_of(root / "hello")
        which = run_qpod("which", "python3", "./waf", "build", cwd=root)
        assert which.stdout.startswith("container (deb11): a script of bound repository"), which.stdout
    finally:
        remove_containers_of(str(root))


@pytest.mark.podman
def test_a_command_only_another_branchs_environment_routes_runs_on_the_host(
    qpod_home: Path, make_repo: Callable[..., Path], busybox_image: str, tmp_path: Path
) -> None:
    """The preload rules list the commands of every environment a repository's branches use;
    on master, ninja (routed only on release branches) stays the host's, also once the launch
    spec of master's environment is warm."""
    root = make_repo("branches-" + uuid.uuid4().hex[:6])
    host_bin = tmp_path / "bin"
    host_bin.mkdir()
    (host_bin / "ninja").write_text('#!/bin/sh\necho "ninja-in-${container:-host}"\n')
    (host_bin / "ninja").chmod(0o755)
    assert run_qpod("env", "add", "now", "--image", busybox_image, "--command", "sh").returncode == 0
    assert (
        run_qpod("env", "add", "old", "--image", busybox_image, "--command", "sh", "--command", "ninja").returncode == 0
    )
    assert run_qpod("init", "now", cwd=root).returncode == 0
    assert run_qpod("init", "old", "--branch", "release/*", cwd=root).returncode == 0
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("QPOD_SHELL")}
    env["PATH"] = f"{host_bin}:{env['PATH']}"
    script = "sh -c 'echo sh-in-$container'; ninja"
    try:
        for _ in range(2):  # the second time with the launch spec of 'now' warm (the C fast path)
            r = subprocess.run(
                [sys.executable, "-m", "qpod_engine.cli.shell", "--shell", "/bin/sh", "-c", script],
                cwd=root,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert r.stdout.split() == ["sh-in-podman", "ninja-in-host"], (r.stdout, r.stderr)
    finally:
        remove_containers_of(str(root))
