"""The launch spec: everything the native-exec client (``preload/client.c``) needs to run a
command in a warm container without Python: the container and its agent's socket directory,
the path mapping, the environment rules, the identity, the log, and the stamps of the config
files it was derived from (the client falls back to the launcher when one changed).

The launcher writes one per bound root under ``<state>/fast/<FNV-1a of the root>`` (the name
the client computes from the root the preload library matched), and one per container under
``<state>/specs/`` for launches the policy did not choose (``qpod exec --env``).

Stdlib only: the launcher writes it on its way to the client.
"""

from __future__ import annotations

import os

from qpod_engine.base import gitinfo, paths
from qpod_engine.base.fileio import write_atomic
from qpod_engine.base.fnv import fnv1a
from qpod_engine.config import containers as naming

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SPEC_VERSION = 1


def fast_path(root: str) -> str:
    """The launch spec of ``root``'s warm container, named by the hash of the root's bytes (the
    client computes the same name)."""
    return os.path.join(paths.state_dir(), "fast", fnv1a(os.fsencode(root)))


def explicit_path(container: str) -> str:
    return os.path.join(paths.state_dir(), "specs", container)


def _esc(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def _line(*fields: object) -> str:
    return "\t".join(_esc(f) for f in fields)


def spec_text(snap: dict[str, Any], env: dict[str, Any], root: str, facts: dict[str, Any], branch_rules: bool) -> str:
    settings = snap["settings"]
    lines = [
        _line("qpod-spec", SPEC_VERSION),
        _line("root", root),
        _line("env", env["name"]),
        _line("image", env["image"]),
        _line("container", facts["name"]),
        _line("hash", facts["hash"]),
        _line("agent", naming.agent_dir(facts["name"])),
        _line("branch_rules", 1 if branch_rules else 0),
        _line("log", paths.log_file(), settings["log_max_bytes"], settings["log_keep"]),
    ]
    gd = gitinfo.git_dir(root)
    if gd:
        head = os.path.join(gd, "HEAD")
        try:
            # the checkout's file: a FIFO or /dev/zero there must not hang or fill the launcher
            text = gitinfo.read_small(head).decode("utf-8", "surrogateescape")
            lines.append(_line("head", head, text.rstrip("\r\n")))
        except OSError:
            pass
    if facts.get("host"):
        # on another host: the client relays through ssh, and forgets the facts when the
        # container is gone there (containers.warm_facts cannot look at a remote process)
        lines.append(_line("host", facts["host"]))
        lines.append(_line("facts", naming.facts_path(facts["name"])))
        lines += [_line("ssh", word) for word in facts.get("ssh") or ()]
    lines += [_line("map", host, ctr) for host, ctr in naming.path_maps(env, root)]
    lines += [_line("cmd", c) for c in env.get("commands", ())]
    lines += [_line("pass", g) for g in env.get("passthrough", ())]
    lines += [_line("deny", g) for g in naming.denied(env)]
    lines += [_line("set", f"{k}={v}") for k, v in env.get("env", {}).items()]
    who = naming.identity(env)
    if who:
        lines.append(_line("user", who[0], who[1]))
        lines.append(_line("groups", " ".join(str(g) for g in who[2])))
    for path, stamp in snap["sources"].items():
        lines.append(_line("src", path, *(stamp if stamp else ("-", "-"))))
    return "\n".join(lines) + "\n"


def write(path: str, text: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            if f.read() == text:
                return path  # unchanged: no write on the common path
    except OSError:
        pass
    write_atomic(path, text)
    return path
