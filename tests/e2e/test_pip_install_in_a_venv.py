"""A venv of your own (``python3 -m venv V && V/bin/pip install .``, as the README offers): its
``qpod`` is the native client, as setup.sh's link is, so ``qpod exec`` starts no Python; every
other subcommand runs the venv's own interpreter, and ``python -I -m qpod_engine.cli`` still works.
No podman: a fresh venv and this checkout's wheel (its dependencies are not needed for this)."""

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_a_venvs_qpod_is_the_native_client_and_finds_the_venvs_python(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--no-deps", str(REPO_ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert pip.returncode == 0, pip.stderr
    qpod = venv / "bin" / "qpod"
    assert qpod.read_bytes()[:4] == b"\x7fELF", "bin/qpod is not the native client"
    assert not qpod.is_symlink()  # a copy: it finds bin/python beside itself
    version = subprocess.run([str(qpod), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("qpod "), version
    cli = subprocess.run(
        [str(venv / "bin" / "python"), "-I", "-m", "qpod_engine.cli", "--version"], capture_output=True, text=True
    )
    assert cli.returncode == 0 and cli.stdout == version.stdout, cli
    assert (venv / "bin" / "qpod-shell").read_bytes().startswith(b"#!"), "qpod-shell stays the Python entry point"
