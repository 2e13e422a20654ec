"""A repository's own environment: ``.qpod.yaml`` at the root of the checked-out tree, with the
keys of ``environments/NAME.yaml`` (env_fields.FIELDS) and, instead of ``image:``, ``build:``
(a Containerfile in the repository; the image is built by podman, see imagebuild.py).

The file travels with the branch, so it is code the user did not necessarily write: it is used
only once its content is allowed (trust.py), and ``qpod allow`` first shows what it asks of the
host. The compiled snapshot holds one entry per registered repository (``compile_root``); a
repository is registered by a binding whose environment is ``REPO_FILE``.

    image: localhost/gcc10:latest      # or:
    build: ci/Containerfile            # or: {containerfile: ci/Containerfile, context: ci, args: {GCC: "10"}}
    commands: [make, gdb]
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

from qpod_engine.base.errors import ConfigError, QpodError
from qpod_engine.base.paths import REPO_FILE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from qpod_engine.base import yamlio
    from qpod_engine.config.environments import Environment

BUILD_KEYS = ("containerfile", "context", "args")
MAX_FILE_BYTES = 256 * 1024
MAX_CONTEXT_FILES = 500  # the context is hashed and watched file by file: keep it a small directory
BUILD_TAG_PREFIX = "localhost/qpod-build-"
BUILD_HASH_VERSION = "1"


def file_of(root: str) -> str:
    return os.path.join(root, REPO_FILE)


@dataclass
class Build:
    """Where the image of a ``build:`` file comes from (absolute paths inside the repository)."""

    containerfile: str
    context: str | None  # None: no context (the Containerfile cannot COPY)
    args: dict[str, str] = field(default_factory=dict)
    tag: str = ""  # localhost/qpod-build-<hash of the Containerfile, the context files, the args>
    watch: list[str] = field(default_factory=list)  # the files and directories the tag depends on

    def to_dict(self) -> dict[str, Any]:
        return {"containerfile": self.containerfile, "context": self.context, "args": dict(self.args), "tag": self.tag}


@dataclass
class RepoFile:
    root: str
    path: str
    sha: str  # SHA-256 of the file's bytes: what an allow records
    env: Environment | None  # None when the file has problems
    build: Build | None
    problems: list[ConfigError]
    watch: list[str] = field(default_factory=list)  # what the file refers to: a change there recompiles


def _inside(root: str, rel: Any, what: str, file: str, line: int | None, want_dir: bool) -> str:
    """``rel`` (relative to the repository) as an absolute path that stays inside it, symlinks
    resolved; ConfigError otherwise."""
    from qpod_engine.base.gitinfo import is_within
    from qpod_engine.base.textsafe import visible

    if not isinstance(rel, str) or not rel.strip():
        raise ConfigError(file, f"'{what}' must be a path relative to the repository", line)
    if rel.startswith("/"):
        raise ConfigError(file, f"'{what}': '{visible(rel)}' must be relative to the repository", line)
    real_root = os.path.realpath(root)
    path = os.path.realpath(os.path.join(real_root, rel))
    if not is_within(path, real_root):
        raise ConfigError(file, f"'{what}': '{visible(rel)}' leads outside the repository", line)
    if want_dir and not os.path.isdir(path):
        raise ConfigError(file, f"'{what}': '{visible(rel)}' is not a directory in the repository", line)
    if not want_dir and not os.path.isfile(path):
        raise ConfigError(file, f"'{what}': '{visible(rel)}' is not a file in the repository", line)
    return path


def _check_build(root: str, value: Any, file: str, lines: yamlio.Lines) -> Build:
    spec: dict[str, Any] = {"containerfile": value} if isinstance(value, str) else value
    if not isinstance(spec, dict):
        raise ConfigError(
            file,
            "'build' must be a Containerfile path or a mapping with containerfile, context, args",
            lines.get("build"),
        )
    for key in spec:
        if key not in BUILD_KEYS:
            raise ConfigError(
                file, f"'build': unknown key '{key}' (known keys: {', '.join(BUILD_KEYS)})", lines.get("build", key)
            )
    if "containerfile" not in spec:
        raise ConfigError(file, "'build': missing 'containerfile'", lines.get("build"))
    cf = _inside(
        root, spec["containerfile"], "build: containerfile", file, lines.get("build", "containerfile"), want_dir=False
    )
    ctx = None
    if spec.get("context") is not None:
        ctx = _inside(root, spec["context"], "build: context", file, lines.get("build", "context"), want_dir=True)
    args = spec.get("args") or {}
    if not isinstance(args, dict) or not all(isinstance(v, (str, int, float, bool)) for v in args.values()):
        raise ConfigError(file, "'build': 'args' must map NAME to a scalar", lines.get("build", "args"))
    from qpod_engine.config.fields import VAR_RE

    for k in args:
        if not isinstance(k, str) or not VAR_RE.match(k):
            raise ConfigError(file, f"'build': arg '{k}' is not a valid name", lines.get("build", "args", k))
    return Build(cf, ctx, {str(k): str(v) for k, v in args.items()})


# The Containerfile and the context's files together: hashed at each recompile, and sent whole
# to podman build. A checkout's 1.5 GB file is refused at once by its size, never read.
MAX_CONTEXT_BYTES = 256 << 20
_HASH_CHUNK = 1 << 20


def _too_big(path: str, size: int) -> QpodError:
    from qpod_engine.base.textsafe import visible

    return QpodError(
        f"{visible(path)}: the build's files (Containerfile and context) pass {MAX_CONTEXT_BYTES >> 20} "
        f"MiB with this one ({size / (1 << 20):.1f} MiB); give 'build: context' a smaller directory",
        2,
    )


def _hash_file(h: Any, path: str, budget: int, follow: bool) -> int:
    """Feed the regular file at ``path`` to ``h`` chunk by chunk (never whole in memory; opened
    O_NONBLOCK, and refused unless still a regular file, so a FIFO swapped in cannot hang);
    returns its size. Raises QpodError past ``budget`` bytes (the file grew since its stat)."""
    import errno
    import stat

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        size = 0
        while chunk := os.read(fd, _HASH_CHUNK):
            size += len(chunk)
            if size > budget:
                raise _too_big(path, size)
            h.update(chunk)
        return size
    finally:
        os.close(fd)


def build_tag(build: Build) -> None:
    """Fill ``build.tag`` and ``build.watch``: the hash covers the Containerfile, every file of
    the context (path, executable bit, content; symlinks by target, never followed; .git
    skipped) and the args, so any change makes a new tag and so a new image and container.
    Files are hashed in chunks, and together bounded by MAX_CONTEXT_BYTES (QpodError naming
    the file that passes it, found by its size before anything of it is read)."""
    import stat

    left = MAX_CONTEXT_BYTES
    h = hashlib.sha256(f"qpod-build-{BUILD_HASH_VERSION}\0".encode())
    size = os.stat(build.containerfile).st_size
    if size > left:
        raise _too_big(build.containerfile, size)
    left -= _hash_file(h, build.containerfile, left, follow=True)
    h.update(b"\0" + json.dumps(build.args, sort_keys=True).encode() + b"\0")
    watch = [build.containerfile]
    if build.context:
        count = 0
        for d, dirs, files in os.walk(build.context):
            dirs[:] = sorted(x for x in dirs if x != ".git")
            watch.append(d)  # a file added or removed changes the directory
            for name in sorted(files):
                count += 1
                if count > MAX_CONTEXT_FILES:
                    raise QpodError(
                        f"{build.context}: the build context has more than {MAX_CONTEXT_FILES} files; "
                        "give 'build: context' a smaller directory",
                        2,
                    )
                p = os.path.join(d, name)
                rel = os.path.relpath(p, build.context)
                st = os.lstat(p)
                if stat.S_ISLNK(st.st_mode):
                    body = b"L" + os.fsencode(os.readlink(p))
                elif not stat.S_ISREG(st.st_mode):
                    body = b"S"  # a FIFO or a socket: never opened (it could block)
                else:
                    if st.st_size > left:
                        raise _too_big(p, st.st_size)
                    fh = hashlib.sha256()
                    left -= _hash_file(fh, p, left, follow=False)
                    body = b"F" + (b"x" if st.st_mode & 0o100 else b"-") + fh.digest()
                h.update(os.fsencode(rel) + b"\0" + body + b"\0")
                watch.append(p)
    build.tag = BUILD_TAG_PREFIX + h.hexdigest()[:16]
    build.watch = watch


def parse(root: str, text: str, path: str) -> RepoFile:
    """The file's environment (named REPO_FILE) and every problem, each naming file and line.
    ``build:`` stands for ``image:``: exactly one of them."""
    from dataclasses import replace

    from qpod_engine.base import yamlio
    from qpod_engine.config import environments as config

    sha = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()
    try:
        data, lines = yamlio.loads(text, path)
    except ConfigError as err:
        return RepoFile(root, path, sha, None, None, [err])
    if not isinstance(data, dict):
        return RepoFile(
            root,
            path,
            sha,
            None,
            None,
            [ConfigError(path, "the repository's environment must be a mapping of keys", lines.get())],
        )
    problems: list[ConfigError] = []
    build = None
    body = dict(data)
    watch: list[str] = []
    if "build" in body:
        raw = body.pop("build")
        # what it names, even when it is not there (yet): restoring it must recompile
        names = (
            [raw]
            if isinstance(raw, str)
            else [raw.get(k) for k in ("containerfile", "context")]
            if isinstance(raw, dict)
            else []
        )
        watch = [os.path.normpath(os.path.join(root, n)) for n in names if isinstance(n, str) and n.strip()]
        if "image" in body:
            problems.append(ConfigError(path, "give 'image' or 'build', not both", lines.get("build")))
        elif body.get("host"):
            # the image is built here, and the container would be made on that host
            problems.append(
                ConfigError(
                    path,
                    "'build' with 'host' is not supported: build the image on that host and name it with 'image'",
                    lines.get("build"),
                )
            )
            body["image"] = BUILD_TAG_PREFIX + "unbuilt"
        else:
            try:
                build = _check_build(root, raw, path, lines)
                build_tag(build)
                body["image"] = build.tag
            except ConfigError as err:
                problems.append(err)
            except QpodError as err:
                problems.append(ConfigError(path, str(err), lines.get("build")))
            except OSError as err:
                problems.append(
                    ConfigError(path, f"'build': cannot read {err.filename}: {err.strerror}", lines.get("build"))
                )
            if build is None or not build.tag:
                body["image"] = BUILD_TAG_PREFIX + "unbuilt"  # the other keys are still checked
    elif "image" not in body:
        problems.append(
            ConfigError(path, "missing 'image' or 'build' (a Containerfile in the repository)", lines.get())
        )
        body["image"] = "unknown"
    env, found = config.check_environment("repository", body, path, lines)
    problems += [p for p in found if p.key != "name"]
    if build is not None and build.tag:
        watch = build.watch
    return RepoFile(root, path, sha, None if problems else replace(env, name=REPO_FILE), build, problems, watch)


def load(root: str) -> RepoFile | None:
    """The root's ``.qpod.yaml`` as checked out now, or None when there is none. Raises
    QpodError when it cannot be read."""
    import stat

    path = file_of(root)
    try:
        # not followed, never blocking: a link to a FIFO or a device must not hang every command
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as err:
        why = "a symbolic link (qpod reads only a regular file)" if os.path.islink(path) else err.strerror
        raise QpodError(f"{path}: cannot read: {why}", 2) from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise QpodError(f"{path}: not a regular file", 2)
        raw = f.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise QpodError(f"{path}: larger than {MAX_FILE_BYTES // 1024} KiB", 2)
    return parse(root, raw.decode("utf-8", "surrogateescape"), path)


# --- what the file asks of the host (shown by qpod allow) ---------------------------------------

# Variables that decide which code a program loads or runs before its own (the dynamic loader,
# shells' startup files, interpreters' module paths and options, the search for programs): set
# by a repository file, each is a way to run code of its choosing in every routed command.
LOADER_VARIABLES = frozenset(
    {
        "BASH_ENV",
        "ENV",
        "ZDOTDIR",
        "PROMPT_COMMAND",
        "SHELLOPTS",
        "PS4",
        "PATH",
        "IFS",
        "CDPATH",
        "PYTHONPATH",
        "PYTHONSTARTUP",
        "PYTHONHOME",
        "PYTHONUSERBASE",
        "PYTHONINSPECT",
        "PERL5OPT",
        "PERL5LIB",
        "PERLLIB",
        "PERL5DB",
        "RUBYOPT",
        "RUBYLIB",
        "NODE_OPTIONS",
        "NODE_PATH",
        "LUA_INIT",
        "LUA_PATH",
        "LUA_CPATH",
        "TCLLIBPATH",
        "JAVA_TOOL_OPTIONS",
        "_JAVA_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "CLASSPATH",
        "GCONV_PATH",
        "LOCPATH",
        "NLSPATH",
        "HOSTALIASES",
        "RESOLV_HOST_CONF",
        "GIT_EXEC_PATH",
        "GIT_SSH",
        "GIT_SSH_COMMAND",
        "GIT_CONFIG_GLOBAL",
        "GIT_CONFIG_SYSTEM",
        "GIT_TEMPLATE_DIR",
        "EDITOR",
        "VISUAL",
        "PAGER",
        "MAKEFLAGS",
        "MFLAGS",
        "GDBHISTFILE",
        "INPUTRC",
        "TERMINFO",
        "TMPDIR",
    }
)
LOADER_PREFIXES = ("LD_", "GLIBC_", "MALLOC_", "DYLD_", "BASH_FUNC_", "GIT_CONFIG_")


def changes_loading(name: str) -> bool:
    """Whether setting ``name`` changes how programs load or start (see LOADER_VARIABLES)."""
    return name in LOADER_VARIABLES or name.startswith(LOADER_PREFIXES)


def requests(rf: RepoFile) -> tuple[list[str], list[str]]:
    """(what the file asks that reaches beyond the repository, and needs a look before it is
    allowed; what it sets up besides), as lines of text, not yet escaped."""
    from qpod_engine.base.gitinfo import is_within
    from qpod_engine.config.fields import parse_mount

    env = rf.env
    assert env is not None
    risky: list[str] = []
    info: list[str] = []
    real_root = os.path.realpath(rf.root)
    for spec in env.mounts:
        host = parse_mount(spec)[0]
        if not is_within(os.path.realpath(host), real_root):
            risky.append(f"mount of a host path outside the repository: {spec}")
    if env.cap_add:
        risky.append(f"capabilities: {', '.join(env.cap_add)}")
    for name, value in env.env.items():
        if changes_loading(name):
            risky.append(f"variable {name}={value} (changes how programs load or start)")
    if env.seccomp:
        risky.append(f"seccomp: {env.seccomp} (instead of podman's default profile)")
    if env.run_as == "root":
        risky.append("run_as: root (commands run as root in the container)")
    if env.podman_options:
        risky.append(f"podman options: {json.dumps(env.podman_options, sort_keys=True)}")
    if env.host:
        risky.append(
            f"host: {env.host} (commands run on the machine of that podman connection, reached over ssh "
            "with its identity)"
        )
    if rf.build:
        ctx = os.path.relpath(rf.build.context, rf.root) if rf.build.context else "none"
        args = ", ".join(f"{k}={v}" for k, v in rf.build.args.items()) or "none"
        info.append(
            f"build: {os.path.relpath(rf.build.containerfile, rf.root)} (context: {ctx}; args: {args}) "
            f"-> {rf.build.tag}"
        )
    else:
        info.append(f"image: {env.image}")
    info.append(f"commands routed to the container: {', '.join(env.commands) or 'none'}")
    shared = {"home": "your home directory (read-write)", "tmp": "/tmp"}
    info.append("shared with the host: " + (", ".join(shared.get(s, s) for s in env.share) or "nothing"))
    if env.passthrough:
        info.append(f"host variables passed in: {' '.join(env.passthrough)}")
    plain = [f"{k}={v}" for k, v in env.env.items() if not changes_loading(k)]
    if plain:
        info.append(f"variables set: {' '.join(plain)}")
    return risky, info


# --- the compiled entry of a registered repository ----------------------------------------------


def gate_message(path: str, root: str, changed: bool) -> str:
    state = "changed since you allowed it" if changed else "not allowed yet"
    return f"{path}: {state}; review and allow it with 'qpod allow' in {root} (or 'qpod deny')"


def compile_root(root: str, records: dict[str, dict[str, dict[str, Any]]]) -> tuple[dict[str, Any], list[str]]:
    """The snapshot's entry for a repository registered for its file, and the paths whose
    change must recompile it. Entries: an environment (``asdict`` + hash + build), ``absent``
    (no file on this tree: the host), or ``error`` (gated or broken: redirected commands fail
    with it, exit 125). A file not allowed routes only what allowed versions and the defaults
    route: its own content is not used."""
    from dataclasses import asdict

    from qpod_engine.config import trust
    from qpod_engine.config.fields import DEFAULT_COMMANDS

    path = file_of(root)
    watch = [path]
    allowed_cmds = list(dict.fromkeys([*DEFAULT_COMMANDS, *trust.known_commands(records, root)]))
    try:
        rf = load(root)
    except QpodError as err:
        return {"error": str(err), "commands": allowed_cmds, "why": f"repository file {REPO_FILE}: unreadable"}, watch
    if rf is None:
        return {"absent": True, "why": f"no {REPO_FILE} in the checked-out tree"}, watch
    if not trust.is_allowed(records, root, rf.sha):
        changed = bool(records.get(root))
        return {
            "error": gate_message(path, root, changed),
            "commands": allowed_cmds,
            "why": f"repository file {REPO_FILE} ({'changed, ' if changed else ''}not allowed: run qpod allow)",
        }, watch
    watch += [w for w in rf.watch if w not in watch]
    if rf.problems or rf.env is None:
        return {
            "error": str(rf.problems[0]),
            "commands": allowed_cmds,
            "why": f"repository file {REPO_FILE} (broken)",
        }, watch
    env = rf.env
    entry = {
        **asdict(env),
        "hash": env.config_hash(),
        "build": rf.build.to_dict() if rf.build else None,
        "file": path,
        "sha": rf.sha,
        "why": f"repository file {REPO_FILE} (allowed)",
    }
    return entry, watch


def waiting(snap: dict[str, Any]) -> list[tuple[str, str]]:
    """(root, the one-line reason) of every registered repository whose checked-out file cannot
    be used now (changed and not allowed again, or broken): what a front end lists for
    ``qpod allow``."""
    return [(root, entry["error"]) for root, entry in sorted(snap.get("repo_envs", {}).items()) if "error" in entry]
