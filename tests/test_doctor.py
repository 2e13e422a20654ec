"""qpod doctor: every check passes on a set-up machine; a missing podman is named with its fix."""

import os
from pathlib import Path

import pytest
from conftest import run_qpod


@pytest.mark.podman
def test_doctor_passes_on_this_machine(qpod_home: Path, busybox_image: str) -> None:
    r = run_qpod("doctor")
    assert r.returncode == 0, r.stdout + r.stderr
    for check in ("podman installed", "OCI runtime", "podman API socket answers", "trivial container starts",
                  "config parses", "preload library loads"):
        assert f"ok   {check}" in r.stdout


def test_doctor_names_missing_podman_and_fix(qpod_home: Path, tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    r = run_qpod("doctor", env={"PATH": str(empty)})
    assert r.returncode == 1
    assert "FAIL podman installed (not found)" in r.stdout
    assert "fix: apt-get install podman runc" in r.stdout


def test_doctor_reports_broken_environment_file(qpod_home: Path) -> None:
    envs = Path(os.environ["QPOD_CONFIG_DIR"]) / "environments"
    envs.mkdir(parents=True)
    (envs / "bad.yaml").write_text("image: x\nimagee: y\n")
    r = run_qpod("doctor")
    assert r.returncode == 1
    assert f"FAIL config parses: {envs / 'bad.yaml'}:2: unknown key 'imagee'" in r.stdout


def test_rules_file_too_big_for_the_library_is_reported(qpod_home: Path) -> None:
    from qpod_engine import paths, preload_lib, snapshot

    snapshot.compile_config()
    rules = Path(paths.rules_file())
    text = rules.read_text()
    rules.write_text(text + "".join(f"root\t/r/{i:07d}\tmake\n" for i in range(80_000)))
    assert rules.stat().st_size >= preload_lib.RULES_MAX
    assert preload_lib.read_rules() is None  # what the library sees: no usable rules
    assert any("over 1024 KiB" in p for p in preload_lib.check())
