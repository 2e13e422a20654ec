"""The build, configure and debug tools of a C/C++ project and the compilers go to the
environment by default inside a bound repository, as make does; outside it they stay the host's."""

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import remove_containers_of, run_qpod

from qpod_engine.config.fields import DEFAULT_COMMANDS

pytestmark = pytest.mark.podman


def test_every_default_tool_is_routed_in_a_bound_repository(bound_repo: Path, tmp_path: Path) -> None:
    for name in ("cmake", "ctest", "ninja", "meson", "gcc", "g++", "cc", "clang", "gdbserver", "valgrind", "clangd"):
        assert name in DEFAULT_COMMANDS
        r = run_qpod("which", "--json", name, cwd=bound_repo)
        assert '"where": "container"' in r.stdout, (name, r.stdout, r.stderr)
        r = run_qpod("which", "--json", name, cwd=tmp_path)  # not a repository: the host's
        assert '"where": "host"' in r.stdout, (name, r.stdout)


@pytest.mark.demo
def test_a_compiler_typed_in_the_repository_is_the_environments(
    qpod_home: Path, make_repo: Callable[..., Path], debian11_image: str
) -> None:
    root = make_repo("legacy", {"x.c": "int main(void) { return 0; }\n"})
    assert run_qpod("env", "add", "d11", "--image", debian11_image).returncode == 0
    assert run_qpod("init", "d11", cwd=root).returncode == 0
    try:
        r = subprocess.run(
            [sys.executable, "-I", "-m", "qpod_engine.cli.shell", "--shell", "/bin/sh", "-c",
             "gcc -dumpversion && gcc -o x x.c && readelf -p .comment x"],
            cwd=root, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[0] == "10", r.stdout  # Debian 11's gcc, not the host's 12
        assert "GCC: (Debian 10." in r.stdout, r.stdout
    finally:
        remove_containers_of(str(root))
