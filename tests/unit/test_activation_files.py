"""qpod activate's files and startup-file lines, in a home of the test's own: what the shells
and the generator read (parsed by the real shells, values exact whatever the paths hold), and
the user's startup files kept byte for byte apart from the one line (through symlinks, never
half-written, refused when not theirs or not text)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from qpod_engine.activation import state
from qpod_engine.base.errors import QpodError
from qpod_engine.base.paths import PACKAGE_DIR
from qpod_engine.routing import preload_lib

GENERATOR = Path(PACKAGE_DIR) / "activation" / "environment_generator.sh"
# another library already preloaded (a real one: a missing one would make every program warn)
OTHER = next(str(p) for g in ("/usr/lib/*/libm.so.6", "/lib64/libm.so.6", "/usr/lib64/libm.so.6")
             for p in sorted(Path("/").glob(g[1:])))  # fmt: skip
BASHRC = "# my bashrc\nalias ll='ls -l'\nexport PATH=\"$HOME/bin:$PATH\"\n"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # a config dir whose path needs quoting in every shell
    h = tmp_path / 'ho me\'s "x"'
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    for var in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "QPOD_CONFIG_DIR", "QPOD_STATE_DIR", "ZDOTDIR", "LD_PRELOAD"):
        monkeypatch.delenv(var, raising=False)
    return h


def test_activate_puts_one_line_on_top_and_deactivate_restores_the_files(home: Path) -> None:
    (home / ".bashrc").write_text(BASHRC)
    (home / ".profile").write_text("# profile\n")
    state.activate()
    state.activate()  # again: still one line each
    lines = (home / ".bashrc").read_text().splitlines(True)
    assert lines[0].endswith(state.MARK + "\n") and "".join(lines[1:]) == BASHRC
    assert sum(state.MARK in ln for ln in (home / ".profile").read_text().splitlines()) == 1
    st = state.status()
    assert st.on and st.library_present and str(home / ".bashrc") in st.shells["bash"]
    removed = state.deactivate()
    assert (home / ".bashrc").read_text() == BASHRC and (home / ".profile").read_text() == "# profile\n"
    assert str(home / ".bashrc") in removed and not state.status().on


def test_a_symlinked_startup_file_stays_a_link_and_its_target_is_edited(home: Path) -> None:
    dotfiles = home / "dotfiles"
    dotfiles.mkdir()
    (dotfiles / "bashrc").write_text(BASHRC)
    (home / ".bashrc").symlink_to(dotfiles / "bashrc")
    state.activate()
    assert (home / ".bashrc").is_symlink() and state.MARK in (dotfiles / "bashrc").read_text()
    state.deactivate()
    assert (dotfiles / "bashrc").read_text() == BASHRC


def test_a_startup_file_not_utf8_or_not_yours_is_refused_and_left_as_it_was(home: Path) -> None:
    raw = b"# caf\xe9 latin-1\n"
    (home / ".bashrc").write_bytes(raw)
    with pytest.raises(QpodError, match="not UTF-8"):
        state.activate()
    assert (home / ".bashrc").read_bytes() == raw
    if os.geteuid() == 0:
        (home / ".bashrc").write_text(BASHRC)
        os.chown(home / ".bashrc", 65534, 65534)
        with pytest.raises(QpodError, match="belongs to uid 65534"):
            state.activate()
        assert (home / ".bashrc").read_text() == BASHRC


def hook_dir(home: Path) -> Path:
    return home / ".config" / "qpod" / "activation"


@pytest.mark.parametrize(("shell", "hook"), [("bash", "hook.bash"), ("sh", "hook.bash"), ("zsh", "hook.zsh")])
def test_the_hooks_parse_in_their_shells(home: Path, shell: str, hook: str) -> None:
    """sh too: bash's login file may be ~/.profile, which sh reads as well."""
    state.activate()
    r = subprocess.run([shell, "-n", str(hook_dir(home) / hook)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_the_fish_hook_parses(home: Path) -> None:
    state.activate()
    fish = home / ".config" / "fish" / "conf.d" / "qpod-activate.fish"
    if not fish.exists():
        pytest.skip("fish is not installed (setup.sh --test installs it)")
    r = subprocess.run(["fish", "--no-execute", str(fish)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr


@pytest.fixture
def loader(home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for a loader of 32-bit programs, at a path whose quoting matters; the test
    creates it (such programs can run) or not."""
    path = home / "lib 32's" / "ld-linux.so.2"
    monkeypatch.setattr(preload_lib, "OTHER_CLASS_LOADERS", (str(path),))
    return path


@pytest.mark.parametrize("other_class", [False, True], ids=["64-bit only", "32-bit loader present"])
def test_session_exports_exact_values_and_the_generator_keeps_them_literal(
    home: Path, loader: Path, other_class: bool
) -> None:
    """The library through $LIB (literal, the loader expands it) only where a loader of another
    class is installed, decided when the session starts; its own path elsewhere."""
    own, any_class = preload_lib.entries()
    if other_class and "$LIB" not in any_class:
        pytest.skip("the build found no directory where this loader expands $LIB")
    state.activate()
    if other_class:
        loader.parent.mkdir()
        loader.write_bytes(b"")
    entry = any_class if other_class else own
    session = hook_dir(home) / "session.sh"
    shown = subprocess.run(
        ["sh", "-c", '. "$1"; printf "%s\\n" "$LD_PRELOAD" "$QPOD_CONFIG_DIR"; set | grep -c "^qpod_" || true',
         "sh", str(session)],
        capture_output=True, text=True, env={"PATH": os.defpath, "LD_PRELOAD": OTHER},
    )  # fmt: skip
    ldp, cfg, leftovers = shown.stdout.splitlines()
    assert (ldp, cfg, leftovers) == (f"{entry}:{OTHER}", str(home / ".config" / "qpod"), "0"), shown
    out = subprocess.run(
        [str(GENERATOR)], capture_output=True, text=True,
        env={"PATH": os.defpath, "HOME": str(home), "LD_PRELOAD": OTHER},
    )  # fmt: skip
    assert out.returncode == 0 and out.stderr == "", out.stderr

    def systemd_quoted(value: str) -> str:  # systemd's parser undoes these escapes, expands nothing
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`").replace("$", "\\$") + '"'

    lines = out.stdout.splitlines()
    assert f"QPOD_CONFIG_DIR={systemd_quoted(str(home / '.config' / 'qpod'))}" in lines, out.stdout
    assert f"LD_PRELOAD={systemd_quoted(f'{entry}:{OTHER}')}" in lines, out.stdout


def test_the_fish_hook_chooses_the_entry_when_fish_starts(home: Path, loader: Path) -> None:
    own, any_class = preload_lib.entries()
    state.activate()
    fish = home / ".config" / "fish" / "conf.d" / "qpod-activate.fish"
    if not shutil.which("fish"):
        pytest.skip("fish is not installed (setup.sh --test installs it)")
    text = fish.read_text()
    # run the hook's choice alone (the hook itself execs a new fish)
    choice = text[text.index("        set -l qpod_entry") : text.index("        set -gx LD_PRELOAD")]
    script = choice + "        echo $qpod_entry\n"
    first = subprocess.run(["fish", "-c", script], capture_output=True, text=True)
    loader.parent.mkdir()
    loader.write_bytes(b"")
    then = subprocess.run(["fish", "-c", script], capture_output=True, text=True)
    assert (first.stdout, then.stdout, first.stderr + then.stderr) == (f"{own}\n", f"{any_class}\n", "")


def test_the_generator_says_nothing_unless_activated_and_the_file_is_the_users_alone(home: Path) -> None:
    env = {"PATH": os.defpath, "HOME": str(home)}
    assert subprocess.run([str(GENERATOR)], capture_output=True, text=True, env=env).stdout == ""
    state.activate()
    session = hook_dir(home) / "session.sh"
    session.chmod(0o666)
    assert subprocess.run([str(GENERATOR)], capture_output=True, text=True, env=env).stdout == ""
    session.chmod(0o644)
    assert "QPOD_PRELOAD=" in subprocess.run([str(GENERATOR)], capture_output=True, text=True, env=env).stdout


def test_doctor_says_when_the_session_predates_a_32_bit_loader(
    home: Path, loader: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own, any_class = preload_lib.entries()
    if "$LIB" not in any_class:
        pytest.skip("the build found no directory where this loader expands $LIB")
    monkeypatch.setenv("LD_PRELOAD", own)  # what a session started without a 32-bit loader got
    assert not any("32-bit" in p for p in preload_lib.check())
    loader.parent.mkdir()
    loader.write_bytes(b"")  # then i386 support was installed
    assert any("32-bit programs can run here now" in p for p in preload_lib.check())
    monkeypatch.setenv("LD_PRELOAD", any_class)  # a session started since
    assert not any("32-bit" in p for p in preload_lib.check())
