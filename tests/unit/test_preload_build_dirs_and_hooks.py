"""The library routes a build tool by the directory it is told to work in (make -C, make -f,
ninja -C, cmake --build, a cmake configure step by its source tree) and leaves git's hooks to
the host when git starts them; its C decision and the Python twin agree on every case."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from preload_driver import HOST_PATH, Built

from qpod_engine.config.rules import seal_rules
from qpod_engine.routing import preload_lib

NAMES = ["make", "gmake", "ninja", "cmake", "ctest"]


class Box:
    def __init__(self, base: Path, built: Built) -> None:
        self.base, self.built = base, built
        self.repo, self.sibling, self.home = base / "src" / "probe", base / "src" / "probe2", base / "home"
        for d in (self.repo / ".githooks", self.repo / "build", self.sibling, self.home):
            d.mkdir(parents=True)
        hook = self.repo / ".githooks" / "pre-commit"
        hook.write_text("#!/bin/sh\necho hook-on-host\n")
        hook.chmod(0o755)
        self.record = base / "launches.jsonl"
        self.stub = base / "stub.py"
        self.stub.write_text(
            textwrap.dedent(f"""\
            import json, sys
            with open({str(self.record)!r}, "a") as f:
                f.write(json.dumps(sys.argv[1:]) + "\\n")
            """)
        )
        self.rules = base / "rules"
        launcher = "\t".join(["launcher", sys.executable, "-S", str(self.stub)])
        self.roots = [(str(self.repo), NAMES)]
        rules = "".join(f"root\t{r}\t" + "\t".join(n) + "\n" for r, n in self.roots)
        self.rules.write_text(seal_rules(f"qpod-rules\t1\n{launcher}\n{rules}"))
        # the driver under the name git: the library sees git as the launching program
        self.git = base / "bin" / "git"
        self.git.parent.mkdir()
        self.git.symlink_to(built.driver)

    def launched(self, argv: list[str], cwd: Path, caller: Path | None = None) -> bool:
        env = {
            "PATH": HOST_PATH,
            "HOME": str(self.home),
            "LD_PRELOAD": self.built.entry,
            "QPOD_PRELOAD": str(self.built.lib),
            "QPOD_RULES": str(self.rules),
        }
        self.record.unlink(missing_ok=True)
        subprocess.run([str(caller or self.built.driver), "execvp", *argv], cwd=cwd, env=env, capture_output=True,
                       timeout=60)  # fmt: skip
        return self.record.exists()


@pytest.fixture
def box(tmp_path: Path, built: Built) -> Box:
    return Box(tmp_path, built)


def program(name: str) -> str:
    found = shutil.which(name, path=HOST_PATH)
    return found or f"/usr/bin/{name}"


def cases(box: Box) -> list[tuple[list[str], Path]]:
    r, s = str(box.repo), str(box.sibling)
    return [
        (["make", "-C", r], box.home),
        (["make", f"-C{r}", "-n"], box.home),
        (["make", f"--directory={r}/build"], box.home),
        (["make", "-C", str(box.base / "src"), "-C", "probe"], box.home),
        (["make", "-f", f"{r}/Makefile", "-n"], box.home),
        (["make", "-C", s], box.home),  # the sibling sharing the prefix: not inside
        (["make", "-C", s], box.repo),  # told to work elsewhere: the cwd does not decide
        (["make", "--", "-C", r], box.home),
        (["make", "-n"], box.home),
        # a makefile in no bound tree: where make works decides (the cwd, its -C)
        (["make", "-f", "/dev/null", "-n"], box.repo),
        (["make", "-f", str(box.home / "common.mk"), "-n"], box.repo),
        (["make", "-C", r, "-f", "/dev/null", "-n"], box.home),
        (["make", "-C", r, f"--file={box.sibling}/Makefile", "-n"], box.home),
        (["make", "-f", "/dev/null", "-n"], box.home),  # and nothing bound there: the host
        (["make", "-f", f"{r}/Makefile", "-n"], box.sibling),  # the makefile's tree, bound, decides
        (["ninja", "-C", f"{r}/build"], box.home),
        (["cmake", "--build", f"{r}/build"], box.home),
        (["cmake", r], box.home),  # a configure step: by the source tree
        (["cmake", "-S", r, "-B", str(box.home / "b")], box.home),
        (["cmake", "-E", "echo", "x"], box.home),
        (["ctest", "--test-dir", f"{r}/build"], box.home),
    ]


def test_the_library_routes_by_the_directory_a_tool_is_told(box: Box) -> None:
    for argv, cwd in cases(box):
        path = program(argv[0])
        if not os.path.exists(path):
            continue  # the tool is not installed here: the library resolves the program first
        by_c = box.launched(argv, cwd)
        by_python = preload_lib.shim_root(path, str(cwd), box.roots, argv) is not None
        assert by_c == by_python, (argv, str(cwd), by_c, by_python)
    # make is always here: into the repository it is routed, into the sibling it is not
    assert box.launched(["make", "-C", str(box.repo)], box.home) is True
    assert box.launched(["make", "-f", f"{box.repo}/Makefile", "-n"], box.home) is True
    assert box.launched(["make", "-C", str(box.sibling)], box.home) is False
    assert box.launched(["make", "-C", str(box.sibling)], box.repo) is False
    assert box.launched(["make", "-f", "/dev/null", "-n"], box.repo) is True
    assert box.launched(["make", "-f", "/dev/null", "-n"], box.home) is False


def test_git_starting_a_hook_in_the_tree_leaves_it_to_the_host(box: Box) -> None:
    hook = box.repo / ".githooks" / "pre-commit"
    assert box.launched([str(hook)], box.repo, caller=box.git) is False
    assert preload_lib.shim_root(str(hook), str(box.repo), box.roots, [str(hook)], caller="git") is None
    # started by anything else, it is a program of the repository
    assert box.launched([str(hook)], box.repo) is True
    assert preload_lib.shim_root(str(hook), str(box.repo), box.roots, [str(hook)]) == str(box.repo)
    # git starting a build still builds in the container
    assert box.launched(["make", "-n"], box.repo, caller=box.git) is True
