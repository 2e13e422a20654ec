"""The preload library seen from Python: where it is installed, the LD_PRELOAD entry that names
it, a reader of the rules file it routes by (the same decision as the C code, for the launcher
and the tests), and the checks ``qpod doctor`` runs. Stdlib only: the launcher may import it.
"""

import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from qpod_engine.base import paths
from qpod_engine.base.gitinfo import innermost_root
from qpod_engine.config.rules import RULES_MAX, read_rules
from qpod_engine.routing.policy import program_root, runs_on_host, script_of, work_root

LIB_NAME = "libqpod_preload.so"
LIB_DIR = Path(paths.LIB_DIR).resolve()
HOOKS = (
    "execve",
    "execv",
    "execvp",
    "execvpe",
    "execl",
    "execle",
    "execlp",
    "execveat",
    "fexecve",
    "posix_spawn",
    "posix_spawnp",
    "pidfd_spawn",
    "pidfd_spawnp",
    "system",
    "popen",
)


def library_path() -> Path:
    """The installed library (what ``QPOD_PRELOAD`` names)."""
    return LIB_DIR / LIB_NAME


def _elf_ident(path: Path) -> bytes | None:
    """ELF class, byte order and machine: what a loader checks before it maps an object."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    return head[4:6] + head[18:20]


# The loaders of programs of another ELF class than the library's (32-bit x86, x32, 32-bit ARM):
# such a program can start only where its loader is installed.
OTHER_CLASS_LOADERS = (
    "/lib/ld-linux.so.2",
    "/lib32/ld-linux.so.2",
    "/libx32/ld-linux-x32.so.2",
    "/lib/ld-linux-armhf.so.3",
    "/lib/ld-linux.so.3",
)


def entries(lib_dir: Path = LIB_DIR) -> tuple[str, str]:
    """The LD_PRELOAD elements for the library: its own path, and ``<lib dir>/$LIB/<name>`` when
    the build laid out a copy where this machine's loader expands ``$LIB`` (else its path again).
    The second lets a program of another class load the empty stub of its class instead of
    warning; but any ``$LIB`` makes the loader read /proc/self/exe at every program start (2%
    of a /bin/true here), so it is named only where such programs can run (``preload_entry``;
    the activation scripts make the same choice at each start)."""
    lib = lib_dir / LIB_NAME
    ident = _elf_ident(lib)
    if ident is not None:
        for cand in sorted(lib_dir.glob(f"*/**/{LIB_NAME}")):
            if _elf_ident(cand) == ident:
                return str(lib), f"{lib_dir}/$LIB/{LIB_NAME}"
    return str(lib), str(lib)


def other_class_programs_run() -> bool:
    return any(os.path.exists(p) for p in OTHER_CLASS_LOADERS)


def preload_entry(lib_dir: Path = LIB_DIR) -> str:
    """The LD_PRELOAD element for the library on this machine (see ``entries``)."""
    own, any_class = entries(lib_dir)
    return any_class if other_class_programs_run() else own


def is_ours(entry: str) -> bool:
    return os.path.basename(entry) == LIB_NAME


def preload_list(existing: str | None) -> str:
    """LD_PRELOAD with the library first (once), the other libraries after it in their order."""
    others = [e for e in (existing or "").replace(" ", ":").split(":") if e]
    if any(is_ours(e) for e in others):
        return existing or ""
    return ":".join([preload_entry(), *others])


def shim_root(
    path: str,
    cwd: str,
    roots: Iterable[tuple[str, Sequence[str]]],
    argv: Sequence[str] = (),
    caller: str | None = None,
) -> str | None:
    """The root the library matches for a launch (None: it does not redirect, whatever
    ``$QPOD_HOST_ROOT`` says): the innermost root holding the program, else the innermost root
    holding the cwd when the program's name is on its list. A launcher that sends a launch back
    to the host must set ``QPOD_HOST_ROOT`` to exactly this root, or the library redirects again."""
    if runs_on_host(path, caller):
        return None
    names = dict(roots)
    home = program_root(path, names)
    if home is not None:
        return home
    outside = innermost_root(path, names) is None if path.startswith("/") else True
    script = script_of(os.path.basename(path), argv, cwd) if argv and outside else None
    script_home = program_root(script, names) if script else None
    if script_home is not None:
        return script_home
    here = work_root(os.path.basename(path), argv, cwd, names)[1]
    if here is not None and os.path.basename(path) in names[here]:
        return here
    return None


def check() -> list[str]:
    """Problems for ``qpod doctor``: the library is missing or does not load, the rules file is
    missing, unreadable or older than the snapshot, or names a launcher that is gone."""
    lib = library_path()
    if not lib.is_file():
        return [f"preload library {lib} is missing (reinstall: pip install .)"]
    problems = []
    if any(c in str(LIB_DIR) for c in " :"):
        problems.append(f"qpod is installed under {LIB_DIR}: LD_PRELOAD cannot name a path with ':' or spaces")
    # loaded by a fresh process exactly as qpod-shell loads it; QPOD_OFF keeps it inert
    probe = (
        "import ctypes, sys; lib = ctypes.CDLL(sys.argv[1]); "
        "print(' '.join(n for n in sys.argv[2:] if not hasattr(lib, n)))"
    )
    env = {"PATH": os.defpath, "LD_PRELOAD": preload_entry(), "QPOD_OFF": "1"}
    try:
        proc = subprocess.run(
            [sys.executable, "-I", "-S", "-c", probe, str(lib), *HOOKS],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        err = proc.stderr.strip()
        if proc.returncode != 0 or err:
            problems.append(f"preload library does not load: {err.splitlines()[-1] if err else proc.returncode}")
        elif proc.stdout.strip():
            problems.append(f"preload library lacks hooks: {proc.stdout.strip()} (reinstall: pip install .)")
    except (OSError, subprocess.SubprocessError) as exc:
        problems.append(f"preload library: cannot run a probe: {exc}")
    problems += rules_problems()
    # a session started before a 32-bit loader was installed names the 64-bit file directly
    ours = [e for e in os.environ.get("LD_PRELOAD", "").replace(" ", ":").split(":") if is_ours(e)]
    if ours and "$LIB" not in ours[0] and "$LIB" in entries()[1] and other_class_programs_run():
        problems.append(
            "this session's LD_PRELOAD names the 64-bit library, but 32-bit programs can run here now "
            "(they would print the loader's 'cannot be preloaded' line): start a new shell (log in "
            "again for the desktop)"
        )
    return problems


def rules_problems() -> list[str]:
    rules_file = Path(paths.rules_file())
    try:
        if rules_file.stat().st_size >= RULES_MAX:
            return [
                f"rules file {rules_file} is over {RULES_MAX // 1024} KiB, more than the library reads: "
                "every command runs on the host (unbind repositories you no longer build)"
            ]
    except OSError:
        pass
    rules = read_rules(rules_file)
    if rules is None:
        what = "is not a version-1 rules file" if rules_file.is_file() else "is missing"
        return [
            f"rules file {rules_file} {what}: every command runs on the host "
            "(any qpod command, e.g. 'qpod repos', compiles it)"
        ]
    problems = []
    from qpod_engine.config.snapshot import rules_current

    if not rules_current():
        problems.append(
            f"rules file {rules_file} is not the one the snapshot was compiled with (run 'qpod repos' to recompile)"
        )
    exe = rules.launcher[0] if rules.launcher else ""
    if not exe.startswith("/") or not os.access(exe, os.X_OK):
        problems.append(f"rules file names a launcher that cannot run: {exe or 'none'} (reinstall: pip install .)")
    scripts = [f for f in rules.launcher[1:] if f.endswith(".py")]
    problems += [f"launcher script {s} is missing (reinstall: pip install .)" for s in scripts if not os.path.isfile(s)]
    return problems
