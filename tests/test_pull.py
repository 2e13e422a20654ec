"""Pulling an environment's image from a real registry (Debian's docker-registry on loopback):
a missing image is pulled on first use; a registry that wants credentials gives one line that
names the image and suggests podman login."""

import os
import shutil
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

with warnings.catch_warnings():  # deprecated, still the shortest way to a bcrypt htpasswd line
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

from conftest import remove_containers_of, run_qpod

pytestmark = pytest.mark.podman
REGISTRY = shutil.which("docker-registry") or "/usr/bin/docker-registry"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_registry(tmp: Path, auth: bool) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    conf = tmp / f"registry-{port}.yml"
    text = (f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp}/data-{port}\n"
            f"http:\n  addr: 127.0.0.1:{port}\n")
    if auth:
        (tmp / "htpasswd").write_text(f"dev:{crypt.crypt('secret', crypt.mksalt(crypt.METHOD_BLOWFISH))}\n")
        text += f"auth:\n  htpasswd:\n    realm: qpod-test\n    path: {tmp}/htpasswd\n"
    conf.write_text(text)
    proc = subprocess.Popen([REGISTRY, "serve", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"127.0.0.1:{port}"
        time.sleep(0.1)
    proc.kill()
    pytest.fail("docker-registry did not start")


@pytest.fixture
def registries(tmp_path: Path, busybox_image: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    if not os.path.exists(REGISTRY):
        pytest.skip("docker-registry is not installed")
    if os.geteuid() != 0:
        pytest.skip("writes /etc/containers/registries.conf.d")
    open_proc, open_reg = _start_registry(tmp_path, auth=False)
    auth_dir = tmp_path / "auth"
    auth_dir.mkdir()
    auth_proc, auth_reg = _start_registry(auth_dir, auth=True)
    conf = Path("/etc/containers/registries.conf.d/99-qpod-test.conf")
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("".join(f'[[registry]]\nlocation = "{r}"\ninsecure = true\n\n' for r in (open_reg, auth_reg)))
    # a private API service, started by qpod after the registry config exists
    monkeypatch.setenv("QPOD_PODMAN_SOCKET", str(tmp_path / "svc" / "podman.sock"))
    env = {**os.environ, "QPOD_OFF": "1"}
    subprocess.run(["podman", "push", "-q", "--tls-verify=false", busybox_image, f"{open_reg}/team/bb:1"],
                   check=True, capture_output=True, env=env)
    subprocess.run(["podman", "rmi", "-f", f"{open_reg}/team/bb:1"], capture_output=True, env=env)
    try:
        yield open_reg, auth_reg
    finally:
        conf.unlink(missing_ok=True)
        for p in (open_proc, auth_proc):
            p.kill()
        subprocess.run(["pkill", "-f", f"podman system service.*{tmp_path}"])
        subprocess.run(["podman", "rmi", "-f", f"{open_reg}/team/bb:1"], capture_output=True, env=env)


def test_missing_image_is_pulled_on_first_use(registries: tuple[str, str], make_repo, qpod_home: Path) -> None:
    open_reg, _ = registries
    root = make_repo("pulled")
    assert run_qpod("env", "add", "remote", "--image", f"{open_reg}/team/bb:1").returncode == 0
    assert run_qpod("init", "remote", cwd=root).returncode == 0
    try:
        r = run_qpod("exec", "echo", "from-pulled-image", cwd=root)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "from-pulled-image\n"
        assert f"qpod: pulling {open_reg}/team/bb:1" in r.stderr
    finally:
        remove_containers_of(str(root))


def test_registry_wanting_login_is_one_line(registries: tuple[str, str], make_repo, qpod_home: Path) -> None:
    _, auth_reg = registries
    root = make_repo("private")
    assert run_qpod("env", "add", "private", "--image", f"{auth_reg}/team/secret:2").returncode == 0
    assert run_qpod("init", "private", cwd=root).returncode == 0
    r = run_qpod("exec", "true", cwd=root)
    assert r.returncode == 125
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"qpod: cannot pull image {auth_reg}/team/secret:2: ")
    assert f"run 'podman login {auth_reg}'" in last
