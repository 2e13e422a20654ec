"""The README's first lines on this machine as a new developer meets them: root runs
``bash scripts/setup.sh`` with Debian's own python3 (PATH limited to Debian's directories: the
externally managed one, PEP 668), then a freshly created normal user runs ``qpod demo`` from a
``su -`` login shell (no XDG_RUNTIME_DIR, no /run/user/UID): rootless podman, the Debian 11 image
built without root in the user's own storage, gcc 10 proven, outputs owned by the user.

setup.sh installs into the tests' own prefix (rootless_user.PREFIX), never over the user's
/opt/qpod; in CI (CI=true: a machine made for the run, .ci/run) the setup test runs the README's
command exactly as written instead, into /opt/qpod and /usr/local/bin. .ci/run runs the README's
`qpod demo` as a new user from that install itself (its demo-as-a-user part)."""

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from rootless_user import (
    BIN_DIR,
    DEBIAN_PATH,
    IN_CI,
    PREFIX,
    README_BIN_DIR,
    README_PREFIX,
    User,
    ensure_installed,
    make_user,
    need_root,
    remove_user,
    run_setup,
    source_hash,
)

pytestmark = [pytest.mark.podman, pytest.mark.rootless]


def debian_python_is_externally_managed() -> bool:
    stdlib = subprocess.run(
        ["/usr/bin/python3", "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
        capture_output=True,
        text=True,
        env={"PATH": DEBIAN_PATH},
    ).stdout.strip()
    return (Path(stdlib) / "EXTERNALLY-MANAGED").exists()


@pytest.mark.timeout(3600)
def test_setup_with_debians_own_python() -> None:
    need_root()
    if not debian_python_is_externally_managed():
        pytest.skip("/usr/bin/python3 is not an externally managed (PEP 668) Debian python")
    # in CI the README's command as written; elsewhere the same script into the tests' prefix
    prefix, bin_dir = (README_PREFIX, README_BIN_DIR) if IN_CI else (PREFIX, BIN_DIR)
    r = run_setup(readme=IN_CI)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "setup.sh: done in" in r.stdout, r.stdout[-2000:]
    assert f"qpod installed in {prefix}, {bin_dir}/qpod and {bin_dir}/qpod-shell" in r.stdout, r.stdout[-2000:]
    # a venv of Debian's python, this checkout installed in it, on everyone's default PATH
    cfg = dict(line.split(" = ", 1) for line in (prefix / "pyvenv.cfg").read_text().splitlines() if " = " in line)
    assert cfg["home"] == "/usr/bin" and cfg["include-system-site-packages"] == "false"
    assert (prefix / "qpod-source.sha256").read_text().strip() == source_hash()
    # qpod is the installed native-exec client (exec without Python), the CLI's interpreter beside it
    qpod = bin_dir / "qpod"
    where_lib = Path(os.path.realpath(qpod)).parent
    assert os.path.realpath(qpod).startswith(str(prefix / "lib")) and qpod.resolve().name == "qpod-client"
    assert os.readlink(where_lib / "python") == str(prefix / "bin" / "python")
    assert os.path.realpath(bin_dir / "qpod-shell") == str(prefix / "bin" / "qpod-shell")
    # not the editable source tree: a copy every user can read wherever this clone lives
    where = subprocess.run(
        [str(prefix / "bin" / "python"), "-c", "import qpod_engine; print(qpod_engine.__file__)"],
        capture_output=True,
        text=True,
        cwd="/",
    ).stdout.strip()
    assert where.startswith(str(prefix / "lib")), where
    assert Path(where).parent.joinpath("_lib", "libqpod_preload.so").is_file()


@pytest.fixture
def fresh_user() -> Iterator[User]:
    ensure_installed()
    user = make_user(f"qpodnew{uuid.uuid4().hex[:6]}")
    yield user
    remove_user(user)


@pytest.mark.demo
@pytest.mark.timeout(3600)
def test_demo_as_a_fresh_user_from_a_login_shell(fresh_user: User) -> None:
    user = fresh_user
    assert not Path(f"/run/user/{user.uid}").exists()
    r = user.login('echo "XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR-unset} PATH=$PATH"; command -v qpod; qpod demo')
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    lines = r.stdout.splitlines()
    assert lines[0].startswith("XDG_RUNTIME_DIR=unset PATH=") and lines[1] == str(BIN_DIR / "qpod"), lines[:2]
    # the image is built without root, with its progress shown, into the user's own storage
    assert "mmdebstrap --mode=unshare bullseye" in r.stdout and "I: success in" in r.stdout
    images = user.run("podman", "images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert "localhost/qpod-debian11:latest" in images
    assert "host make exit status: 2" in r.stdout  # the host's gcc 12 rejects the old code
    assert "hello from the 2018 branch, built by gcc 10." in r.stdout
    demo = user.home / ".local/state/qpod/demo/legacy-2018"
    st = (demo / "legacy").stat()
    assert (st.st_uid, st.st_gid) == (user.uid, user.gid)
    comment = subprocess.run(["readelf", "-p", ".comment", str(demo / "legacy")], capture_output=True, text=True).stdout
    assert "GCC: (Debian 10." in comment and "12." not in comment
    assert (
        f"/tmp/podman-run-{user.uid}/podman/podman.sock" in (user.home / ".local/state/qpod/podman-socket").read_text()
    )
    # the second time, the image is reused
    again = user.login("qpod demo", timeout=600)
    assert again.returncode == 0 and "mmdebstrap" not in again.stdout, (again.stdout + again.stderr)[-2000:]
