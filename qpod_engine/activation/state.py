"""Turning activation on and off for the user, and saying whether it is on.

``activate`` writes the per-user files (``scripts``), puts one line at the top of each shell's
startup file that sources its hook, and compiles the rules the library routes by. ``deactivate``
removes exactly those lines and files. Startup files are edited in place through symlinks, keep
their mode, and are replaced atomically: an error leaves them as they were."""

import os
import shlex
import shutil
from dataclasses import dataclass, field

from qpod_engine.activation import scripts
from qpod_engine.base import paths
from qpod_engine.base.errors import EXIT_QPOD, QpodError
from qpod_engine.base.fileio import make_dirs, write_atomic
from qpod_engine.routing import preload_lib

MARK = "# qpod activate ('qpod deactivate' removes this line)"
# where systemd looks for user environment generators (systemd.environment-generator(7))
GENERATOR_DIRS = (
    "/etc/systemd/user-environment-generators",
    "/usr/local/lib/systemd/user-environment-generators",
    "/usr/lib/systemd/user-environment-generators",
)


def activation_dir() -> str:
    return os.path.join(paths.config_dir(), "activation")


def _home() -> str:
    return os.path.expanduser("~")


def _bash_login_file(home: str) -> str:
    """The file a login bash reads (the first of these that exists), ~/.profile when none does."""
    for name in (".bash_profile", ".bash_login", ".profile"):
        if os.path.lexists(os.path.join(home, name)):
            return os.path.join(home, name)
    return os.path.join(home, ".profile")


def _fish_conf() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(_home(), ".config")
    return os.path.join(base, "fish", "conf.d", "qpod-activate.fish")


def _wanted(shell: str, *files: str) -> bool:
    """A shell is hooked when it is installed here or the user has its startup files."""
    return shutil.which(shell) is not None or any(os.path.lexists(f) for f in files)


def startup_files() -> dict[str, list[str]]:
    """Per shell, the startup files that get the line (fish: its own conf.d file instead)."""
    home = _home()
    zdot = os.environ.get("ZDOTDIR") or home
    out = {"bash": [os.path.join(home, ".bashrc"), _bash_login_file(home)]}
    if _wanted("zsh", os.path.join(zdot, ".zshenv"), os.path.join(zdot, ".zshrc")):
        out["zsh"] = [os.path.join(zdot, ".zshenv")]
    if _wanted("fish", os.path.dirname(os.path.dirname(_fish_conf()))):
        out["fish"] = [_fish_conf()]
    return out


def _source_line(hook: str) -> str:
    q = shlex.quote(hook)
    return f"[ -f {q} ] && . {q}  {MARK}\n"


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return ""
    except UnicodeDecodeError:
        raise QpodError(f"{path} is not UTF-8 text: qpod does not edit it", EXIT_QPOD) from None


def _owned_by_me(path: str) -> None:
    """A startup file of another user (an admin's, a shared home) is not ours to edit."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if st.st_uid != os.geteuid():
        raise QpodError(f"{path} belongs to uid {st.st_uid}, not to you: qpod does not edit it", EXIT_QPOD)


def _without_ours(text: str) -> str:
    return "".join(ln for ln in text.splitlines(keepends=True) if not ln.rstrip("\n").endswith(MARK))


def _put_line(path: str, line: str) -> bool:
    """The line at the top of ``path`` (the shell reads it first: nothing above it runs twice
    when the shell starts again). Returns whether the file changed."""
    _owned_by_me(path)
    old = _read(path)
    new = line + _without_ours(old)
    if new == old:
        return False
    write_atomic(path, new, durable=True)
    return True


def _drop_line(path: str) -> bool:
    old = _read(path)
    new = _without_ours(old)
    if new == old:
        return False
    _owned_by_me(path)
    write_atomic(path, new, durable=True)
    return True


def _values() -> scripts.Values:
    lib = str(preload_lib.library_path())
    if not os.path.isfile(lib):
        raise QpodError(f"the preload library {lib} is missing; reinstall qpod (pip install .)", EXIT_QPOD)
    own, any_class = preload_lib.entries()
    bad = [c for c in ' :"\\`\n\t' if c in own + any_class]
    if bad:
        raise QpodError(f"qpod is installed under {preload_lib.LIB_DIR}: LD_PRELOAD cannot name a path with {bad[0]!r}")
    return scripts.Values(
        lib,
        own,
        any_class,
        os.path.abspath(paths.rules_file()),
        paths.config_dir(),
        paths.state_dir(),
        preload_lib.OTHER_CLASS_LOADERS,
    )


def activate() -> list[str]:
    """Turn activation on (again: the files are rewritten with this install's paths). Returns
    what was done, one line each."""
    from qpod_engine.config import snapshot

    v = _values()
    snapshot.load()  # the rules the library routes by, current
    d = make_dirs(activation_dir())
    pkg = paths.PACKAGE_DIR
    session = os.path.join(d, "session.sh")
    files = {
        session: scripts.session_sh(v, pkg),
        os.path.join(d, "hook.bash"): scripts.bash_hook(v, pkg, session),
        os.path.join(d, "hook.zsh"): scripts.zsh_hook(v, pkg, session),
    }
    done = []
    for shell, targets in startup_files().items():
        if shell == "fish":
            files[targets[0]] = scripts.fish_hook(v, pkg)
            done.append(f"fish: {targets[0]}")
            continue
        line = _source_line(os.path.join(d, f"hook.{shell}"))
        for t in dict.fromkeys(targets):
            _put_line(t, line)
        done.append(f"{shell}: {', '.join(dict.fromkeys(targets))}")
    for path, text in files.items():
        write_atomic(path, text, durable=True)
    return done


def deactivate() -> list[str]:
    """Turn activation off: the lines and files ``activate`` wrote are removed. Returns what was
    removed."""
    done = []
    for shell, targets in startup_files().items():
        if shell == "fish":
            if os.path.isfile(targets[0]) and _read(targets[0]).startswith("# qpod activation"):
                os.unlink(targets[0])
                done.append(targets[0])
            continue
        done += [t for t in dict.fromkeys(targets) if _drop_line(t)]
    d = activation_dir()
    if os.path.isdir(d):
        shutil.rmtree(d)
        done.append(d)
    return done


@dataclass
class Status:
    """What ``qpod status``, ``qpod doctor`` and the dashboard say about activation."""

    on: bool
    shells: dict[str, list[str]] = field(default_factory=dict)  # shell -> files that hook it
    generator: str | None = None  # the installed session generator, if any
    library: str | None = None  # the library the files name
    library_present: bool = False

    def summary(self) -> str:
        if not self.on:
            return "off (qpod activate: every new terminal and desktop program builds in its repository's environment)"
        terms = ", ".join(sorted(self.shells)) or "no shell"
        desk = "desktop session" if self.generator else "no desktop session (generator not installed)"
        gone = "" if self.library_present else f"; the library {self.library} is gone: run qpod activate again"
        return f"on: new terminals ({terms}), {desk}{gone}"


def generator_path() -> str | None:
    for d in GENERATOR_DIRS:
        p = os.path.join(d, scripts.GENERATOR_NAME)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def _named_library(session: str) -> str | None:
    for ln in _read(session).splitlines():
        if ln.strip().startswith("export QPOD_PRELOAD="):
            return next((w[13:] for w in shlex.split(ln) if w.startswith("QPOD_PRELOAD=")), None)
    return None


def status() -> Status:
    d = activation_dir()
    session = os.path.join(d, "session.sh")
    if not os.path.isfile(session):
        return Status(on=False, generator=generator_path())
    shells: dict[str, list[str]] = {}
    for shell, targets in startup_files().items():
        hooked = [t for t in dict.fromkeys(targets) if MARK in _read(t) or (shell == "fish" and os.path.isfile(t))]
        if hooked:
            shells[shell] = hooked
    lib = _named_library(session)
    return Status(True, shells, generator_path(), lib, bool(lib and os.path.isfile(lib)))
