"""Every entry point the preload library hooks lands in the container when it launches make in
a bound repository, and on the host outside one: the library built from this checkout, the real
launcher, real podman and the Debian 11 environment (make says which Debian ran it). Whether
pidfd_spawn is covered here: see preload_driver.PIDFD_COVERAGE."""

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import remove_containers_of, run_qpod
from preload_driver import CHDIR_ENTRIES, ENTRIES, HOST_PATH, MISSING, Built

pytestmark = [pytest.mark.podman, pytest.mark.demo]


@pytest.fixture
def debian_repo(qpod_home: Path, make_repo: Callable[..., Path], debian11_image: str) -> Iterator[Path]:
    root = make_repo(
        "old-" + uuid.uuid4().hex[:6],
        {
            "Makefile": "all:\n\t@echo make-ran-on-debian-$$(cut -d. -f1 /etc/debian_version)\n",
        },
    )
    assert run_qpod("env", "add", "deb11", "--image", debian11_image).returncode == 0
    r = run_qpod("init", "deb11", cwd=root)
    assert r.returncode == 0, r.stderr
    yield root
    remove_containers_of(str(root))


def test_every_entry_point_lands_in_the_container(debian_repo: Path, built: Built, tmp_path: Path) -> None:
    from qpod_engine.config import snapshot

    snapshot.load()  # the engine's rules: the real launcher
    rules = os.path.join(os.environ["QPOD_STATE_DIR"], "rules")
    outside = tmp_path / "unbound"
    outside.mkdir()
    (outside / "Makefile").write_text("all:\n\t@echo make-ran-on-debian-$$(cut -d. -f1 /etc/debian_version)\n")
    host = subprocess.run(["cut", "-d.", "-f1", "/etc/debian_version"], capture_output=True, text=True).stdout.strip()
    env = {
        **os.environ,
        "PATH": HOST_PATH,
        "LD_PRELOAD": built.entry,
        "QPOD_PRELOAD": str(built.lib),
        "QPOD_RULES": rules,
    }
    ran = []  # the launches in the repository: each one a record
    for entry in ENTRIES + CHDIR_ENTRIES:
        for cwd, want in ((debian_repo, "11"), (outside, host)):
            chdir = {"DRIVER_CHDIR": str(cwd)} if entry in CHDIR_ENTRIES else {}
            r = subprocess.run(
                [str(built.driver), entry, "make", "-s"],
                cwd=tmp_path if chdir else cwd,
                env={**env, **chdir},
                capture_output=True,
                text=True,
                timeout=120,
            )
            if r.returncode == MISSING:  # not in this glibc (pidfd_spawn before 2.39)
                continue
            assert (r.returncode, r.stdout.strip()) == (0, f"make-ran-on-debian-{want}"), (entry, cwd, r.stderr)
            assert "cannot be preloaded" not in r.stderr and "qpod:" not in r.stderr
            ran += [entry] if cwd == debian_repo else []
    assert len(ran) >= len(ENTRIES + CHDIR_ENTRIES) - 2  # at most pidfd_spawn{,p} missing
    log = [json.loads(x) for x in run_qpod("log", "--json").stdout.splitlines()]
    assert len(log) == len(ran)
    assert all(rec["argv"] == ["make", "-s"] and rec["status"] == 0 for rec in log)
