"""Environments on another host (``host:``): a podman system connection, reached over ssh.

Credentials stay podman's and ssh's: the connection (``podman system connection list``) gives
the user, host, port, podman socket and identity; known hosts are ``$HOME/.ssh/known_hosts``,
where podman reads them; ssh runs in batch mode (no prompt can hang a build). qpod stores no
secret. Three things travel over ssh:

- commands: the client runs the agent's bridge on that host (``qpod-agent --bridge``, see
  preload/bridge.c), which relays stdin, stdout, stderr, signals and the exit status;
- the tree check before a container is made or started there (``qpod-agent --check``): a
  marker written here must be read there, so a build never runs on a stale or different tree;
- podman's API, through a socket forwarded for the duration of one qpod process.

The remote host must have the same qpod install at the same path (the bridge is the agent's
own program) and the repository and mounts at the same paths (a shared home, as over NFS).
Stdlib only: the launcher imports it on its way to the client.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass

from qpod_engine.base.errors import EXIT_QPOD, QpodError
from qpod_engine.config import containers as naming

SSH_TIMEOUT = 60.0  # a loaded machine and a slow network: connecting can take seconds
# what a remote environment cannot do as a local one does (qpod which, README)
DIFFERENCES = (
    "streams are relayed over ssh: a terminal's stdin is read only when stdin, stdout and stderr "
    "are all the terminal (then the command gets a pty there and keys typed ahead go to it); "
    "other descriptors than 0, 1, 2 are not passed; a dropped connection ends the command with 255"
)


@dataclass(frozen=True)
class Connection:
    name: str
    host: str
    user: str | None
    port: int | None
    socket: str  # podman's API socket on that host
    identity: str | None


def _parse(entry: dict[str, object]) -> Connection | None:
    from urllib.parse import unquote, urlsplit

    uri = urlsplit(str(entry.get("URI") or ""))
    if uri.scheme != "ssh" or not uri.hostname:
        return None
    try:
        port = uri.port
    except ValueError:
        return None
    identity = str(entry.get("Identity") or "") or None
    return Connection(
        str(entry.get("Name") or ""),
        uri.hostname,
        unquote(uri.username) if uri.username else None,
        port,
        unquote(uri.path) or "/run/podman/podman.sock",
        identity,
    )


_connections: dict[str, Connection] | None = None


def connections() -> dict[str, Connection]:
    """podman's ssh connections by name (asked once per process)."""
    global _connections
    if _connections is None:
        from qpod_engine.podman.service import podman_binary, podman_env

        proc = subprocess.run(
            [podman_binary(), "system", "connection", "list", "--format", "json"],
            capture_output=True,
            text=True,
            env=podman_env(),
            timeout=SSH_TIMEOUT,
        )
        if proc.returncode != 0:
            raise QpodError(f"podman system connection list failed: {_last_line(proc.stderr)}", EXIT_QPOD)
        try:
            entries = json.loads(proc.stdout or "[]") or []
        except ValueError:
            entries = []
        _connections = {c.name: c for c in map(_parse, entries) if c is not None}
    return _connections


def connection(name: str) -> Connection:
    conn = connections().get(name)
    if conn is None:
        raise QpodError(
            f"host '{name}' is not a podman ssh connection (add it: podman system connection add "
            f"{name} ssh://USER@HOST[:PORT]/PATH/TO/podman.sock --identity KEY)",
            EXIT_QPOD,
        )
    if conn.host.startswith("-"):
        raise QpodError(f"host '{name}': '{conn.host}' is not a host name", EXIT_QPOD)
    return conn


def known_hosts() -> str:
    """Where podman checks host keys ($HOME/.ssh/known_hosts); ssh itself would take the
    passwd entry's home, which differs under sudo -E and in tests."""
    import pwd

    home = os.environ.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir
    return os.path.join(home, ".ssh", "known_hosts")


CONTROL_PERSIST = 60  # seconds an idle shared connection stays up


# A unix socket's address holds 107 bytes, and ssh first binds its ControlPath with "." and 16
# random characters appended, then renames: the dir, "/", the name and those 17 must fit.
_SUN_PATH_MAX = 107
_CONTROL_NAME_LEN = 24  # hex digits of control_path's name


def _private(path: str) -> bool:
    """A directory (not a link) of ours that no one else can enter."""
    import stat

    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077


def _fits(d: str) -> bool:
    return len(os.fsencode(d)) + 1 + _CONTROL_NAME_LEN + 17 <= _SUN_PATH_MAX


def _made_private(d: str) -> str | None:
    """``d`` made (0700) if missing; ``d`` when it is then a private dir of ours, else None."""
    try:
        os.mkdir(d, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    return d if _private(d) else None


def _short_dir(state: str) -> str:
    """A private dir of ours with a short path, for when the state dir's is too long: in
    $XDG_RUNTIME_DIR when that is ours; else a dir of random name in /tmp (mkdtemp: 0700, and no
    other user can know its name before it exists), found again through ``<state>/ssh-dir``.
    A dir that pointer names is used only while it is still ours and private (/tmp is cleaned,
    and another user could then make one of that name)."""
    import tempfile

    from qpod_engine.base.fileio import write_atomic
    from qpod_engine.base.gitinfo import read_small

    runtime = os.environ.get("XDG_RUNTIME_DIR") or ""
    if runtime.startswith("/") and _private(runtime) and _fits(os.path.join(runtime, "qpod-ssh")):
        found = _made_private(os.path.join(runtime, "qpod-ssh"))
        if found:
            return found
    pointer = os.path.join(state, "ssh-dir")
    try:
        known = read_small(pointer, follow=False).decode("utf-8", "surrogateescape").strip()
    except OSError:
        known = ""
    if known.startswith("/tmp/qpod-ssh-") and _fits(known) and _private(known):
        return known
    try:
        made = tempfile.mkdtemp(prefix="qpod-ssh-", dir="/tmp")
        write_atomic(pointer, made + "\n")
    except OSError as err:
        raise QpodError(
            f"{err.filename or '/tmp'}: cannot make ssh's connection dir: {err.strerror}", EXIT_QPOD
        ) from None
    return made


def control_dir() -> str:
    """A private directory for ssh's shared connections (ControlPath): a command then costs a
    channel on an open connection, not a handshake. In the state dir, unless a socket address
    there would be too long; then a short private dir of ours (``_short_dir``), never a fixed
    name another user could make first."""
    from qpod_engine.base import paths
    from qpod_engine.base.fileio import private_dir

    state = paths.state_dir()
    want = os.path.join(state, "ssh")
    try:
        want = private_dir(want) if _fits(want) else _short_dir(state)
    except OSError as err:
        raise QpodError(f"{want}: cannot make ssh's connection dir: {err.strerror}", EXIT_QPOD) from None
    if not _private(want):
        raise QpodError(f"{want}: not a private directory of yours (ssh's shared connections live there)", EXIT_QPOD)
    return want


def control_path(conn: Connection) -> str:
    """The shared connection of ``conn``: one per this machine, user, host, port and identity.
    The identity is part of the key: a connection whose key is missing (or another key) must
    authenticate on its own, never run its commands on a master another identity opened. (ssh's
    own %C leaves the identity out.) The local host name keeps two machines sharing a home
    apart. ``%`` is doubled: ssh expands tokens in ControlPath."""
    import hashlib
    import socket

    identity = os.path.abspath(os.path.expanduser(conn.identity)) if conn.identity else ""
    key = "\0".join((socket.gethostname(), conn.user or "", conn.host, str(conn.port or ""), identity))
    name = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:_CONTROL_NAME_LEN]
    return os.path.join(control_dir(), name).replace("%", "%%")


def ssh_options(conn: Connection) -> list[str]:
    argv = [
        "ssh",
        "-T",
        "-o",
        "BatchMode=yes",
        "-o",
        "ServerAliveInterval=15",
        "-o",
        "ServerAliveCountMax=3",
        "-o",
        f"UserKnownHostsFile={known_hosts()}",
        "-o",
        "ControlMaster=auto",
        "-o",
        f"ControlPath={control_path(conn)}",
        "-o",
        f"ControlPersist={CONTROL_PERSIST}",
    ]
    if conn.port:
        argv += ["-p", str(conn.port)]
    if conn.identity:
        argv += ["-i", os.path.expanduser(conn.identity)]
    if conn.user:
        argv += ["-l", conn.user]
    return argv


def remote_argv(conn: Connection, *command: str) -> list[str]:
    """ssh running ``command`` (a list of words, quoted for the remote shell) on the host."""
    import shlex

    return [*ssh_options(conn), "--", conn.host, "exec " + " ".join(shlex.quote(w) for w in command)]


def agent_program() -> str:
    return os.path.join(naming.agent_program_dir(), "qpod-agent")


def bridge_argv(conn: Connection, container: str) -> list[str]:
    """What the client runs to reach the agent of ``container`` on the host."""
    return remote_argv(conn, agent_program(), "--bridge", naming.agent_dir(container), container)


def _last_line(text: str) -> str:
    from qpod_engine.base.textsafe import visible

    lines = [ln for ln in (text or "").splitlines() if ln.strip()]
    return visible(lines[-1].strip()) if lines else "no message"


def check_tree(conn: Connection, root: str, paths: list[str], container: str) -> None:
    """Refuse (one line) unless the host sees this very tree at ``root`` and every path of
    ``paths``; makes the container's agent dir there. A marker file with a random token is
    written into the repository (its git dir, else the directory) here and read there."""
    import secrets

    from qpod_engine.base.gitinfo import git_dir

    token = secrets.token_hex(16)
    where = git_dir(root) or root
    marker = os.path.join(where, f"qpod-marker-{token[:12]}")
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise QpodError(
            f"{where}: cannot write the marker that checks host '{conn.name}' sees this tree: {err.strerror}", EXIT_QPOD
        ) from None
    try:
        os.write(fd, token.encode())
        os.close(fd)
        argv = remote_argv(conn, agent_program(), "--check", naming.agent_dir(container), marker, token, *paths)
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=SSH_TIMEOUT, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise QpodError(
                f"host '{conn.name}' ({conn.host}): ssh did not answer in {SSH_TIMEOUT:.0f} s", EXIT_QPOD
            ) from None
    finally:
        try:
            os.unlink(marker)
        except OSError:
            pass
    if proc.returncode == 0:
        return
    if proc.returncode == 255:
        raise QpodError(f"host '{conn.name}': cannot reach it over ssh: {_last_line(proc.stderr)}", EXIT_QPOD)
    if proc.returncode in (126, 127):
        raise QpodError(
            f"host '{conn.name}': {agent_program()} is not there: install qpod on that host at the same path as here",
            EXIT_QPOD,
        )
    for line in proc.stdout.splitlines():
        what, _, rest = line.partition("\t")
        if what == "marker":
            raise QpodError(
                f"host '{conn.name}' does not see this tree at {root} (a marker written here "
                f"{'reads differently' if rest == 'different content' else 'is not'} there): an "
                "environment on another host needs the repository at the same path on both machines, "
                "as with a home shared over NFS",
                EXIT_QPOD,
            )
        if what == "path":
            path = rest.partition("\t")[0]
            raise QpodError(
                f"host '{conn.name}': {path} (a mount of the environment) does not exist there: "
                "mounts must be at the same paths on both machines",
                EXIT_QPOD,
            )
        if what == "agent":
            raise QpodError(f"host '{conn.name}': cannot make qpod's state dir there: {rest}", EXIT_QPOD)
    raise QpodError(
        f"host '{conn.name}': the tree check failed (status {proc.returncode}): "
        f"{_last_line(proc.stderr or proc.stdout)}",
        EXIT_QPOD,
    )


# --- podman's API on that host ------------------------------------------------------------------

_forwards: dict[str, tuple[subprocess.Popen[bytes], str]] = {}


def api_socket(conn: Connection) -> str:
    """A local socket forwarded to the host's podman API (ssh -L), kept for this process."""
    import atexit
    import tempfile
    import time

    got = _forwards.get(conn.name)
    if got and got[0].poll() is None:
        return got[1]
    tmp = tempfile.mkdtemp(prefix="qpod-ssh-")  # 0700, and short enough for a socket address
    local = os.path.join(tmp, "podman.sock")
    argv = [*ssh_options(conn), "-N", "-o", "ExitOnForwardFailure=yes", "-L", f"{local}:{conn.socket}", "--", conn.host]
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    atexit.register(_close_forward, proc, tmp)
    deadline = time.monotonic() + SSH_TIMEOUT
    while not os.path.exists(local):
        if proc.poll() is not None:
            err = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
            raise QpodError(f"host '{conn.name}': cannot reach podman there over ssh: {_last_line(err)}", EXIT_QPOD)
        if time.monotonic() > deadline:
            _close_forward(proc, tmp)
            raise QpodError(
                f"host '{conn.name}': ssh did not forward podman's socket in {SSH_TIMEOUT:.0f} s", EXIT_QPOD
            )
        time.sleep(0.01)
    _forwards[conn.name] = (proc, local)
    return local


def forward_alive(name: str) -> bool:
    got = _forwards.get(name)
    return got is not None and got[0].poll() is None


def _close_forward(proc: subprocess.Popen[bytes], tmp: str) -> None:
    import shutil

    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
    shutil.rmtree(tmp, ignore_errors=True)
