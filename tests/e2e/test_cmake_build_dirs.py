"""A cmake project: cmake and make typed in a bound repository, or configured from a build dir
outside it, are the environment's; the build dir holds the container's cmake alone (before,
the host's cmake 3.25 configured it and the container's 3.18 ran again on top)."""

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import build_test_image, remove_containers_of, run_qpod, run_qpod_shell

pytestmark = [pytest.mark.podman, pytest.mark.demo]

CMAKE_IMAGE = "localhost/qpod-test-cmake:1"
CONTAINERFILE = (
    "FROM localhost/qpod-debian11:latest\n"
    "RUN apt-get update -q && apt-get install -y -q --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*\n"
)
PROJECT = {
    "CMakeLists.txt": "cmake_minimum_required(VERSION 3.13)\nproject(probe C)\nadd_executable(probe probe.c)\n",
    "probe.c": "int main(void) { return 0; }\n",
}


@pytest.fixture(scope="module")
def cmake_image(debian11_image: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Debian 11 with its cmake (3.18), built here from Debian's packages."""
    return build_test_image(CMAKE_IMAGE, CONTAINERFILE, tmp_path_factory)


def cmake_versions(build: Path) -> list[str]:
    return sorted(p.name for p in (build / "CMakeFiles").iterdir() if p.is_dir() and p.name[0].isdigit())


@pytest.mark.parametrize("where", ["inside", "outside"])
def test_the_build_dir_holds_only_the_containers_cmake(
    qpod_home: Path, make_repo: Callable[..., Path], cmake_image: str, tmp_path: Path, where: str
) -> None:
    root = make_repo("probe", PROJECT)
    assert run_qpod("env", "add", "cm", "--image", cmake_image).returncode == 0
    assert run_qpod("init", "cm", cwd=root).returncode == 0
    build = root / "build" if where == "inside" else tmp_path / "bld" / "probe"
    build.mkdir(parents=True)
    try:
        source = ".." if where == "inside" else str(root)
        r = run_qpod_shell(f"cmake {source} >/dev/null && make && readelf -p .comment probe", build)
        assert r.returncode == 0, r.stderr
        assert "GCC: (Debian 10." in r.stdout, r.stdout
        versions = cmake_versions(build)
        assert len(versions) == 1 and versions[0].startswith("3.18"), versions  # bullseye's, not the host's
    finally:
        remove_containers_of(str(root))
        remove_containers_of(str(build))
