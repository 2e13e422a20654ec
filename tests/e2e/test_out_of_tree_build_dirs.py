"""A build directory outside the repository that a configure step of the repository sets up
(autotools configure run from there, cmake -B, ...) is bound to the repository's environment, so
the make that follows there builds with the environment's compiler, not the host's."""

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import remove_containers_of, run_qpod, run_qpod_shell

pytestmark = [pytest.mark.podman, pytest.mark.demo]

CONFIGURE = """#!/bin/sh
# a configure script as autotools make them: it writes the Makefile into the cwd, the build dir
srcdir=$(dirname "$0")
printf 'hello: %s/hello.c\\n\\tcc -o hello %s/hello.c\\n' "$srcdir" "$srcdir" > Makefile
echo "configured with $(cc -dumpversion)"
"""


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_configure_from_a_build_dir_binds_it_and_make_there_builds_in_the_container(
    qpod_home: Path, make_repo: Callable[..., Path], debian11_image: str, tmp_path: Path, warm: bool
) -> None:
    root = make_repo("sed", {"configure": CONFIGURE, "hello.c": "int main(void) { return 0; }\n"})
    (root / "configure").chmod(0o755)
    assert run_qpod("env", "add", "d11", "--image", debian11_image).returncode == 0
    assert run_qpod("init", "d11", cwd=root).returncode == 0
    build = tmp_path / "bld" / "sed"
    build.mkdir(parents=True)
    try:
        if warm:  # the container already runs: the configure step takes the client's fast path
            assert run_qpod_shell("make --version >/dev/null", root).returncode == 0
        r = run_qpod_shell(f"{root}/configure && make && readelf -p .comment hello", build)
        assert r.returncode == 0, r.stderr
        assert "configured with 10" in r.stdout and "GCC: (Debian 10." in r.stdout, r.stdout
        repos = run_qpod("repos", "--json", "--no-podman").stdout
        assert f'"repository": "{build}"' in repos and '"environment": "d11"' in repos, repos
        # removable as any binding: then make there is the host's again
        assert run_qpod("unbind", "--path", str(build)).returncode == 0
        assert run_qpod("which", "make", cwd=build).stdout.startswith("host")
    finally:
        remove_containers_of(str(root))
        remove_containers_of(str(build))
