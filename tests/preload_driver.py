"""The preload library and its test driver (preload/tests/driver.c), compiled from this checkout
into a temp dir with the layout ``pip install .`` makes; the entry points the driver can launch
through. conftest's session fixture ``built`` builds them once a run."""

import importlib.util
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from qpod_engine.routing import preload_lib

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST_PATH = "/usr/bin:/bin"
EXEC_ENTRIES = [
    "execve",
    "execv",
    "execvp",
    "execvpe",
    "execl",
    "execle",
    "execlp",
    "execveat",
    "execveat-dirfd",
    "execveat-empty",
    "fexecve",
    "vfork",
    "execve-noenv",
]
SPAWN_ENTRIES = ["posix_spawn", "posix_spawnp", "pidfd_spawn", "pidfd_spawnp"]
SHELL_ENTRIES = ["system", "popen", "system-unset"]
ENTRIES = EXEC_ENTRIES + SPAWN_ENTRIES + SHELL_ENTRIES
CHDIR_ENTRIES = ["posix_spawn-chdir", "posix_spawnp-fchdir"]  # the cwd comes from the file actions
# The driver exits 77 for an entry point this glibc lacks. pidfd_spawn and pidfd_spawnp came in
# glibc 2.39: on an older one no program can call them, so their hooks never run here.
MISSING = 77
PIDFD_COVERAGE = (
    "glibc 2.39+ only: on this glibc no program can call it, so its hook is not run here. What is "
    "checked: the library exports it (test_installed_library_exports_every_hook) and it shares "
    "do_spawn, the decision and argv/env rewriting posix_spawn's tests run; only the final call to "
    "glibc's pidfd_spawn is untested until the suite runs on glibc 2.39 or newer (Debian 13)"
)


def build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("qpod_preload_build", REPO_ROOT / "preload" / "build.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@dataclass
class Built:
    lib: Path
    entry: str  # what goes into LD_PRELOAD
    driver: Path
    cc: list[str]


def build(d: Path) -> Built:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    b = build_module()
    lib = b.build(d / "_lib")
    driver = d / "driver"
    subprocess.run(
        [*b.cc(), "-O1", "-Wall", "-o", str(driver), str(REPO_ROOT / "preload/tests/driver.c"), "-lpthread", "-ldl"],
        check=True,
    )
    return Built(lib, preload_lib.preload_entry(d / "_lib"), driver, b.cc())


def skip_missing(r: subprocess.CompletedProcess[str], entry: str) -> None:
    """Skip (saying how the entry point is covered) when this glibc lacks it."""
    if r.returncode == MISSING:
        why = PIDFD_COVERAGE if entry.startswith("pidfd_spawn") else "not run here"
        pytest.skip(f"{entry} is not in this glibc: {why}")
