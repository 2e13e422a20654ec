"""Environment and settings files: validation with file:line messages, atomic writes."""

import os
from pathlib import Path

import pytest
from conftest import REPO_ROOT, run_qpod

from qpod_engine.base import paths
from qpod_engine.base.errors import ConfigError
from qpod_engine.config import environments as config


def write_env(name: str, text: str) -> Path:
    p = Path(paths.environment_file(name))
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_env_add_show_list_roundtrip(qpod_home: Path) -> None:
    r = run_qpod(
        "env",
        "add",
        "old",
        "--image",
        "registry.example.com/mmsx:2018.3",
        "--mount",
        "/tmp:/tmp:ro",
        "--env",
        "CCACHE_DIR=/cc",
        "--command",
        "make",
        "--command",
        "cmake",
        "--workdir-root",
        "/qpod",
        "--cap-add",
        "SYS_PTRACE",
    )
    assert r.returncode == 0, r.stderr
    env = config.load_environment("old")
    assert env.image == "registry.example.com/mmsx:2018.3"
    assert env.mounts == ["/tmp:/tmp:ro"] and env.env == {"CCACHE_DIR": "/cc"}
    assert env.commands == ["make", "cmake"] and env.workdir_root == "/qpod" and env.cap_add == ["SYS_PTRACE"]
    text = Path(paths.environment_file("old")).read_text()
    assert "passthrough" not in text  # defaults are not written: the file stays what the user wrote
    listed = run_qpod("env", "list", "--json")
    assert listed.returncode == 0 and '"old"' in listed.stdout
    shown = run_qpod("env", "show", "old")
    assert "registry.example.com/mmsx:2018.3" in shown.stdout


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("image: a\nmounts: [/a:/b]\nimagee: x\n", 3, "unknown key 'imagee'"),
        ("mounts: [/a:/b]\n", 1, "missing required key 'image'"),
        ("image: a\nenv:\n  FOO: [1, 2]\n", 3, "must be a scalar"),
        ("image: a\nmounts:\n  - /a:/b\n  - relative:/b\n", 4, "host path must be absolute"),
        ("image: a\nmounts:\n  - /a:/b:rx\n", 3, "mode must be ro or rw"),
        ("image: a\ncommands: [make, /usr/bin/gdb]\n", 2, "bare command name"),
        ("image: a\nworkdir_root: qpod\n", 2, "absolute path"),
        ("image: a\nulimits: {nofile: lots}\n", 2, "SOFT[:HARD]"),
        ("image: a\n  bad: indent\n", 2, "invalid YAML"),
        ("image: [unclosed\n", 2, "invalid YAML"),
        ("image: a\nimage: b\n", 2, "duplicate key"),
    ],
)
def test_invalid_environment_names_file_and_line(qpod_home: Path, text: str, line: int, words: str) -> None:
    p = write_env("broken", text)
    with pytest.raises(ConfigError) as info:
        config.load_environment("broken")
    assert info.value.line == line, str(info.value)
    assert words in str(info.value)
    assert str(info.value).startswith(f"{p}:{line}: ")
    # the CLI shows the same single line and fails
    r = run_qpod("env", "show", "broken")
    assert r.returncode != 0
    assert r.stderr.strip() == f"qpod: {p}:{line}: {info.value.detail}"


def test_unknown_environment_lists_known(qpod_home: Path) -> None:
    write_env("alpha", "image: a\n")
    write_env("beta", "image: b\n")
    r = run_qpod("env", "show", "gamma")
    assert r.returncode == 2
    assert "unknown environment 'gamma' (known: alpha, beta)" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_env_add_refuses_to_overwrite_and_keeps_file(qpod_home: Path) -> None:
    p = write_env("keep", "# my comment\nimage: a\n")
    before = p.read_bytes()
    r = run_qpod("env", "add", "keep", "--image", "b")
    assert r.returncode != 0 and "exists" in r.stderr
    assert p.read_bytes() == before


def test_failed_write_leaves_user_file_intact(qpod_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from qpod_engine.base import yamlio
    from qpod_engine.base.errors import QpodError

    p = write_env("intact", "image: original\n")
    real_replace = os.replace

    def failing_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(QpodError, match="No space left"):
        yamlio.write_atomic(p, "image: new\n")
    monkeypatch.setattr(os, "replace", real_replace)
    assert p.read_text() == "image: original\n"
    assert [x.name for x in p.parent.iterdir()] == ["intact.yaml"]  # no temp file left behind


def test_invalid_cli_input_writes_nothing(qpod_home: Path) -> None:
    r = run_qpod("env", "add", "x", "--image", "a", "--mount", "nocolon")
    assert r.returncode == 2 and "HOST:CONTAINER" in r.stderr
    assert not Path(paths.environment_file("x")).exists()
    r = run_qpod("env", "add", "bad name!", "--image", "a")
    assert r.returncode == 2 and "must be letters" in r.stderr


def test_settings_validation(qpod_home: Path) -> None:
    p = Path(paths.settings_file())
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("runtime: runc\nlog_max_bytes: -1\n")
    with pytest.raises(ConfigError) as info:
        config.load_settings()
    assert info.value.line == 2 and "positive integer" in str(info.value)
    p.write_text("runtime: runc\nkeymap: {quit: ctrl+q}\n")
    s = config.load_settings()
    assert s.runtime == "runc" and s.keymap == {"quit": "ctrl+q"}


def test_config_hash_ignores_routing_only_keys() -> None:
    a = config.Environment(name="e", image="i")
    b = config.Environment(name="e", image="i", commands=["make", "ninja"], env={"X": "1"})
    c = config.Environment(name="e", image="i", mounts=["/a:/b"])
    assert a.config_hash() == b.config_hash() != c.config_hash()


def test_readme_reference_is_the_field_table():
    """One table of environment options: the README's reference is generated from it."""
    from qpod_engine.config.fields import markdown_table

    readme = (REPO_ROOT / "README.md").read_text()
    assert markdown_table() in readme, (
        "README's environment keys differ from env_fields.FIELDS: "
        "paste the output of 'python -m qpod_engine.config.fields'"
    )


def test_set_setting_keeps_the_users_file_as_written(qpod_home):
    """The dashboard saves its theme into settings.yaml: one line replaced or appended, the
    user's comments and other keys kept; a file where that cannot be done safely is left alone."""
    from pathlib import Path

    from qpod_engine.base import paths
    from qpod_engine.base.errors import ConfigError
    from qpod_engine.config import environments as config

    settings = Path(paths.settings_file())
    settings.parent.mkdir(parents=True, exist_ok=True)
    mine = "# my settings\nlog_keep: 5  # more history\ntheme: dracula\n"
    settings.write_text(mine)
    config.set_setting("theme", "nord")
    assert settings.read_text() == mine.replace("theme: dracula", 'theme: "nord"')
    assert config.load_settings().theme == "nord" and config.load_settings().log_keep == 5
    odd = "keymap:\n  theme: x\nlog_keep: [\n"  # broken YAML: refused, the file unchanged
    settings.write_text(odd)
    import pytest

    with pytest.raises(ConfigError):
        config.set_setting("theme", "nord")
    assert settings.read_text() == odd
