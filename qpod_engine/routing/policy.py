"""The routing policy: one pure function that says where a launch runs, and why.

The preload library applies the same rules in C from the compiled rules file (a superset:
it does not know the branch); the launcher then calls ``decide`` for the final word, so
``qpod which`` always says what the shim does.
"""

import os
from collections.abc import Iterable, Sequence

from qpod_engine.base.gitinfo import innermost_root, is_within
from qpod_engine.base.paths import REPO_FILE
from qpod_engine.config.snapshot import Target


class Decision:
    __slots__ = ("where", "reason", "target")

    def __init__(self, where: str, reason: str, target: Target | None = None) -> None:
        self.where = where  # "container" or "host"
        self.reason = reason
        self.target = target

    def __repr__(self) -> str:
        return f"Decision({self.where!r}, {self.reason!r})"

    @property
    def in_container(self) -> bool:
        return self.where == "container"


def link_target(path: str) -> str | None:
    """Where ``path`` leads when it is a symlink (its last component followed to the end), else
    None. (The preload library follows it the same way.)"""
    target, hops = path, 0
    while hops < 40:
        try:
            link = os.readlink(target)
        except OSError:
            break
        target = os.path.normpath(os.path.join(os.path.dirname(target), link))
        hops += 1
    return target if hops else None


def program_root(path: str, roots: Iterable[str]) -> str | None:
    """The bound root a program lives in (the innermost), or None. Git's own machinery in a
    root's ``.git`` (hooks and the like) is git's, not the repository's: it runs where git runs;
    and a link to a program outside every bound tree (a venv's ``bin/python3``) is the host's.
    (The preload library applies the same rules in C.)"""
    if not path.startswith("/"):
        return None
    roots = list(roots)
    root = innermost_root(path, roots)
    if root is not None and is_within(path, root.rstrip("/") + "/.git"):
        return None
    target = link_target(path) if root is not None else None
    if target is not None and innermost_root(target, roots) is None:
        return None
    return root


# Interpreters whose first operand is a script: ``python3 ./waf`` runs where ./waf lives. Shells
# take options with '-' or '+', and any short option with 'c' means a command string, no script.
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh"})
INTERPRETERS = frozenset({"python", "perl", "ruby", "tclsh", "wish", "node", "php", "lua"})
NO_SCRIPT = frozenset({"-c", "-m", "-e", "-E"})  # python -c/-m, perl/ruby/node -e: no script (not for shells)


def is_interpreter(name: str) -> bool:
    return name in SHELLS or name.rstrip("0123456789.") in INTERPRETERS


def script_of(name: str, argv: Sequence[str], cwd: str) -> str | None:
    """The script an interpreter is started with (an existing file, as an absolute path), or None.
    (The preload library applies the same rule in C.)"""
    if not is_interpreter(name):
        return None
    shell = name in SHELLS
    args = list(argv[1:])
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            i += 1
            break
        if a.startswith("-") or (shell and a.startswith("+")):
            if (shell and a[0] == "-" and not a.startswith("--") and "c" in a[1:]) or (not shell and a in NO_SCRIPT):
                return None
            i += 1
            continue
        break
    if i >= len(args) or not args[i]:
        return None
    script = os.path.normpath(os.path.join(cwd, args[i]))
    return script if os.path.isfile(script) else None


# Build tools told which directory to work in: they are routed by that directory, as if started
# there (``cd ~ && make -C ~/src/probe`` builds the bound tree). Options as the tools spell them.
DIR_OPTIONS: dict[str, tuple[str, ...]] = {
    "make": ("-C", "--directory"),
    "gmake": ("-C", "--directory"),
    "ninja": ("-C",),
    "cmake": ("--build",),
    "ctest": ("--test-dir",),
}
MAKEFILE_OPTIONS = ("-f", "--file", "--makefile")  # make -f DIR/Makefile works on DIR's tree


# cmake options that take their value as the next word (so it is not taken for the source dir)
CMAKE_VALUE_OPTIONS = frozenset({"-B", "-S", "-C", "-D", "-U", "-G", "-T", "-A", "--preset", "--toolchain",
                                 "--install-prefix", "--graphviz", "--log-level", "--log-context"})  # fmt: skip


def _configure_args(name: str, argv: Sequence[str]) -> tuple[str | None, str | None] | None:
    """(source dir, build dir) as a configure step of cmake or meson names them (None: not
    named, the cwd's), or None when ``argv`` is not such a step."""
    args = list(argv[1:])
    if name == "cmake":
        if not args or args[0].startswith(("--build", "--install", "--open", "-E", "-P", "--help", "--version")):
            return None
        src = build = None
        i = 0
        while i < len(args):
            a = args[i]
            if a in ("-S", "-B") and i + 1 < len(args):
                src, build = (args[i + 1], build) if a == "-S" else (src, args[i + 1])
                i += 2
                continue
            if a.startswith(("-S", "-B")) and len(a) > 2 and not a.startswith("--"):
                src, build = (a[2:], build) if a[1] == "S" else (src, a[2:])
            elif a in CMAKE_VALUE_OPTIONS:
                i += 1
            elif not a.startswith("-") and src is None:
                src = a  # `cmake ../src`: the source dir (or an existing build dir)
            i += 1
        return src, build
    if name == "meson" and args[:1] == ["setup"]:
        words = [a for a in args[1:] if not a.startswith("-")]
        return (words[1] if len(words) > 1 else None), (words[0] if words else None)
    return None


def configured_build_dir(path: str, argv: Sequence[str], cwd: str, root: str) -> str | None:
    """The build directory outside ``root`` that a configure step of ``root``'s tree sets up
    (autotools ``configure`` run from another directory, ``cmake -S/-B`` or ``cmake SRC`` from a
    build dir, ``meson setup BUILD``, ``waf configure --out``): bound to the repository's
    environment by the launcher, so that the next ``make`` there builds in the container too."""
    name = os.path.basename(path)
    build: str | None = None
    if name == "configure" and is_within(path, root):
        build = cwd
    elif name in ("cmake", "meson"):
        named = _configure_args(name, argv)
        if named is None:
            return None
        src, b = named
        build = os.path.join(cwd, b) if b else (cwd if src else None)
    elif "configure" in argv[1:]:  # waf (python3 ./waf configure --out=DIR, or ./waf ...)
        script = argv[0] if os.path.basename(argv[0]) == "waf" else next(
            (a for a in argv[1:2] if os.path.basename(a) == "waf"), None)  # fmt: skip
        if script is None:
            return None
        for i, a in enumerate(argv):
            if a.startswith("--out="):
                build = os.path.join(cwd, a[len("--out=") :])
            elif a in ("-o", "--out") and i + 1 < len(argv):
                build = os.path.join(cwd, argv[i + 1])
    if build is None:
        return None
    build = os.path.normpath(build)
    return None if is_within(build, root) else build


def work_dirs(name: str, argv: Sequence[str], cwd: str) -> tuple[str, ...]:
    """The directories a build tool is routed by, the first one in a bound tree deciding:
    ``cwd``, or the one its options name (make's -C are applied in turn, each relative to the
    last; a cmake or meson configure step, the source tree it configures). make -f names the
    tree of its makefile, and then also where make works (cwd and its -C), which decides when
    the makefile is in no bound tree (``make -f /dev/null`` in a repository builds there).
    (The preload library applies the same rule in C.)"""
    configure = _configure_args(name, argv)
    if configure is not None:
        src = configure[0]
        return (os.path.normpath(os.path.join(cwd, src)) if src else cwd,)
    options = DIR_OPTIONS.get(name)
    if not options:
        return (cwd,)
    where = wd = cwd
    by_file = False
    args = list(argv[1:])
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            break
        value = None
        for opt in options + (MAKEFILE_OPTIONS if name in ("make", "gmake") else ()):
            if a == opt and i + 1 < len(args):
                value, i = args[i + 1], i + 1
            elif opt.startswith("--") and a.startswith(opt + "="):
                value = a[len(opt) + 1 :]
            elif not opt.startswith("--") and a.startswith(opt) and len(a) > len(opt):
                value = a[len(opt) :]
            else:
                continue
            if value:
                target = os.path.normpath(os.path.join(where, value))
                if opt in MAKEFILE_OPTIONS:
                    where, by_file = os.path.dirname(target), True
                else:
                    where, wd = target, os.path.normpath(os.path.join(wd, value))
            break
        i += 1
    return (where, wd) if by_file and wd != where else (where,)


def work_root(name: str, argv: Sequence[str], cwd: str, roots: Iterable[str]) -> tuple[str, str | None]:
    """The directory a build tool is routed by and the innermost root holding it (None: none)."""
    dirs = work_dirs(name, argv, cwd)
    roots = list(roots)
    for d in dirs:
        root = innermost_root(d, roots)
        if root is not None:
            return d, root
    return dirs[0], None


# Hooks git runs (githooks(5)): found by git in the tree when core.hooksPath points there, run
# by git on the host like git itself (the container may have no git at all)
GIT_HOOKS = frozenset({
    "applypatch-msg", "pre-applypatch", "post-applypatch", "pre-commit", "pre-merge-commit",
    "prepare-commit-msg", "commit-msg", "post-commit", "pre-rebase", "post-checkout", "post-merge",
    "pre-push", "pre-receive", "update", "proc-receive", "post-receive", "post-update",
    "reference-transaction", "push-to-checkout", "pre-auto-gc", "post-rewrite", "sendemail-validate",
    "fsmonitor-watchman", "p4-changelist", "p4-prepare-changelist", "p4-post-changelist", "p4-pre-submit",
    "post-index-change",
})  # fmt: skip


def is_git(caller: str | None) -> bool:
    """Whether the launching process is git (``git``, ``git-receive-pack``, ...)."""
    return caller is not None and (caller == "git" or caller.startswith("git-"))


def runs_on_host(path: str, caller: str | None) -> bool:
    """A git hook started by git: git's machinery, on the host whatever tree holds it."""
    return is_git(caller) and os.path.basename(path) in GIT_HOOKS


def redirected_root(path: str, cwd: str, roots: Iterable[str], argv: Sequence[str] = ()) -> str | None:
    """The root the preload library matched for a launch it redirected: the innermost root
    holding the program, else the one holding the script an interpreter runs, else the innermost
    root holding the cwd. A launcher that sends the launch back to the host names it in
    QPOD_HOST_ROOT, or the library redirects again."""
    roots = list(roots)
    script = script_of(os.path.basename(path), argv, cwd) if argv and innermost_root(path, roots) is None else None
    return (
        program_root(path, roots)
        or (program_root(script, roots) if script else None)
        or work_root(os.path.basename(path), argv, cwd, roots)[1]
    )


def env_label(name: str | None) -> str:
    """How a reason names the environment: a named one, or the repository's own file."""
    return f"the repository file {REPO_FILE}" if name == REPO_FILE else f"environment '{name}'"


def decide(
    path: str,
    argv: Sequence[str],
    cwd: str,
    targets: Sequence[Target],
    explicit: bool = False,
    caller: str | None = None,
) -> Decision:
    """Where ``path`` (the resolved program, argv[0] may differ) started in ``cwd`` runs.

    0. a git hook started by git (``caller``: the launching program's name) runs on the host;
    1. a program that lives inside a bound repository runs in that repository's container;
    2. a command on the environment's list (make, waf, gdb, ...) started inside a bound
       repository runs in its container (a build tool given a directory: inside that one);
    3. with ``explicit`` (``qpod exec``), anything started inside a bound repository does;
    4. everything else runs on the host.
    """
    name = os.path.basename(path) if path else (os.path.basename(argv[0]) if argv else "")
    if runs_on_host(path, caller):
        return Decision("host", f"'{name}' is a git hook started by git: it runs where git runs")
    roots = [t.root for t in targets]
    home_root = program_root(path, roots)
    home = next(t for t in targets if t.root == home_root) if home_root else None
    if home is not None and home.environment:
        return Decision("container", f"program lives in bound repository {home.root}", home)
    # an interpreter of the host (not one inside a repository) runs where its script lives
    script = script_of(name, argv, cwd) if innermost_root(path, roots) is None else None
    script_root = program_root(script, roots) if script else None
    if script_root is not None:
        t = next(t for t in targets if t.root == script_root)
        if t.environment:
            return Decision("container", f"a script of bound repository {t.root}, run by {name}", t)
    where, root = work_root(name, argv, cwd, [t.root for t in targets])
    here = next(t for t in targets if t.root == root) if root is not None else None
    if here is None:
        if home is not None:
            return Decision("host", f"{home.root}: {home.why}", home)
        return Decision("host", "not in a bound repository")
    if here.environment is None:
        return Decision("host", f"{here.root}: {here.why}", here)
    if name in here.commands:
        given = f" (working in {where})" if where != cwd else ""
        return Decision("container", f"'{name}' is a command of {env_label(here.environment)}{given}", here)
    if explicit:
        if here.environment == REPO_FILE:
            return Decision("container", f"qpod exec in repository using its file {REPO_FILE}", here)
        return Decision("container", f"qpod exec in repository bound to '{here.environment}'", here)
    listed = ", ".join(here.commands) or "none"
    return Decision("host", f"'{name}' is not routed by {env_label(here.environment)} (routes: {listed})", here)
