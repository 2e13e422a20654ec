"""Pulling an environment's image from a real registry (Debian's docker-registry on loopback):
a missing image is pulled on first use; a registry that wants credentials gives one line that
names the image and suggests podman login."""

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

with warnings.catch_warnings():  # deprecated, still the shortest way to a bcrypt htpasswd line
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

from conftest import remove_containers_of, run_qpod, stop_service_on, wait_until

from qpod_engine.base.errors import QpodError
from qpod_engine.podman import lifecycle as podman_backend

pytestmark = pytest.mark.podman
REGISTRY = shutil.which("docker-registry") or "/usr/bin/docker-registry"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_registry(tmp: Path, auth: bool) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    conf = tmp / f"registry-{port}.yml"
    text = (
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp}/data-{port}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    if auth:
        (tmp / "htpasswd").write_text(f"dev:{crypt.crypt('secret', crypt.mksalt(crypt.METHOD_BLOWFISH))}\n")
        text += f"auth:\n  htpasswd:\n    realm: qpod-test\n    path: {tmp}/htpasswd\n"
    conf.write_text(text)
    proc = subprocess.Popen([REGISTRY, "serve", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_until(listening, "docker-registry listening", 15)
    except AssertionError:
        proc.kill()
        raise
    return proc, f"127.0.0.1:{port}"


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
    service_socket = tmp_path / "svc" / "podman.sock"
    monkeypatch.setenv("QPOD_PODMAN_SOCKET", str(service_socket))
    env = {**os.environ, "QPOD_OFF": "1"}
    subprocess.run(
        ["podman", "push", "-q", "--tls-verify=false", busybox_image, f"{open_reg}/team/bb:1"],
        check=True,
        capture_output=True,
        env=env,
    )
    subprocess.run(["podman", "rmi", "-f", f"{open_reg}/team/bb:1"], capture_output=True, env=env)
    try:
        yield open_reg, auth_reg
    finally:
        conf.unlink(missing_ok=True)
        for p in (open_proc, auth_proc):
            p.kill()
        stop_service_on(str(service_socket))
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


def _throttled_proxy(target: str, bytes_per_s: int) -> tuple[str, threading.Event]:
    """A TCP proxy to ``target`` that sends the registry's answers slowly (a big layer on a slow
    link), so podman has time to report bytes while a layer downloads."""
    host, port = target.split(":")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    stop = threading.Event()

    def pipe(a: socket.socket, b: socket.socket, slow: bool) -> None:
        try:
            while data := a.recv(16384):
                b.sendall(data)
                if slow:
                    time.sleep(len(data) / bytes_per_s)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def serve() -> None:
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            u = socket.create_connection((host, int(port)))
            threading.Thread(target=pipe, args=(c, u, False), daemon=True).start()
            threading.Thread(target=pipe, args=(u, c, True), daemon=True).start()
        srv.close()

    threading.Thread(target=serve, daemon=True).start()
    return f"127.0.0.1:{srv.getsockname()[1]}", stop


def _podman(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, env={**os.environ, "QPOD_OFF": "1"})


def _trust(*locations: str) -> None:
    conf = Path("/etc/containers/registries.conf.d/99-qpod-test.conf")
    conf.write_text(
        conf.read_text() + "".join(f'[[registry]]\nlocation = "{r}"\ninsecure = true\n\n' for r in locations)
    )


def test_pull_reports_bytes_while_a_layer_downloads(
    registries: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_reg, _ = registries
    blob = tmp_path / "layer"
    blob.mkdir()
    (blob / "data").write_bytes(os.urandom(12_000_000))  # random: no compression shrinks it
    ref = f"{open_reg}/team/big:1"
    subprocess.run(["tar", "-C", str(blob), "-cf", str(tmp_path / "layer.tar"), "."], check=True)
    assert _podman("import", "-q", str(tmp_path / "layer.tar"), ref).returncode == 0
    assert _podman("push", "-q", "--tls-verify=false", ref).returncode == 0
    assert _podman("rmi", "-f", ref).returncode == 0  # its layer must come from the registry
    slow, stop = _throttled_proxy(open_reg, 4_000_000)
    _trust(slow)  # before qpod starts its private service, which reads registries.conf once
    monkeypatch.setattr(podman_backend, "_clients", {})
    seen: list[tuple[str, int, int]] = []
    try:
        podman_backend.pull_image(f"{slow}/team/big:1", lambda layer, done, total: seen.append((layer, done, total)))
    finally:
        stop.set()
        _podman("rmi", "-f", ref, f"{slow}/team/big:1")
    partial = [(d, t) for _, d, t in seen if t and 0 < d < t]
    assert partial, seen  # bytes and total of the layer while it downloads, not only "complete"
    assert all(t >= 12_000_000 for _, t in partial)


def test_credentials_come_from_registry_auth_file_as_podman_reads_them(
    registries: tuple[str, str], make_repo, qpod_home: Path, tmp_path: Path, busybox_image: str
) -> None:
    _, auth_reg = registries
    ref = f"{auth_reg}/team/secret:2"
    assert _podman("push", "-q", "--tls-verify=false", "--creds", "dev:secret", busybox_image, ref).returncode == 0
    _podman("rmi", "-f", ref)
    token = base64.b64encode(b"dev:secret").decode()
    auth_file = tmp_path / "auth.json"
    auth_file.write_text(json.dumps({"auths": {auth_reg: {"auth": token}}}))
    root = make_repo("private-ok")
    assert run_qpod("env", "add", "private", "--image", ref).returncode == 0
    assert run_qpod("init", "private", cwd=root).returncode == 0
    try:
        r = run_qpod("exec", "echo", "pulled-with-credentials", cwd=root, env={"REGISTRY_AUTH_FILE": str(auth_file)})
        assert (r.returncode, r.stdout) == (0, "pulled-with-credentials\n"), r.stderr
    finally:
        remove_containers_of(str(root))
        _podman("rmi", "-f", ref)


def test_a_failed_pull_names_its_cause(
    registries: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_reg, _ = registries
    (tmp_path / "tls").mkdir()
    tls_proc, tls_reg = _start_registry(tmp_path / "tls", auth=False)  # plain HTTP, not marked insecure
    monkeypatch.setattr(podman_backend, "_clients", {})
    try:
        for ref, expect in (
            (f"{open_reg}/team/nope:1", f"{open_reg} has no image team/nope:1"),
            (f"127.0.0.1:{_free_port()}/team/bb:1", "does not answer (connection refused)"),
            (f"{tls_reg}/team/bb:1", f"TLS with {tls_reg} failed"),
        ):
            with pytest.raises(QpodError) as err:
                podman_backend.pull_image(ref)
            line = str(err.value)
            assert line.startswith(f"cannot pull image {ref}: ") and expect in line, line
            assert "\n" not in line
    finally:
        tls_proc.kill()
