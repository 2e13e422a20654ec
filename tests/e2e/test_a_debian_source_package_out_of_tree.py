"""A real autotools project from Debian's sources (GNU hello, the source package Debian's own
documentation builds) configured from a build directory outside its repository, built and
checked through qpod-shell: the same test-suite counts and config.h as the same steps in a plain
``podman run`` of the same image, and every object made by the image's compiler."""

import hashlib
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import PODMAN_RUNTIME_AND_LIMITS, git, remove_containers_of, run_qpod, run_qpod_shell

pytestmark = [pytest.mark.podman, pytest.mark.demo]

SOURCE = "http://deb.debian.org/debian/pool/main/h/hello/hello_2.10.orig.tar.gz"
# from hello_2.10-3.dsc (Checksums-Sha256): the test builds exactly this tree
SHA256 = "31e066137a962676e89f69d1b65382de95a7ef7d914b8cb956f41ea72e0f516b"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "qpod-tests"
STEPS = "{src}/configure --quiet && make -s && make -s check"
COUNTS = ("TOTAL", "PASS", "SKIP", "XFAIL", "FAIL", "XPASS", "ERROR")


def orig_tarball() -> Path:
    """Debian's upstream tarball of hello 2.10, fetched once (checked against the .dsc's hash)."""
    path = CACHE / Path(SOURCE).name
    if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == SHA256:
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    error: Exception | None = None
    for attempt in range(3):  # Debian's mirror network, as setup.sh's apt uses it
        try:
            with urllib.request.urlopen(SOURCE, timeout=60) as r:
                data = r.read()
            break
        except OSError as exc:
            error = exc
            time.sleep(2 * (attempt + 1))
    else:
        raise AssertionError(f"cannot fetch {SOURCE}: {error}")
    assert hashlib.sha256(data).hexdigest() == SHA256, f"{SOURCE} is not the tarball hello_2.10-3.dsc names"
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def unpack(tarball: Path, into: Path) -> None:
    """The tree, its files' times as released (make would otherwise regenerate the man page)."""
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-xzf", str(tarball), "-C", str(into), "--strip-components=1", "--no-same-owner"],
                   check=True)  # fmt: skip


def counts(log: str) -> dict[str, int]:
    """automake's test harness summary (``# PASS:  5``), from make check's output."""
    found = {k: int(n) for k, n in re.findall(r"^# (\w+): +(\d+)$", log, re.M) if k in COUNTS}
    assert set(found) == set(COUNTS), log
    return found


def test_hello_configured_out_of_tree_builds_and_checks_as_in_podman_run(
    qpod_home: Path, make_repo: Callable[..., Path], debian11_image: str, tmp_path: Path
) -> None:
    tarball = orig_tarball()
    # the reference: the same steps in a plain podman run of the same image, in a copy of the tree
    unpack(tarball, tmp_path / "ref" / "hello")
    ref_build = tmp_path / "ref" / "build"
    ref_build.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("QPOD_")}
    ref = subprocess.run(
        ["podman", "run", "--rm", *PODMAN_RUNTIME_AND_LIMITS, "--network", "none",
         "-v", f"{tmp_path / 'ref'}:/w", "-w", "/w/build", debian11_image, "sh", "-c", STEPS.format(src="/w/hello")],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert ref.returncode == 0, ref.stdout + ref.stderr
    want = counts(ref.stdout)
    assert want["TOTAL"] > 0 and want["FAIL"] == want["ERROR"] == 0, want

    # through qpod: the tree is a linked worktree (an old branch's checkout beside the main one)
    # bound to the image; the build dir is elsewhere. (In a worktree .git is a file, so hello's
    # configure, which builds its man page with help2man in a .git directory, does as released.)
    main = make_repo("hello-main")
    src = tmp_path / "hello"
    git("worktree", "add", "-q", "-b", "old", str(src), cwd=main)
    unpack(tarball, src)
    assert run_qpod("env", "add", "d11", "--image", debian11_image).returncode == 0
    assert run_qpod("init", "d11", cwd=src).returncode == 0
    build = tmp_path / "bld" / "hello"
    build.mkdir(parents=True)
    try:
        r = run_qpod_shell(STEPS.format(src=src), build, timeout=900)
        assert r.returncode == 0, r.stdout + r.stderr
        assert counts(r.stdout) == want
        assert (build / "config.h").read_text() == (ref_build / "config.h").read_text()
        # every object and the program: the image's gcc 10, never the host's
        made = sorted(build.rglob("*.o")) + [build / "hello"]
        assert len(made) > 5
        for f in made:
            comment = subprocess.run(["readelf", "-p", ".comment", str(f)], capture_output=True, text=True).stdout
            assert "GCC: (Debian 10." in comment and "12." not in comment, (f, comment)
        # the build dir was bound by its configure step: a later make there is the container's
        assert run_qpod("which", "make", cwd=build).stdout.startswith("container")
    finally:
        remove_containers_of(str(src))
        remove_containers_of(str(build))
