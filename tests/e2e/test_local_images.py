"""Local image builders against the real podman: busybox (fast) and Debian 11 (demo, slow)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PODMAN_RUNTIME_AND_LIMITS, REPO_ROOT

from qpod_engine.base.errors import QpodError
from qpod_engine.podman import local_images as images

RUN = ["podman", "run", "--rm", *PODMAN_RUNTIME_AND_LIMITS]

needs_podman = pytest.mark.skipif(shutil.which("podman") is None, reason="podman not installed")


def run_in(ref: str, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RUN, ref, "sh", "-c", script], capture_output=True, text=True, timeout=120)


def remove_image(ref: str) -> None:
    subprocess.run(["podman", "image", "rm", "-f", ref], capture_output=True)


def test_is_static_elf(tmp_path: Path) -> None:
    assert not images._is_static_elf(Path(sys.executable).resolve())
    assert not images._is_static_elf(Path("/etc/passwd"))
    assert not images._is_static_elf(tmp_path / "missing")
    # On Debian, /bin/busybox comes from busybox-static (static) or busybox (dynamic): ask dpkg which.
    owner = subprocess.run(["dpkg", "-S", "/bin/busybox"], capture_output=True, text=True).stdout
    if owner.startswith("busybox-static:"):
        assert images._is_static_elf(Path("/bin/busybox"))
    elif owner.startswith("busybox:"):
        assert not images._is_static_elf(Path("/bin/busybox"))


@pytest.mark.podman
@needs_podman
def test_image_exists_false_for_unknown_ref() -> None:
    assert images.image_exists("localhost/qpod-no-such-image:never") is False


@pytest.mark.podman
@needs_podman
def test_busybox_image_builds_runs_and_is_reused() -> None:
    ref = images.build_busybox_image()
    assert ref == images.BUSYBOX_REF
    assert images.image_exists(ref)
    first_id = images.image_id(ref)

    proc = run_in(ref, "echo ok")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "ok\n"

    messages: list[str] = []
    assert images.build_busybox_image(progress=messages.append) == ref
    assert messages == []  # nothing was rebuilt
    assert images.image_id(ref) == first_id


@pytest.mark.podman
@needs_podman
def test_busybox_image_has_applets_users_and_tmp() -> None:
    ref = images.build_busybox_image()
    applets = " ".join(a for a in images.COMMON_APPLETS if a != "[")
    script = (
        f"for a in {applets}; do command -v $a >/dev/null || echo missing $a; done; "
        "[ -x /bin/busybox ] && [ -x /usr/bin/env ] && echo paths-ok; "
        "id -un; grep -c . /etc/group; stat -c %a /tmp; touch /tmp/x && echo tmp-ok"
    )
    proc = run_in(ref, script)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:-1] == ["paths-ok", "root", "2", "1777", "tmp-ok"], proc.stdout


@pytest.mark.podman
@needs_podman
def test_busybox_two_processes_at_once_build_once() -> None:
    ref = "localhost/qpod-busybox-locktest:latest"
    remove_image(ref)
    code = (
        "import sys; from qpod_engine.podman import local_images as images; "
        "images.build_busybox_image(sys.argv[1], progress=lambda m: print('PROGRESS', m, flush=True))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    try:
        procs = [
            subprocess.Popen([sys.executable, "-c", code, ref], stdout=subprocess.PIPE, text=True, env=env)
            for _ in range(2)
        ]
        outs = [p.communicate(timeout=120)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0]
        assert sum(out.count("PROGRESS importing") for out in outs) == 1, outs
        assert images.image_exists(ref)
    finally:
        remove_image(ref)


@pytest.mark.podman
@needs_podman
def test_busybox_force_rebuilds_and_drops_old_image() -> None:
    ref = "localhost/qpod-busybox-forcetest:latest"
    try:
        images.build_busybox_image(ref, force=True)
        old = images.image_id(ref)
        images.build_busybox_image(ref, force=True)
        new = images.image_id(ref)
        assert old and new and old != new
        gone = subprocess.run(["podman", "image", "exists", old], capture_output=True)
        assert gone.returncode == 1  # the untagged previous build was removed
    finally:
        remove_image(ref)


def test_busybox_from_debian_package_when_host_has_none(tmp_path: Path) -> None:
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("needs apt-get and dpkg-deb")
    binary = images._busybox_binary(tmp_path, None, host_candidates=())
    assert binary.name == "busybox"
    assert images._is_static_elf(binary)
    assert subprocess.run([str(binary), "true"]).returncode == 0


@pytest.mark.podman
@needs_podman
@pytest.mark.parametrize("builder", ["mmdebstrap", "debootstrap"])
def test_debian11_failure_names_step_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, builder: str
) -> None:
    if shutil.which(builder) is None or (builder == "debootstrap" and os.geteuid() != 0):
        pytest.skip(f"{builder} cannot run here")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    ref = f"localhost/qpod-debian11-failtest-{builder}:latest"
    with pytest.raises(QpodError) as info:
        images.build_debian11_image(ref, mirror="http://deb.debian.org/no-such-archive", builder=builder)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"building {ref}: {builder} failed (exit ")
    assert "no-such-archive" in message
    assert not images.image_exists(ref)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(("qpod-debian11-", "mmdebstrap."))] in (
        [],
        ["qpod-debian11-debootstrap.log"],
    )


def test_debian11_builder_choice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if shutil.which("mmdebstrap"):
        assert images.debian11_builder() == "mmdebstrap"  # any user, root too
    with pytest.raises(QpodError, match="unknown Debian 11 builder 'kiwi'"):
        images.debian11_builder("kiwi")
    monkeypatch.setenv("PATH", str(tmp_path))  # neither tool on PATH
    with pytest.raises(QpodError, match=r"needs mmdebstrap: sudo apt-get install mmdebstrap"):
        images.debian11_builder()


@pytest.mark.demo
@pytest.mark.podman
@pytest.mark.timeout(1200)
@needs_podman
def test_debian11_image_has_gcc10_make_and_gdb() -> None:
    if not images.image_exists(images.DEBIAN11_REF) and not (
        shutil.which("mmdebstrap") or (os.geteuid() == 0 and shutil.which("debootstrap"))
    ):
        pytest.skip("Debian 11 image absent and cannot be built here (needs mmdebstrap, or root and debootstrap)")
    ref = images.build_debian11_image()
    assert ref == images.DEBIAN11_REF
    first_id = images.image_id(ref)
    proc = run_in(ref, "gcc --version; gdb --version; make --version; cat /etc/debian_version")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    gcc = next(line for line in lines if line.startswith("gcc "))
    assert " 10." in gcc, gcc
    assert any(line.startswith("GNU gdb ") for line in lines), proc.stdout
    assert any(line.startswith("GNU Make ") for line in lines), proc.stdout
    assert lines[-1].startswith("11."), proc.stdout

    messages: list[str] = []
    assert images.build_debian11_image(progress=messages.append) == ref
    assert messages == [] and images.image_id(ref) == first_id  # reused: nothing was built again
