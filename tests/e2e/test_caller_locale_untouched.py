"""The caller's locale reaches commands untouched: Python's C-locale coercion (PEP 538: with
LANG=C it sets LC_CTYPE=C.UTF-8 in its own environment) must not leak into qpod-shell or into a
redirected command, cold (through the launcher) or warm (the C client alone)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.podman


def caller_env(**extra: str) -> dict[str, str]:
    keep = ("PATH", "HOME", "QPOD_CONFIG_DIR", "QPOD_STATE_DIR")
    return {**{k: os.environ[k] for k in keep if k in os.environ}, "LANG": "C", **extra}


PROBE = "echo LC_CTYPE=${LC_CTYPE-unset} LANG=$LANG"


@pytest.mark.parametrize("lc_ctype", [None, "C"])
def test_qpod_shell_and_its_commands_keep_the_callers_locale(bound_repo: Path, lc_ctype: str | None) -> None:
    env = caller_env(**({"LC_CTYPE": lc_ctype} if lc_ctype else {}))
    want = f"LC_CTYPE={lc_ctype or 'unset'} LANG=C"
    shell = [sys.executable, "-I", "-m", "qpod_engine.cli.shell", "--shell", "/bin/sh", "-c"]
    # the shell itself, then a command the shell sends to the container (sh ./probe.sh lives in
    # the repository: redirected), first cold, then warm
    (bound_repo / "probe.sh").write_text(PROBE + "\n")
    for _ in range(2):
        r = subprocess.run(
            [*shell, f"{PROBE}; sh ./probe.sh"], cwd=bound_repo, env=env, capture_output=True, text=True, timeout=300
        )
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == [want, want], r.stdout


def test_qpod_exec_cold_and_warm_see_one_environment(bound_repo: Path) -> None:
    env = caller_env()
    outs = []
    for _ in range(2):  # the first starts the container through the launcher; the second is warm
        r = subprocess.run(
            [sys.executable, "-I", "-m", "qpod_engine.cli", "exec", "sh", "-c", PROBE],
            cwd=bound_repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr
        outs.append(r.stdout)
    assert outs == ["LC_CTYPE=unset LANG=C\n"] * 2, outs
