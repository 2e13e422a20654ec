"""A signal a program sends to the command's process reaches that process, as natively: kill
-USR1 <make> toggles make's debug output and the build goes on (it killed the recipe's shell
before); SIGTERM still ends the whole build, leaving nothing in the container (see README:
qpod cannot tell kill PID from kill -- -PGID, and a build ended by SIGTERM must leave no
orphans)."""

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import container_processes, remove_containers_of, run_qpod, wait_until

pytestmark = [pytest.mark.podman, pytest.mark.demo]

MAKEFILE = "all:\n\t@touch started; sleep 4; echo recipe-done\n"


def start_make(root: Path) -> subprocess.Popen[str]:
    # bash execs make (one simple command), the library execs the client: the pid is the client's
    return subprocess.Popen(
        [sys.executable, "-I", "-m", "qpod_engine.cli.shell", "--shell", "/bin/bash", "-c", "make"],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGTERM], ids=["usr1", "term"])
def test_a_signal_sent_to_make_reaches_make(
    qpod_home: Path, make_repo: Callable[..., Path], debian11_image: str, sig: signal.Signals
) -> None:
    root = make_repo("probe", {"Makefile": MAKEFILE})
    assert run_qpod("env", "add", "d11", "--image", debian11_image).returncode == 0
    assert run_qpod("init", "d11", cwd=root).returncode == 0
    try:
        p = start_make(root)
        wait_until(lambda: (root / "started").exists(), "the recipe started", timeout=300)
        os.kill(p.pid, sig)
        out, err = p.communicate(timeout=120)
        if sig == signal.SIGUSR1:  # make toggles its debug output; the recipe goes on
            assert p.returncode == 0 and "recipe-done" in out, (p.returncode, out, err)
        else:
            # the whole build ends, as by the terminal or kill -- -PGID: make ends by the signal,
            # or by its own "Stop." (exit 2) when its recipe's shell died first (make's race,
            # natively the same with a group kill); nothing of it is left in the container
            assert p.returncode in (-signal.SIGTERM, 2) and "recipe-done" not in out, (p.returncode, out, err)
            wait_until(
                lambda: not any("sleep 4" in cmd for _, cmd in container_processes(root)),
                "the recipe's sleep to be gone",
            )
    finally:
        remove_containers_of(str(root))
