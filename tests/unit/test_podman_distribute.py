"""``distribute:`` without podman or ssh: the option, the hash, the wrapper distcc runs as its
ssh (a real sh running the generated script against a stand-in for ssh), what a build host's
answers mean."""

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from qpod_engine.base.errors import ConfigError
from qpod_engine.config import environments as config
from qpod_engine.podman import distribute, remote


def test_entries_are_connection_slash_slots() -> None:
    env, problems = config.check_environment("e", {"image": "i", "distribute": ["b1/8", "build-2.lan/16"]}, "f")
    assert not problems and env.distribute == ["b1/8", "build-2.lan/16"]
    assert distribute.hosts({"distribute": env.distribute}) == [("b1", 8), ("build-2.lan", 16)]
    for bad in ("b1", "b1:8", "b1/0", "/8", "b 1/8", "b1/1000"):
        _env, problems = config.check_environment("e", {"image": "i", "distribute": [bad]}, "f")
        assert [str(p) for p in problems] and "must be CONNECTION/SLOTS" in str(problems[0]), bad


def test_distribute_from_an_environment_on_another_host_is_refused() -> None:
    _env, problems = config.check_environment("e", {"image": "i", "host": "h", "distribute": ["b1/4"]}, "f")
    assert len(problems) == 1 and isinstance(problems[0], ConfigError)
    assert "'distribute' with 'host' is not supported" in str(problems[0])


def test_the_container_hash_changes_only_for_an_environment_that_distributes() -> None:
    # the hashes of the release before distribute: existing containers are not made again
    assert config.Environment(name="e", image="i").config_hash() == "a5f8cb331f25"
    assert config.Environment(name="e", image="i", mounts=["/a:/b"], host="b1").config_hash() == "2bbede9dff1e"
    one = config.Environment(name="e", image="i", distribute=["b1/8"]).config_hash()
    two = config.Environment(name="e", image="i", distribute=["b1/8", "b2/8"]).config_hash()
    assert len({one, two, "a5f8cb331f25"}) == 3


def test_the_job_there_is_distccd_on_the_channel_never_a_port() -> None:
    cmd = distribute.remote_command("/run/user/1000/podman/podman.sock", "qpod-e-distccd-b1-12345678")
    assert "--inetd" in cmd and "--daemon" not in cmd and "--listen" not in cmd and "--port" not in cmd
    assert cmd.startswith("podman --url unix:///run/user/1000/podman/podman.sock exec -i -e LD_PRELOAD=")
    assert " qpod-e-distccd-b1-12345678 distccd --inetd " in cmd


def test_distccd_containers_are_named_per_environment_and_host(qpod_home: Path) -> None:
    a, b = distribute.distccd_name("e", "b1"), distribute.distccd_name("e", "b2")
    assert a.startswith("qpod-e-distccd-b1-") and b.startswith("qpod-e-distccd-b2-") and a != b


@pytest.fixture
def wrapper(tmp_path: Path) -> tuple[Path, Path]:
    """The generated wrapper with MOUNT at a temp dir, and a stand-in for ssh whose exit status
    and last words are the file ``status`` (STATUS WORDS...)."""
    mount = tmp_path / "mount"
    (mount / "state").mkdir(parents=True)
    fake = tmp_path / "fake-ssh"
    fake.write_text(
        '#!/bin/sh\nread -r s rest < "$(dirname "$0")/status"\ncat >/dev/null\n'
        '[ -n "$rest" ] && echo "$rest" >&2\necho "job $*"\nexit "$s"\n'
    )
    fake.chmod(0o755)
    text = distribute.wrapper_text("e", [("b1", [str(fake), "b1-there"]), ("b2", [str(fake), "b2-there"])])
    script = tmp_path / "ssh"
    script.write_text(text.replace(distribute.MOUNT, str(mount)))
    script.chmod(0o755)
    return script, mount


def _job(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(script), *args], input="preprocessed", capture_output=True, text=True, timeout=60)


def test_a_job_goes_to_its_host_as_distcc_asks(wrapper: tuple[Path, Path]) -> None:
    script, _mount = wrapper
    (script.parent / "status").write_text("0\n")
    r = _job(script, "-l", "me", "b2", "distccd", "--inetd", "--enable-tcp-insecure")
    assert (r.returncode, r.stdout, r.stderr) == (0, "job b2-there\n", "")
    r = _job(script, "b9", "distccd", "--inetd")
    assert r.returncode == 255 and "build host 'b9', which environment e does not list" in r.stderr


def test_a_failing_host_is_named_once_until_it_works_again(wrapper: tuple[Path, Path]) -> None:
    script, mount = wrapper
    (script.parent / "status").write_text("255 ssh: connect to host 10.0.0.2 port 22: Connection refused\n")
    with ThreadPoolExecutor(8) as pool:  # make -j8: the jobs in flight fail together
        results = list(pool.map(lambda _: _job(script, "b1", "distccd", "--inetd"), range(16)))
    assert all(r.returncode == 255 for r in results)
    said = [line for r in results for line in r.stderr.splitlines()]
    assert said == [
        "qpod: build host b1 failed, its compiles run here: ssh: connect to host 10.0.0.2 port 22: Connection refused"
    ]
    assert not [p for p in os.listdir(mount / "state") if p.startswith("ssh-err")]  # nothing left behind
    (script.parent / "status").write_text("0\n")
    assert _job(script, "b1").returncode == 0  # it works again: the next failure is said again
    (script.parent / "status").write_text("125 Error: no container with name or ID found\n")
    r = _job(script, "b1")
    assert r.returncode == 125 and r.stderr.splitlines() == [
        "qpod: build host b1 failed, its compiles run here: no distccd container there (Error: no container "
        "with name or ID found): qpod makes it on the next launch"
    ]


def _answers(monkeypatch: pytest.MonkeyPatch, rc: int, out: str, err: str = "") -> None:
    conn = remote.Connection("b1", "10.0.0.2", "me", 22, "/run/podman/podman.sock", None)
    monkeypatch.setattr(remote, "connection", lambda name: conn)
    monkeypatch.setattr(distribute, "_ssh_job", lambda *a, **k: (rc, out, err))


def test_a_host_whose_image_differs_is_refused_in_one_line(qpod_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"name": "e", "image": "localhost/qpod-debian11:latest", "distribute": ["b1/8"]}
    _answers(monkeypatch, 0, "differs\tsha256:" + "b" * 64 + "\n")
    state, why = distribute.ensure_host(env, "b1", "sha256:" + "a" * 64)
    assert state == "refused" and "\n" not in why
    assert why == (
        "its image localhost/qpod-debian11:latest is sha256:bbbbbbbbbbbb, here sha256:aaaaaaaaaaaa: a different "
        "compiler would build different objects (podman image scp localhost/qpod-debian11:latest b1:: copies "
        "this machine's)"
    )
    _answers(monkeypatch, 255, "", "ssh: connect to host 10.0.0.2 port 22: No route to host\n")
    assert distribute.ensure_host(env, "b1", "x") == (
        "down",
        "cannot reach it over ssh: ssh: connect to host 10.0.0.2 port 22: No route to host",
    )
    _answers(monkeypatch, 0, "ok\n")
    assert distribute.ensure_host(env, "b1", "x") == ("ok", "")
