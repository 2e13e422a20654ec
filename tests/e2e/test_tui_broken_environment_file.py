"""The TUI's edit of an environment file qpod cannot parse never rewrites it with the form's
content (an empty form once replaced it, mounts and env lost). The form
says why and refuses to save; ctrl+e opens the file in $EDITOR in the same terminal, and the
form reads it again afterwards. A real terminal (tmux), a real editor process, real files."""

import os
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, wait_until
from tmux_driver import Tmux

from qpod_engine.api import Engine
from qpod_engine.base.errors import QpodError
from qpod_engine.config.environments import Environment

DEADLINE = 180
BROKEN = "image: localhost/x:1\nmounts:\n  - /data:/data\nenv:\n  KEEP: me\nbogus_key: 1\n"


def _write_env(qpod_home: Path, text: str) -> Path:
    path = qpod_home / "config" / "environments" / "legacy.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_engine_never_saves_a_form_over_a_file_it_cannot_parse(qpod_home: Path) -> None:
    path = _write_env(qpod_home, BROKEN)
    with pytest.raises(QpodError, match="legacy.yaml:6: unknown key 'bogus_key'.*will not rewrite it"):
        Engine().save_environment(Environment(name="legacy", image="localhost/y:2"), create=False, edit=True)
    assert path.read_text() == BROKEN
    path.write_text(BROKEN.replace("bogus_key: 1\n", ""))  # fixed by hand: the form may save again
    Engine().save_environment(Environment(name="legacy", image="localhost/y:2"), create=False, edit=True)
    assert "localhost/y:2" in path.read_text()


def test_tui_edit_of_a_broken_file_refuses_to_save_and_opens_the_editor(qpod_home: Path, tmp_path: Path) -> None:
    path = _write_env(qpod_home, BROKEN)
    marker = tmp_path / "editor-ran"
    editor = tmp_path / "fix-editor"
    editor.write_text(f'#!/bin/sh\necho "$@" > {marker}\nsed -i \'/^bogus_key:/d\' "$1"\n')
    editor.chmod(0o755)
    env = {
        "QPOD_CONFIG_DIR": os.environ["QPOD_CONFIG_DIR"],
        "QPOD_STATE_DIR": os.environ["QPOD_STATE_DIR"],
        "TERM": "xterm-256color",
        "PYTHONPATH": str(REPO_ROOT),
        "EDITOR": str(editor),
        "VISUAL": "",
        "COLUMNS": "160",
        "LINES": "48",
    }
    tui = Tmux(f"{sys.executable} -m qpod_engine.cli tui --view environments", env=env, width=160, height=48)
    try:
        tui.wait_for("broken file", timeout=DEADLINE)
        tui.send("e")
        tui.wait_for("qpod cannot read this file", timeout=DEADLINE)
        assert "unknown key 'bogus_key'" in tui.screen()
        tui.send("C-s")
        tui.wait_for("Not saved", timeout=DEADLINE)
        assert path.read_text() == BROKEN  # nothing written over it

        tui.send("C-e")  # the editor runs in this terminal, then the form reads the file again
        wait_until(marker.exists, tui.screen, DEADLINE)
        assert marker.read_text().strip() == str(path)
        wait_until(
            lambda: "/data:/data" in tui.screen() and "qpod cannot read" not in tui.screen(), tui.screen, DEADLINE
        )
        assert "KEEP=me" in tui.screen()
        tui.send("C-s")
        tui.wait_for("saved to", timeout=DEADLINE)
        text = path.read_text()
        assert "/data:/data" in text and "KEEP: me" in text and "bogus_key" not in text
        tui.send("q")
        tui.wait_dead(DEADLINE)
    finally:
        tui.kill()
