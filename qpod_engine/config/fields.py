"""The environment's options, declared once: one row each drives the YAML validation, the
``qpod env add/set`` flags, the TUI form, the container hash and the README's reference table.

Adding an option is one ``Option`` in ``FIELDS`` (and, if it shapes the container, its use in
``podman_backend.container_spec``). A value has three shapes: the YAML value (what the file
holds and ``Environment`` carries), the text form (one string, as typed in the TUI form or after
``qpod env set NAME KEY=``), and CLI flags (repeatable for lists and pairs).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
ULIMIT_RE = re.compile(r"^(\d+|-1)(:(\d+|-1))?$")
COMMAND_RE = re.compile(r"^[^/\s\t]+$")
VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SHARES = ("home", "tmp")
# What a C/C++ project builds, configures and debugs with, routed to the container inside a bound
# repository unless the environment lists its own: build drivers and their configure steps
# (a build dir must hold one cmake's, one autoconf's results, not the host's and the image's),
# debuggers, and the compilers themselves (one binary must come from one compiler: a `gcc x.c`
# typed in the repository, or an editor's language server asking the compiler for its include
# paths, gets the environment's, as make would), and the language server: clangd started by an
# editor in the repository must parse the code against the environment's headers and compiler
# (its glibc, its libstdc++), or it flags what builds and misses what does not.
DEFAULT_COMMANDS = (
    "make", "gmake", "waf", "scons", "cmake", "ctest", "cpack", "ninja", "meson",
    "autoreconf", "autoconf", "autoheader", "automake", "aclocal", "libtoolize", "pkg-config",
    "cc", "gcc", "g++", "c++", "cpp", "clang", "clang++",
    "gdb", "gdbserver", "valgrind",
    "clangd",
)  # fmt: skip

# kinds: text (a non-empty string), path (absolute), choice, words (a list of names: space or
# comma separated as text), lines (a list of strings: one per line or comma separated), pairs
# (a mapping NAME: scalar; NAME=VALUE as text, one per line), yaml (a free mapping)
KINDS = ("text", "path", "choice", "words", "lines", "pairs", "yaml")


def parse_mount(spec: str) -> tuple[str, str, bool]:
    """``HOST:CONTAINER[:ro|rw]`` -> (host, container, read_only); raises ValueError with the reason."""
    parts = spec.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"mount '{spec}' is not HOST:CONTAINER[:ro]")
    host, target = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise ValueError(f"mount '{spec}': mode must be ro or rw, not '{mode}'")
    for side, p in (("host", host), ("container", target)):
        if not p.startswith("/"):
            raise ValueError(f"mount '{spec}': {side} path must be absolute")
    return host, target, mode == "ro"


def _mount_problem(item: str) -> str | None:
    try:
        parse_mount(item)
    except ValueError as err:
        return str(err)
    return None


def _command_problem(item: str) -> str | None:
    return None if COMMAND_RE.match(item) else f"'commands': '{item}' must be a bare command name (no '/' or spaces)"


def _share_problem(item: str) -> str | None:
    return None if item in SHARES else f"'share': '{item}' is not one of {', '.join(SHARES)}"


DISTRIBUTE_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,62})/([1-9][0-9]{0,2})$")


def _distribute_problem(item: str) -> str | None:
    if DISTRIBUTE_RE.match(item):
        return None
    return f"'distribute': '{item}' must be CONNECTION/SLOTS, e.g. build1/8 (a podman connection name, 1 to 999 jobs)"


def _var_problem(key: str, value: str) -> str | None:
    return None if VAR_RE.match(key) else f"'env': '{key}' is not a valid variable name"


def _ulimit_problem(key: str, value: str) -> str | None:
    return None if ULIMIT_RE.match(value) else f"'ulimits': '{key}' must be SOFT[:HARD], not '{value}'"


@dataclass(frozen=True)
class Option:
    key: str
    kind: str
    label: str  # the TUI form's label
    help: str  # one line: the CLI help, the form hint, the README's meaning
    default: Callable[[], Any] = lambda: None
    default_doc: str = ""  # the README's default column (empty: the default's YAML)
    flag: str | None = None  # the CLI flag of ``qpod env add`` (None: only through ``env set``)
    metavar: str = "VALUE"
    choices: tuple[str, ...] = ()
    required: bool = False
    container: bool = True  # shapes the container: a change replaces it (False: routing only)
    item: Callable[[str], str | None] | None = None  # problem of one list item, or None
    pair: Callable[[str, str], str | None] | None = None  # problem of one NAME, VALUE pair
    multiline: bool = False  # the form shows several lines
    hint: str = ""  # the form's short hint (empty: ``help``)


FIELDS: tuple[Option, ...] = (
    Option(
        "image",
        "text",
        "Image",
        "image reference; pulled on first use if missing (progress on stderr)",
        default=lambda: "",
        default_doc="(required)",
        flag="--image",
        metavar="IMAGE",
        required=True,
        hint="e.g. docker.io/library/centos:7",
    ),
    Option(
        "mounts",
        "lines",
        "Mounts",
        "HOST:CONTAINER[:ro] bind mounts, one per line (the repository itself is always mounted)",
        default=list,
        flag="--mount",
        metavar="HOST:CONTAINER[:ro]",
        item=_mount_problem,
        multiline=True,
        hint="one per line: HOST:CONTAINER[:ro]",
    ),
    Option(
        "share",
        "words",
        "Shared",
        "host paths the container sees at the same place, as toolbx does: home "
        "(your home directory) and tmp (/tmp), so make install --prefix=/tmp/x, ~/.ccache and the like land on "
        "the host. The trade-off: the image's programs read and write your dotfiles as you. [] keeps the "
        "container's own (writes outside the repository and mounts then stay in the container)",
        default=lambda: list(SHARES),
        flag="--share",
        metavar="home|tmp",
        item=_share_problem,
        hint="home tmp (empty: the container's own)",
    ),
    Option(
        "env",
        "pairs",
        "Env vars",
        "variables set in the container, NAME=VALUE (these win over passed ones)",
        default=dict,
        flag="--env",
        metavar="NAME=VALUE",
        pair=_var_problem,
        container=False,
        multiline=True,
        hint="one per line: NAME=VALUE",
    ),
    Option(
        "passthrough",
        "words",
        "Passthrough",
        "host variables passed in (globs). The host-specific PATH, "
        "LD_*, TMPDIR, XDG_RUNTIME_DIR, DBUS_SESSION_BUS_ADDRESS, HOSTNAME, PWD, OLDPWD, SHLVL, _ pass "
        "only when named exactly here (the command gets the image's PATH otherwise)",
        default=lambda: ["*"],
        default_doc='["*"]: your whole environment, as toolbx gives it (CFLAGS, '
        "MAKEFLAGS and make's command-line variables reach the build)",
        flag="--passthrough",
        metavar="GLOB",
        container=False,
        hint="host variables passed in (globs), space separated",
    ),
    Option(
        "deny",
        "words",
        "Deny",
        "host variables never passed in (globs); LD_PRELOAD and QPOD_* never are",
        default=list,
        flag="--deny",
        metavar="GLOB",
        container=False,
        hint="variables never passed in (globs)",
    ),
    Option(
        "commands",
        "words",
        "Commands",
        "command names routed to the container inside the repository",
        default=lambda: list(DEFAULT_COMMANDS),
        flag="--command",
        metavar="NAME",
        item=_command_problem,
        container=False,
        hint="commands routed to the container, space separated",
    ),
    Option(
        "workdir_root",
        "path",
        "Workdir root",
        "where the repository appears in the container (empty: the same path; /qpod: the original QPOD layout)",
        default_doc="same path as on the host",
        flag="--workdir-root",
        metavar="PATH",
        hint="where the repository appears (empty: same path)",
    ),
    Option(
        "run_as",
        "choice",
        "Run as",
        "user: commands run as you (files belong to you); root",
        default=lambda: "user",
        flag="--run-as",
        choices=("user", "root"),
    ),
    Option(
        "cap_add",
        "words",
        "Capabilities",
        "capabilities, e.g. SYS_PTRACE for gdb",
        default=list,
        flag="--cap-add",
        metavar="CAP",
        hint="e.g. SYS_PTRACE (for gdb)",
    ),
    Option(
        "seccomp",
        "text",
        "Seccomp",
        "unconfined or a profile path (gdb wants unconfined for ASLR control)",
        default_doc="podman's",
        flag="--seccomp",
        metavar="PROFILE",
        hint="unconfined or a profile path",
    ),
    Option(
        "ulimits",
        "pairs",
        "Ulimits",
        "limits, NAME=SOFT[:HARD], e.g. nofile=1024:4096 (defaults: settings.yaml)",
        default=dict,
        flag="--ulimit",
        metavar="NAME=SOFT[:HARD]",
        pair=_ulimit_problem,
        hint="e.g. nofile=1024:4096 core=-1",
    ),
    Option(
        "podman_options",
        "yaml",
        "Podman options",
        "extra podman-py containers.create options as a YAML "
        "mapping, e.g. {shm_size: 1g}; {pid_mode: host} shares the host's pid namespace (host tools then "
        "see the build's processes, but code in the container can read every host process of your uid, "
        "/proc/PID/environ included, so deny keeps nothing secret)",
        default=dict,
        flag="--podman-options",
        metavar="YAML",
        multiline=True,
        hint="YAML mapping of podman create options",
    ),
    Option(
        "host",
        "text",
        "Host",
        "a podman system connection (podman system connection list) whose machine "
        "runs the container, reached over ssh with the connection's identity; the repository and the mounts "
        "must be at the same paths there (a shared home), and qpod installed at the same path",
        default_doc="this machine",
        flag="--host",
        metavar="CONNECTION",
        hint="podman connection name (empty: this machine)",
    ),
    Option(
        "distribute",
        "words",
        "Distribute",
        "build hosts for distcc, CONNECTION/SLOTS each (podman connections, e.g. b1/8 b2/8): the compilers "
        "in the container go through distcc, whose jobs run in a distccd container of the same image (same "
        "digest) on each host, reached over ssh only; a host that fails costs time, its jobs compile here",
        default=list,
        default_doc="[]: every compile here",
        flag="--distribute",
        metavar="CONNECTION/SLOTS",
        item=_distribute_problem,
        hint="e.g. b1/8 b2/8 (podman connection/jobs)",
    ),
)
BY_KEY: dict[str, Option] = {f.key: f for f in FIELDS}


# --- YAML values ------------------------------------------------------------------------------

Problem = tuple[str, Any, str]  # (key, where in the key: None, an index or a mapping key, message)


def check_value(opt: Option, value: Any) -> tuple[Any, list[Problem]]:
    """The YAML value of ``opt`` validated: (the value to keep, the problems found, in order)."""
    k = opt.key
    if opt.kind in ("text", "path", "choice"):
        if value is None and not opt.required and opt.kind != "choice":
            return None, []
        if opt.kind == "choice":
            if value not in opt.choices:
                return opt.default(), [(k, None, f"'{k}' must be one of {', '.join(opt.choices)}")]
            return value, []
        if not isinstance(value, str) or not value.strip():
            return opt.default(), [(k, None, f"'{k}' must be a non-empty string")]
        if opt.kind == "path":
            if not value.startswith("/"):
                return None, [(k, None, f"'{k}' must be an absolute path")]
            return value.rstrip("/") or "/", []
        return value.strip(), []
    if opt.kind in ("words", "lines"):
        value = [] if value is None else value
        if not isinstance(value, list):
            return opt.default(), [(k, None, f"'{k}' must be a list")]
        problems: list[Problem] = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or item == "":
                problems.append((k, i, f"'{k}' entries must be non-empty strings"))
            elif opt.item and (why := opt.item(item)):
                problems.append((k, i, why))
        return list(value), problems
    if opt.kind == "pairs":
        value = {} if value is None else value
        if not isinstance(value, dict):
            return opt.default(), [(k, None, f"'{k}' must be a mapping NAME: value")]
        problems = []
        kept: dict[str, str] = {}
        for name, v in value.items():
            if not isinstance(v, (str, int, float, bool)):
                problems.append((k, name, f"'{k}': value of '{name}' must be a scalar"))
                continue
            if opt.pair and (why := opt.pair(str(name), str(v))):
                problems.append((k, name, why))
            kept[str(name)] = str(v)
        return kept, problems
    # yaml
    value = {} if value is None else value
    if not isinstance(value, dict):
        return opt.default(), [(k, None, f"'{k}' must be a mapping")]
    return dict(value), []


# --- text (the TUI form, ``qpod env set KEY=TEXT``) ---------------------------------------------


def _split(text: str, words: bool) -> list[str]:
    parts = re.split(r"[,\s]+" if words else r"[,\n]+", text)
    return [p.strip() for p in parts if p.strip()]


def from_text(opt: Option, text: str) -> tuple[Any, str | None]:
    """Text as typed -> the YAML value (not yet validated), or the reason it cannot be read."""
    if opt.kind in ("text", "path"):
        return (text.strip() or None), None
    if opt.kind == "choice":
        return (text.strip() or opt.default()), None
    if opt.kind in ("words", "lines"):
        return _split(text, words=opt.kind == "words"), None
    if opt.kind == "pairs":
        pairs: dict[str, str] = {}
        lines = text.splitlines() if opt.multiline else _split(text, words=True)
        for line in lines:
            if line.strip():
                name, sep, value = line.strip().partition("=")
                if not sep:
                    return None, f"'{opt.key}': '{line.strip()}': expected {opt.metavar}"
                pairs[name.strip()] = value
        return pairs, None
    if not text.strip():
        return {}, None
    from qpod_engine.base import yamlio
    from qpod_engine.base.errors import ConfigError

    try:  # yamlio, as for the files: no alias bomb from a pasted mapping either
        return yamlio.loads(text, opt.label.lower())[0], None
    except ConfigError as err:
        return None, f"'{opt.key}': {err.detail}"


def to_text(opt: Option, value: Any) -> str:
    """The inverse of ``from_text``, for editing."""
    if value is None:
        return ""
    if opt.kind in ("text", "path", "choice"):
        return str(value)
    if opt.kind in ("words", "lines"):
        return (" " if opt.kind == "words" else "\n").join(value)
    if opt.kind == "pairs":
        return ("\n" if opt.multiline else " ").join(f"{k}={v}" for k, v in value.items())
    if not value:
        return ""
    import yaml

    return yaml.safe_dump(value, sort_keys=False).strip()


# --- CLI --------------------------------------------------------------------------------------


def add_flags(parser: Any, required_image: bool = True) -> None:
    """``qpod env add``'s flags, one per option (repeatable for lists and pairs)."""
    for opt in FIELDS:
        if opt.flag is None:
            continue
        dest = f"opt_{opt.key}"
        if opt.kind in ("words", "lines", "pairs"):
            parser.add_argument(opt.flag, dest=dest, action="append", metavar=opt.metavar, help=f"{opt.help} (repeat)")
        elif opt.kind == "choice":
            parser.add_argument(opt.flag, dest=dest, choices=list(opt.choices), help=opt.help)
        else:
            parser.add_argument(
                opt.flag, dest=dest, metavar=opt.metavar, help=opt.help, required=opt.required and required_image
            )


def from_flags(ns: Any) -> tuple[dict[str, Any], list[Problem]]:
    """The YAML mapping the given flags make (options not given are left out)."""
    data: dict[str, Any] = {}
    problems: list[Problem] = []
    for opt in FIELDS:
        given = getattr(ns, f"opt_{opt.key}", None)
        if given is None:
            continue
        if opt.kind in ("words", "lines"):
            data[opt.key] = [x for item in given for x in (_split(item, words=True) if opt.kind == "words" else [item])]
        elif opt.kind == "pairs":
            pairs: dict[str, str] = {}
            for item in given:
                name, sep, value = item.partition("=")
                if not sep:
                    problems.append((opt.key, None, f"{opt.flag} '{item}': expected {opt.metavar}"))
                pairs[name] = value
            data[opt.key] = pairs
        elif opt.kind == "yaml":
            value, why = from_text(opt, given)
            if why:
                problems.append((opt.key, None, why))
            data[opt.key] = value
        else:
            data[opt.key] = given
    return data, problems


# --- docs -------------------------------------------------------------------------------------


def markdown_table() -> str:
    """The README's reference of environment keys (a test keeps the README equal to it)."""
    import json

    rows = ["| key | default | meaning |", "| --- | --- | --- |"]
    for opt in FIELDS:
        default = opt.default_doc or json.dumps(opt.default())
        rows.append(f"| `{opt.key}` | {default} | {opt.help.replace('|', '/')} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
