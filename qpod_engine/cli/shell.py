"""``qpod-shell [--shell PATH] [-c CMD]``: the user's shell in qpod mode (the preload library in
LD_PRELOAD, the rules current), replacing this process so the terminal, job control and the
exit status are the shell's own."""

import argparse
import os
import pwd
import shutil
import signal
import sys
from collections.abc import Sequence

from qpod_engine.base import paths
from qpod_engine.base.environ import restore_locale
from qpod_engine.base.errors import EXIT_QPOD, QpodError
from qpod_engine.base.textsafe import visible
from qpod_engine.config.rules import read_rules
from qpod_engine.routing import preload_lib


def _user_shell(requested: str | None) -> str | None:
    name = requested or os.environ.get("SHELL")
    if not name:
        try:
            name = pwd.getpwuid(os.getuid()).pw_shell
        except KeyError:
            name = None
    name = name or "/bin/sh"
    found = name if "/" in name else shutil.which(name)
    return os.path.abspath(found) if found else None


def _warn(msg: str) -> None:
    sys.stderr.write(f"qpod-shell: warning: {msg}\n")


def _refresh_rules() -> str | None:
    """Recompile the snapshot and rules if a config file changed. Returns the problem, if any:
    the last good rules then stay in force (or none: everything runs on the host)."""
    from qpod_engine.config import snapshot

    try:
        snapshot.load()
    except QpodError as err:
        return str(err)
    except Exception as err:  # the shell must start whatever the config or the disk holds
        return f"cannot compile the rules: {err}"
    return None


def qpod_env(environ: dict[str, str]) -> dict[str, str]:
    """The shell's environment: ours first in LD_PRELOAD (only once: a nested qpod-shell finds
    it there already), and the variables the library and prompts read."""
    env = dict(environ)
    env["LD_PRELOAD"] = preload_lib.preload_list(env.get("LD_PRELOAD"))
    env["QPOD_PRELOAD"] = str(preload_lib.library_path())
    env["QPOD_RULES"] = os.path.abspath(paths.rules_file())
    env["QPOD_SHELL"] = "1"
    # the config and state this shell was started with, named explicitly and absolute (the shell
    # may cd anywhere): the library puts them back for programs started with 'env -i', which
    # would otherwise lose an XDG_CONFIG_HOME and find another config, or none
    env["QPOD_CONFIG_DIR"] = paths.config_dir()
    env["QPOD_STATE_DIR"] = paths.state_dir()
    for var in ("QPOD_OFF", "QPOD_HOST_ROOT"):  # would silence the library in this shell
        env.pop(var, None)
    return env


def main(argv: Sequence[str] | None = None) -> int:
    restore_locale()  # your shell keeps your locale, not Python's coerced one
    parser = argparse.ArgumentParser(
        prog="qpod-shell",
        description="Start your shell in qpod mode: build and "
        "debug commands in bound repositories run in their containers.",
    )
    parser.add_argument("--shell", metavar="PATH", help="the shell to start (default: $SHELL)")
    parser.add_argument("-c", dest="command", metavar="CMD", help="run one command non-interactively and exit")
    if "_ARGCOMPLETE" in os.environ:  # shell completion (qpod completion bash): answers and exits
        from qpod_engine.cli.completion import autocomplete

        autocomplete(parser)
    args = parser.parse_args(argv)

    shell = _user_shell(args.shell)
    if shell is None or not os.access(shell, os.X_OK):
        sys.stderr.write(f"qpod-shell: shell not found: {args.shell or os.environ.get('SHELL') or '/bin/sh'}\n")
        return EXIT_QPOD
    lib = preload_lib.library_path()
    if not lib.is_file():
        sys.stderr.write(f"qpod-shell: the preload library {lib} is missing; reinstall qpod (pip install .)\n")
        return EXIT_QPOD
    try:
        paths.state_dir()  # a state dir that is not the user's alone: said in one line, no shell
    except QpodError as err:
        sys.stderr.write(f"qpod-shell: {visible(err)}\n")
        return err.status
    problem = _refresh_rules()
    # said once, here: the library itself never prints about its rules
    if read_rules() is None:
        # say which: missing, unreadable, another version, or over the size the library reads
        what = "; ".join(preload_lib.rules_problems()) or f"no usable rules file at {paths.rules_file()}"
        _warn(what + (f" ({problem})" if problem else ""))
    elif problem:
        _warn(f"{problem}; the previous rules stay in force")

    env = qpod_env(dict(os.environ))
    # the rules as they are now, held open by the shell and everything it starts: if the state
    # dir is removed under the shell, they still claim their repositories (fail closed) and a
    # build there goes to the launcher, which makes the state again
    try:
        keep = os.open(paths.rules_file(), os.O_RDONLY)
        os.set_inheritable(keep, True)
        env["QPOD_RULES_FD"] = str(keep)
    except OSError:
        env.pop("QPOD_RULES_FD", None)
    if args.command is None:  # interactive only: scripts running 'qpod-shell -c' read its stderr
        pkg = paths.PACKAGE_DIR
        sys.stderr.write(f"launching {shell} in qpod mode (using qpod in {pkg})\n")
        sys.stderr.flush()
    cmd = [shell] if args.command is None else [shell, "-c", args.command]
    # Python ignores SIGPIPE and SIGXFSZ and an exec keeps that: the shell and everything it
    # starts must have the defaults (else 'yes | head -1' would never end)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    try:
        os.execve(shell, cmd, env)
    except OSError as err:
        sys.stderr.write(f"qpod-shell: cannot start {shell}: {err.strerror}\n")
    return EXIT_QPOD


if __name__ == "__main__":
    sys.exit(main())
