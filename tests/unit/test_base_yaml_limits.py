"""A YAML alias bomb ("billion laughs") in any file qpod reads is refused at once with file:line,
instead of hanging every qpod command while memory grows; deep nesting is an error, not a crash."""

import re
from pathlib import Path

import pytest
from conftest import run_qpod

BOMB = "".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n',
        *(f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)),
    ]
)


def test_the_bomb_is_small_and_would_explode() -> None:
    assert len(BOMB) < 600 and BOMB.count("*") == 72  # 9**9 'lol's once expanded


@pytest.mark.parametrize(
    ("where", "commands"),
    [
        ("repositories.yaml", [["repos", "--no-podman"], ["status"], ["unbind", "--path", "/"]]),
        ("settings.yaml", [["repos", "--no-podman"], ["status"]]),
        ("environments/bomb.yaml", [["env", "show", "bomb"], ["env", "list"]]),
    ],
)
def test_alias_bomb_is_refused_with_file_and_line(qpod_home: Path, where: str, commands: list) -> None:
    config = qpod_home / "config"
    (config / "environments").mkdir(parents=True)
    text = BOMB
    if where == "repositories.yaml":
        text = "repositories:\n  /src/x:\n    environment: e\n" + "".join("  " + ln + "\n" for ln in BOMB.splitlines())
    (config / where).write_text(text)
    first_alias_line = next(i for i, ln in enumerate(text.splitlines(), 1) if "*" in ln)
    for args in commands:
        r = run_qpod(*args, timeout=60)  # a hang guard: expanding the bomb alone took over 60 s
        assert r.returncode == 2, (args, r.returncode, r.stdout, r.stderr)
        assert f"{config / where}:{first_alias_line}: YAML aliases are not supported" in r.stderr, r.stderr


def test_deep_nesting_is_an_error_not_a_crash(qpod_home: Path) -> None:
    config = qpod_home / "config"
    config.mkdir(parents=True)
    (config / "settings.yaml").write_text("keymap: " + "[" * 20000 + "]" * 20000 + "\n")
    r = run_qpod("repos", "--no-podman")
    assert r.returncode == 2, (r.returncode, r.stderr)  # libyaml's composer segfaulted (status -11)
    # qpod's own limit, or (PyYAML 6.0.4 and later) libyaml's, which stops the input first
    assert re.search(
        r"settings\.yaml:1: invalid YAML: (nested deeper than|exceeded maximum nesting depth)", r.stderr
    ), r.stderr


def test_an_anchor_alone_is_fine(qpod_home: Path) -> None:
    config = qpod_home / "config"
    (config / "environments").mkdir(parents=True)
    (config / "environments" / "e.yaml").write_text("image: &img localhost/x:1\ncommands: ['*']\n")
    r = run_qpod("env", "show", "e")
    assert r.returncode == 0, r.stderr
    assert "localhost/x:1" in r.stdout
