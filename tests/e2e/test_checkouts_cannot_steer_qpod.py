"""Nothing in a checkout steers qpod, and what should be redirected never runs on the host:
a checkout holding its own ``qpod_engine/`` package (or planting modules on PYTHONPATH) runs
nothing through qpod; a repository bound to a broken environment file, or to a ``.qpod.yaml``
never allowed, fails its routed commands with 125 and one line naming the file; a damaged or
hand-edited rules file is compiled again; the allow review marks variables that change how
programs load; the dashboard marks a broken binding."""

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import remove_containers_of, run_qpod
from rootless_user import QPOD, ensure_installed, need_root
from tui_pilot import settle

from qpod_engine import api
from qpod_engine.api import Engine
from qpod_engine.base import paths
from qpod_engine.base.errors import QpodError
from qpod_engine.config import snapshot
from qpod_engine.config.rules import read_rules, seal_rules

BUSYBOX = "localhost/qpod-busybox:latest"


def qpod_shell_c(script: str, cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    """``qpod-shell -c SCRIPT`` (the shell's own environment: no planted PYTHONPATH)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-I", "-m", "qpod_engine.cli.shell", "--shell", "/bin/sh", "-c", script],
        cwd=cwd,
        env={**env, **extra},
        capture_output=True,
        text=True,
        timeout=300,
    )


def plant_package(d: Path, marker: Path) -> None:
    """A checkout's own ``qpod_engine`` package and a ``json.py``: imported, each leaves a marker."""
    (d / "qpod_engine").mkdir(parents=True, exist_ok=True)
    code = f"open({str(marker)!r}, 'a').write(__name__ + '\\n')\n"
    (d / "qpod_engine" / "__init__.py").write_text(code)
    (d / "qpod_engine" / "cli.py").write_text(code)
    (d / "json.py").write_text(code)


# --- no qpod program imports from the cwd or a checkout -------------------------------------------


@pytest.mark.podman  # qpod ps, and the installed qpod (setup.sh into the tests' prefix)
@pytest.mark.rootless
def test_the_installed_qpod_never_imports_a_checkouts_package(tmp_path: Path, qpod_home: Path) -> None:
    """The installed ``qpod`` (the C front and the interpreter beside it), run in a directory
    holding a ``qpod_engine/`` package, as this project's own clone is: every subcommand runs the
    installed package, and so works."""
    need_root()
    ensure_installed()
    hostile = tmp_path / "checkout"
    marker = tmp_path / "ran"
    plant_package(hostile, marker)
    for args in (["status"], ["ps"], ["which", "make"], ["log"], ["exec", "--env", "nope", "true"], ["--version"]):
        r = subprocess.run([QPOD, *args], cwd=hostile, capture_output=True, text=True, timeout=300)
        assert not marker.exists(), f"qpod {' '.join(args)} imported the checkout's code: {marker.read_text()}"
        assert "Traceback" not in r.stderr, (args, r.stderr)
    # the cold exec path: 'qpod exec' in a directory that is not bound goes back to the CLI
    r = subprocess.run([QPOD, "exec", "true"], cwd=hostile, capture_output=True, text=True, timeout=300)
    assert not marker.exists() and "Traceback" not in r.stderr, r.stderr


def test_launcher_and_dashboard_shell_ignore_pythonpath_and_the_cwd(
    tmp_path: Path, qpod_home: Path, make_repo: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The launcher the preload library starts, and the dashboard's shell key, run Python
    isolated: a PYTHONPATH or a cwd holding ``json.py`` and ``qpod_engine/`` imports nothing."""
    monkeypatch.setenv("SHELL", "/bin/sh")  # the shell key asks podman for $SHELL otherwise
    root = make_repo("proj", {"Makefile": "all:\n\t@echo built-here\n"})
    assert run_qpod("env", "add", "e", "--image", BUSYBOX).returncode == 0
    assert run_qpod("init", "e", cwd=root).returncode == 0
    marker = tmp_path / "ran"
    plant_package(root, marker)
    plant_package(tmp_path / "pp", marker)
    launcher = read_rules()
    assert launcher is not None and launcher.launcher[1] == "-I", launcher.launcher
    try:
        # the launcher: make goes to it (then fails or builds: either way it must not import ours)
        qpod_shell_c(f"PYTHONPATH={tmp_path / 'pp'} make", root)
        assert not marker.exists(), marker.read_text()
        # the dashboard's shell key ('e'): its command runs in the repository, with its PYTHONPATH
        got = Engine().repo_shell_command(str(root), "e")
        assert got is not None
        argv, env, cwd = got
        subprocess.run(
            argv,
            cwd=cwd,
            env={**env, "SHELL": "/bin/sh", "PYTHONPATH": str(tmp_path / "pp")},
            input="exit\n",
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert not marker.exists(), marker.read_text()
    finally:
        remove_containers_of(str(root))  # the make above started one


# --- fail closed: never a silent host run ---------------------------------------------------------


def test_broken_environment_file_fails_its_routed_commands(qpod_home: Path, make_repo: Callable[..., Path]) -> None:
    root = make_repo("proj", {"Makefile": "all:\n\t@echo built-on-the-host\n"})
    assert run_qpod("env", "add", "e", "--image", BUSYBOX).returncode == 0
    assert run_qpod("init", "e", cwd=root).returncode == 0
    env_file = Path(paths.environment_file("e"))
    for broken in ("imgae: " + BUSYBOX + "\n", "image: [unclosed\n"):
        env_file.write_text(broken)
        r = qpod_shell_c("make; echo rc=$?", root)
        assert "built-on-the-host" not in r.stdout and "rc=125" in r.stdout, (r.stdout, r.stderr)
        assert f"{env_file}:" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        which = run_qpod("which", "make", cwd=root)
        assert which.stdout.startswith("container (e)") and "would fail (exit 125)" in which.stdout, which.stdout
        assert f"{env_file}:" in which.stdout
        status = run_qpod("status", cwd=root)
        assert "problem:" in status.stdout and str(env_file) in status.stdout, status.stdout
        assert "e (broken)" in run_qpod("repos", "--no-podman").stdout
    # a binding to an environment that does not exist at all: the same
    env_file.unlink()
    r = qpod_shell_c("make; echo rc=$?", root)
    assert "rc=125" in r.stdout and "unknown environment 'e'" in r.stderr, (r.stdout, r.stderr)


def test_repository_file_never_allowed_fails_until_allowed_or_denied(
    qpod_home: Path, make_repo: Callable[..., Path]
) -> None:
    root = make_repo(
        "proj",
        {"Makefile": "all:\n\t@echo built-on-the-host\n", ".qpod.yaml": f"image: {BUSYBOX}\ncap_add: [SYS_PTRACE]\n"},
    )
    r = run_qpod("init", cwd=root, input="")  # not a terminal: nothing is allowed
    assert r.returncode == 1 and "is bound to it" in r.stderr, r.stderr
    r = qpod_shell_c("make; echo rc=$?", root)
    assert "built-on-the-host" not in r.stdout and "rc=125" in r.stdout, (r.stdout, r.stderr)
    assert r.stderr.strip() == (
        f"qpod: {root}/.qpod.yaml: not allowed yet; review and allow it with 'qpod allow' in {root} (or 'qpod deny')"
    ), r.stderr
    assert "it would fail (exit 125)" in run_qpod("which", "make", cwd=root).stdout
    assert "not allowed" in run_qpod("status", cwd=root).stdout
    # qpod deny: the user's word that the host is right here
    assert run_qpod("deny", cwd=root).returncode == 0
    r = qpod_shell_c("make; echo rc=$?", root)
    assert "built-on-the-host" in r.stdout and "rc=0" in r.stdout, (r.stdout, r.stderr)


def test_a_damaged_or_hand_edited_rules_file_is_compiled_again(qpod_home: Path, make_repo: Callable[..., Path]) -> None:
    root = make_repo("proj")
    assert run_qpod("env", "add", "e", "--image", BUSYBOX).returncode == 0
    assert run_qpod("init", "e", cwd=root).returncode == 0
    rules = Path(paths.rules_file())
    good = rules.read_bytes()
    assert read_rules() is not None
    # well formed but wrong (the repository dropped), and sealed with a stale sum: not taken
    rules.write_bytes(good.replace(f"root\t{root}".encode(), b"root\t/nowhere"))
    assert read_rules() is None
    snapshot.load()
    assert rules.read_bytes() == good
    # well formed and correctly sealed, yet not what qpod compiled: compiled again all the same
    body = good.decode().rpartition("sum\t")[0].replace(f"root\t{root}", "root\t/nowhere")
    rules.write_text(seal_rules(body))
    assert read_rules() is not None
    snapshot.load()
    assert rules.read_bytes() == good
    # random bytes
    rules.write_bytes(os.urandom(512))
    snapshot.load()
    assert rules.read_bytes() == good


# --- the allow review -----------------------------------------------------------------------------


def test_allow_review_marks_variables_that_change_how_programs_load(
    qpod_home: Path, make_repo: Callable[..., Path]
) -> None:
    root = make_repo(
        "proj",
        {
            ".qpod.yaml": f"image: {BUSYBOX}\nenv:\n  LD_AUDIT: /tmp/evil.so\n"
            "  LD_LIBRARY_PATH: /tmp/l\n  BASH_ENV: /tmp/b\n  PYTHONPATH: /tmp/p\n"
            "  PERL5OPT: -Mevil\n  CFLAGS: -O2\n"
        },
    )
    r = run_qpod("allow", "--show", cwd=root)
    assert r.returncode == 0, r.stderr
    marked = [line for line in r.stdout.splitlines() if line.startswith("  ! ")]
    for name in ("LD_AUDIT", "LD_LIBRARY_PATH", "BASH_ENV", "PYTHONPATH", "PERL5OPT"):
        assert any(f"variable {name}=" in line for line in marked), (name, r.stdout)
    assert not any("CFLAGS" in line for line in marked) and "variables set: CFLAGS=-O2" in r.stdout
    # so it is not allowed without a word from a terminal
    r = run_qpod("allow", cwd=root, input="")
    assert r.returncode == 1 and "qpod allow --yes" in r.stderr


# --- the dashboard marks a broken binding ---------------------------------------------------------


class NoPodmanEngine(Engine):
    def container_states(self) -> dict[str, str]:
        raise QpodError("podman not asked in this test")


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_dashboard_marks_a_repository_bound_to_a_broken_environment(
    qpod_home: Path, anyio_backend: str, make_repo: Callable[..., Path]
) -> None:
    from qpod_tui.app import make_app

    root = make_repo("proj")
    assert run_qpod("env", "add", "e", "--image", BUSYBOX).returncode == 0
    assert run_qpod("init", "e", cwd=root).returncode == 0
    Path(paths.environment_file("e")).write_text("image: [unclosed\n")
    row = next(r for r in api.Engine().repositories(None) if r.root == str(root))
    assert row.broken and paths.environment_file("e") in row.broken
    app = make_app(NoPodmanEngine())
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        view = app.view("repositories")  # type: ignore[attr-defined]
        assert "e broken" in str(view.table.get_row_at(0)[2])
        detail = str(view.query_one("#repo-detail").render())
        assert f"{paths.environment_file('e')}:2: invalid YAML" in detail, detail
