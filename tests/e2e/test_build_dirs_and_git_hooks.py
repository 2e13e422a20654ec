"""Through qpod-shell: a build tool given a bound directory from outside it builds in that
directory's container (cd ~ && make -C REPO); a hook git finds in the tree (core.hooksPath)
runs on the host like git, so commits work though the image has no git."""

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import git, remove_containers_of, run_qpod, run_qpod_shell

pytestmark = pytest.mark.podman


@pytest.mark.demo
def test_make_dash_c_into_a_bound_repository_builds_in_its_container(
    qpod_home: Path, make_repo: Callable[..., Path], debian11_image: str, tmp_path: Path
) -> None:
    root = make_repo("probe", {"Makefile": "all:\n\t@echo debian $$(cat /etc/debian_version)\n"})
    assert run_qpod("env", "add", "d11", "--image", debian11_image).returncode == 0
    assert run_qpod("init", "d11", cwd=root).returncode == 0
    outside = tmp_path / "home"
    outside.mkdir()
    try:
        for how in (f"make -C {root}", f"make -f {root}/Makefile -C {root}", f"make --directory={root}"):
            r = run_qpod_shell(how, outside)
            assert r.returncode == 0 and "\ndebian 11." in r.stdout, (how, r.stdout, r.stderr)
        assert "working in" in run_qpod("which", "make", "-C", str(root), cwd=outside).stdout
    finally:
        remove_containers_of(str(root))


def test_hooks_in_the_tree_run_on_the_host_with_git(bound_repo: Path) -> None:
    hooks = bound_repo / ".githooks"
    hooks.mkdir()
    (hooks / "pre-commit").write_text("#!/bin/sh\ngit rev-parse --git-dir >/dev/null && echo hook-on-host\n")
    (hooks / "pre-commit").chmod(0o755)
    git("config", "core.hooksPath", ".githooks", cwd=bound_repo)
    (bound_repo / "new").write_text("x\n")
    script = "git add new && git -c user.name=t -c user.email=t@t commit -q -m 'with a hook' && echo committed"
    r = run_qpod_shell(script, bound_repo)
    # (git runs a pre-commit hook with its stdout on stderr)
    assert r.returncode == 0 and "hook-on-host" in r.stderr and "committed" in r.stdout, (r.stdout, r.stderr)
    # the same program run by hand is a program of the repository: its container (no git there)
    r = run_qpod_shell("./.githooks/pre-commit; echo rc=$?", bound_repo)
    assert "hook-on-host" not in r.stdout and "rc=0" not in r.stdout, (r.stdout, r.stderr)
