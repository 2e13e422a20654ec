"""qpod doctor: every check passes on a set-up machine; a missing podman, a broken environment
file, a rules file too big for the library and a user's rootless setup are named with their fix.
(doctor runs all its checks, a container's start included: a test of it needs podman.)"""

import os
import subprocess
from pathlib import Path

import pytest
from conftest import run_qpod


@pytest.mark.podman
def test_doctor_passes_on_this_machine(qpod_home: Path, busybox_image: str) -> None:
    r = run_qpod("doctor")
    assert r.returncode == 0, r.stdout + r.stderr
    for check in (
        "podman installed",
        "OCI runtime",
        "podman API socket answers",
        "trivial container starts",
        "config parses",
        "preload library loads",
    ):
        assert f"ok   {check}" in r.stdout


def test_doctor_names_missing_podman_and_fix(qpod_home: Path, tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    r = run_qpod("doctor", env={"PATH": str(empty)})
    assert r.returncode == 1
    assert "FAIL podman installed (not found)" in r.stdout
    assert "fix: apt-get install podman runc" in r.stdout


@pytest.mark.podman
def test_doctor_reports_broken_environment_file(qpod_home: Path) -> None:
    envs = Path(os.environ["QPOD_CONFIG_DIR"]) / "environments"
    envs.mkdir(parents=True)
    (envs / "bad.yaml").write_text("image: x\nimagee: y\n")
    r = run_qpod("doctor")
    assert r.returncode == 1
    assert f"FAIL config parses: {envs / 'bad.yaml'}:2: unknown key 'imagee'" in r.stdout


def test_rules_file_too_big_for_the_library_is_reported(qpod_home: Path) -> None:
    from qpod_engine.base import paths
    from qpod_engine.config import snapshot
    from qpod_engine.config.rules import RULES_MAX, read_rules
    from qpod_engine.routing import preload_lib

    snapshot.compile_config()
    rules = Path(paths.rules_file())
    text = rules.read_text()
    rules.write_text(text + "".join(f"root\t/r/{i:07d}\tmake\n" for i in range(80_000)))
    assert rules.stat().st_size >= RULES_MAX
    assert read_rules() is None  # what the library sees: no usable rules
    assert any("over 1024 KiB" in p for p in preload_lib.check())


# --- rootless: a real normal user runs the installed qpod ---------------------------------------


@pytest.fixture(scope="module")
def installed() -> None:
    from rootless_user import ensure_installed

    ensure_installed()


@pytest.mark.podman
@pytest.mark.rootless
def test_doctor_as_a_user_without_subordinate_ids_names_the_fix_and_the_fix_works(installed: None) -> None:
    from rootless_user import make_user, remove_user

    user = make_user("qpoddocsys", system=True)  # useradd -r: Debian gives it no subuid/subgid range
    try:
        r = user.qpod("doctor")
        assert r.returncode == 1, r.stdout + r.stderr
        lines = r.stdout.splitlines()
        fail = [i for i, x in enumerate(lines) if x.startswith("FAIL rootless: subordinate uids for qpoddocsys")]
        assert fail, r.stdout
        fix = lines[fail[0] + 1].strip()
        assert fix.startswith("fix: sudo usermod --add-subuids ") and fix.endswith(" qpoddocsys"), fix
        assert "FAIL rootless: subordinate gids for qpoddocsys" in r.stdout
        assert "ok   rootless: user namespaces enabled" in r.stdout
        # apply both fixes as printed (without sudo: we are root), then every rootless check passes
        for line in lines:
            if line.strip().startswith("fix: sudo usermod"):
                cmd = line.strip()[len("fix: sudo ") :].split()
                subprocess.run(cmd, check=True)
        r = user.qpod("doctor")
        assert "FAIL rootless" not in r.stdout, r.stdout
        assert "ok   rootless: podman works for this user" in r.stdout
    finally:
        remove_user(user)


@pytest.mark.podman
@pytest.mark.rootless
def test_doctor_as_a_user_with_a_runtime_dir_that_is_not_there(installed: None) -> None:
    """'su user' (no '-') keeps root's XDG_RUNTIME_DIR or one of a session gone: named, with the fix."""
    from rootless_user import make_user

    user = make_user("qpodtest")
    r = user.qpod("doctor", XDG_RUNTIME_DIR=f"/run/user/{user.uid}-gone")
    assert r.returncode == 1
    assert (
        f"FAIL rootless: runtime dir: XDG_RUNTIME_DIR=/run/user/{user.uid}-gone: No such file or directory" in r.stdout
    )
    assert "fix: unset XDG_RUNTIME_DIR (podman then uses /tmp/podman-run-UID)" in r.stdout
    r = user.qpod("doctor")  # as su - gives it: unset
    assert (
        f"ok   rootless: runtime dir: XDG_RUNTIME_DIR unset (no login session); podman uses "
        f"/tmp/podman-run-{user.uid}" in r.stdout
    )
    assert "ok   podman API socket answers (unix:///tmp/podman-run-" in r.stdout, r.stdout
