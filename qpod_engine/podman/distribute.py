"""An environment's ``distribute:``: one build's compiles spread over build hosts by distcc.

distcc is the engine; qpod gives it what it needs and users get wrong: the same compiler on
every host (a distccd container of the environment's very image, checked by image id, on each
host) and a way to reach them that no one else can use (ssh only, no TCP port anywhere).

- In the build container, distcc stands in front of the compilers: a masquerade directory of
  qpod's (``<MOUNT>/bin``: cc, gcc, g++, c++, clang, clang++ where the image has them, linked to
  the image's distcc) first in PATH. Its host list is ``<MOUNT>/state/hosts`` (DISTCC_DIR), its
  log ``<MOUNT>/distcc.log`` (DISTCC_LOG: its per-job warnings stay out of the build's output),
  and its ssh is qpod's wrapper ``<MOUNT>/ssh`` (DISTCC_SSH). ``<MOUNT>`` is a private dir of the
  state dir, ``<state>/distcc/<container>``, mounted there.
- distcc's ssh mode runs ``DISTCC_SSH [-l USER] HOST distccd --inetd ...`` for each job. The
  wrapper maps HOST (a podman connection name) to ssh with that connection's user, port, identity
  and known_hosts, in batch mode and on the shared connection of ``host:`` (remote.ssh_options);
  there it runs ``podman exec -i`` of that host's distccd container, whose distccd serves the job
  on the channel (``--inetd``) and exits. The distccd container has no network at all.
- Faults: a job whose host fails (ssh cannot connect, the connection drops, no container there)
  is compiled here by distcc's own fallback, and distcc leaves that host alone for a minute. The
  wrapper says once which host failed (a marker per host, removed when the host works again).

``ensure`` runs on the launcher's slow path (stdlib only: subprocess and ssh, no podman-py): per
host, in parallel, one ssh that checks the image there (pulled when missing, refused when its id
differs) and makes or starts the distccd container.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys

from qpod_engine.base.errors import EXIT_QPOD, QpodError
from qpod_engine.config import containers as naming

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

MOUNT = "/run/qpod-distcc"  # in the build container: the wrapper, the masquerade dir, distcc's state
MASQUERADE = MOUNT + "/bin"
WRAPPER = MOUNT + "/ssh"
CLIENT_LOG = MOUNT + "/distcc.log"
COMPILERS = ("cc", "gcc", "g++", "c++", "clang", "clang++")
SERVER_LOG = "/tmp/qpod-distccd.log"  # in each distccd container (its own /tmp)
# distccd --inetd waits for its compiler in a loop of waitpid(WNOHANG) and a one-second select()
# on the client's channel; only its daemon mode has a SIGCHLD handler to cut that short, so in
# inetd mode every job would last a whole number of seconds. This library, built in each distccd
# container by the image's own compiler, gives distccd a handler (no SA_RESTART: the select ends
# when the compiler does) and leaves nothing to the compiler it starts.
WAKE_LIB = "/tmp/qpod-distccd-wake.so"
WAKE_SRC = r"""
#include <signal.h>
#include <stdlib.h>
static void wake(int sig) { (void)sig; }
__attribute__((constructor)) static void qpod_wake(void)
{
    struct sigaction sa;
    sa.sa_handler = wake;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, 0);
    unsetenv("LD_PRELOAD");
}
"""
LABEL_ROLE = "qpod.role"
ROLE_DISTCCD = "distccd"
LABEL_IMAGE_ID = "qpod.image-id"
FAILED_QUIET_MINUTES = 60  # a host that stays down is named again after this long
SSH_TIMEOUT = 120.0  # a pull there can take a while


def hosts(env: dict[str, Any]) -> list[tuple[str, int]]:
    """(connection, job slots) of the environment's ``distribute`` list, in its order."""
    out = []
    for item in env.get("distribute") or ():
        name, _, slots = item.rpartition("/")
        out.append((name, int(slots)))
    return out


def distccd_name(env_name: str, host: str) -> str:
    """The distccd container of environment ``env_name`` on ``host``: per config, as every
    container of qpod (two users' never meet), and per host (hosts may share a storage)."""
    digest = hashlib.sha1(f"{naming.config_id()}\0{host}".encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"qpod-{env_name}-distccd-{host}-{digest}"


def host_dir(container: str) -> str:
    """This machine's side of MOUNT for build container ``container``."""
    from qpod_engine.base import paths

    return os.path.join(paths.state_dir(), "distcc", container)


def build_mounts(env: dict[str, Any], container: str) -> list[dict[str, Any]]:
    """What the build container of a distributing environment mounts besides its own: MOUNT,
    the ssh connection dir (the shared connections) and each connection's identity and
    known_hosts where the shared paths do not show them (read-only, same paths)."""
    from qpod_engine.base.fileio import private_dir
    from qpod_engine.podman import remote

    d = private_dir(host_dir(container))
    private_dir(os.path.join(d, "state"))
    private_dir(os.path.join(d, "bin"))
    control = remote.control_dir()
    mounts = [
        {"type": "bind", "source": d, "target": MOUNT, "read_only": False},
        {"type": "bind", "source": control, "target": control, "read_only": False},
    ]
    shared = naming.shared_paths(env)
    files = [remote.known_hosts()]
    try:
        conns = remote.connections()
    except QpodError:
        conns = {}
    for name, _slots in hosts(env):
        conn = conns.get(name)
        if conn is not None and conn.identity:
            files.append(os.path.expanduser(conn.identity))
    for f in dict.fromkeys(files):
        if os.path.isfile(f) and not any(f.startswith(p.rstrip("/") + "/") for p in shared):
            mounts.append({"type": "bind", "source": f, "target": f, "read_only": True})
    return mounts


def build_environment(image_path: str) -> dict[str, str]:
    """The build container's own variables: qpod's masquerade dir first in the image's PATH."""
    return {
        "PATH": f"{MASQUERADE}:{image_path}",
        "DISTCC_DIR": MOUNT + "/state",
        "DISTCC_SSH": WRAPPER,
        "DISTCC_LOG": CLIENT_LOG,
        "DISTCC_FALLBACK": "1",
    }


# --- the wrapper distcc runs as its ssh -----------------------------------------------------------


def remote_command(conn_socket: str, name: str) -> str:
    """What ssh runs there for one job: distccd serving the channel in that host's distccd
    container (started again if it was stopped). --enable-tcp-insecure only turns off distccd's
    compiler whitelist, which guards a TCP port: here the only client is whoever may ssh in."""
    p = f"podman --url {shlex.quote('unix://' + conn_socket)}"
    serve = (
        f"{p} exec -i -e LD_PRELOAD={WAKE_LIB} {shlex.quote(name)} distccd --inetd --enable-tcp-insecure "
        f"--log-file {SERVER_LOG} --log-level info"
    )
    return f"{serve}; s=$?; [ $s -eq 125 ] && {p} start {shlex.quote(name)} >/dev/null 2>&1 && exec {serve}; exit $s"


def wrapper_text(env_name: str, entries: list[tuple[str, list[str]]]) -> str:
    """The DISTCC_SSH script: ``entries`` is (connection, the ssh argv of one job there)."""
    q = shlex.quote
    cases = "".join(f"{q(name)}) set -- {' '.join(q(w) for w in argv)} ;;\n" for name, argv in entries)
    return f"""#!/bin/sh
# qpod: distcc's ssh for environment {env_name} (written by qpod on each launch: edits are lost).
# distcc runs it as: $0 [-l USER] HOST distccd --inetd ...; HOST is a podman connection.
[ "$1" = -l ] && shift 2
host=$1
d={MOUNT}/state
case $host in
{cases}*) echo "qpod: distcc asked for build host '$host', which environment {env_name} does not list" >&2; exit 255 ;;
esac
err=$d/ssh-err.$$
"$@" 2>"$err"
s=$?
m=$d/failed-$host
if [ $s -eq 0 ]; then
  rm -f "$err" "$m"
  exit 0
fi
why=$(grep -v '^ *$' "$err" | tail -n 1)
rm -f "$err"
case $s in
255) why=${{why:-ssh: the connection failed}} ;;
125|126|127) why="no distccd container there (${{why:-podman exec failed}}): qpod makes it on the next launch" ;;
*) why="distccd there ended with status $s${{why:+: $why}}" ;;
esac
# said once: the wrapper that makes the marker says it (a marker older than the quiet time is
# made again: a host that stays down is named again then)
find "$m" -mmin +{FAILED_QUIET_MINUTES} -exec rm -f {{}} + 2>/dev/null
if (set -C; printf '%s\\n' "$why" > "$m") 2>/dev/null; then
  echo "qpod: build host $host failed, its compiles run here: $why" >&2
fi
exit $s
"""


# --- making sure: the distccd containers, the wrapper, the host list --------------------------

# One ssh per host: the image there (pulled if missing) must be this machine's by id; the
# distccd container made (no network, waiting only) or started. Prints one line: ok, noimage
# REASON, differs ID, or fail REASON.
_ENSURE = r"""
p() { podman --url "unix://$SOCK" "$@"; }
last() { grep -v 'level=warning' "$1" | grep -v '^ *$' | tail -n 1; }
t=$(mktemp) || exit 1
trap 'rm -f "$t"' EXIT
id=$(p image inspect --format '{{.Id}}' "$IMG" 2>"$t")
if [ -z "$id" ]; then
  p pull -q "$IMG" >/dev/null 2>"$t"
  id=$(p image inspect --format '{{.Id}}' "$IMG" 2>/dev/null)
  [ -n "$id" ] || { printf 'noimage\t%s\n' "$(last "$t")"; exit 0; }
fi
[ "$id" = "$WANT" ] || { printf 'differs\t%s\n' "$id"; exit 0; }
wake() { printf '%s' "$WAKE" | p exec -i "$NAME" sh -c 'cc -shared -fPIC -O2 -o "$0" -x c - >/dev/null 2>&1' "$LIB"; }
st=$(p container inspect --format '{{.State.Status}} {{index .Config.Labels "qpod.image-id"}}' "$NAME" 2>/dev/null)
case $st in
"running $WANT") echo ok; exit 0 ;;
*" $WANT") p start "$NAME" >/dev/null 2>"$t" && { wake; echo ok; exit 0; } ;;
esac
[ -n "$st" ] && p rm -f -t 0 "$NAME" >/dev/null 2>&1
n=$(ulimit -Hn); case $n in unlimited|'') n=1048576 ;; esac
[ "$n" -gt 1048576 ] && n=1048576
if p run -d --name "$NAME" --network none --entrypoint sleep \
    --label qpod=1 --label "qpod.config=$CONFIG" --label "qpod.env=$ENVNAME" --label "qpod.host=$HOSTNAME_" \
    --label qpod.role=distccd --label "qpod.image-id=$WANT" \
    --ulimit "nofile=$n:$n" --ulimit nproc=8192:8192 "$IMG" 2147483647 >/dev/null 2>"$t"; then
  wake
  echo ok
else
  printf 'fail\t%s\n' "$(last "$t")"
fi
"""


def _ssh_job(conn: Any, script: str, env: dict[str, str], timeout: float = SSH_TIMEOUT) -> tuple[int, str, str]:
    from qpod_engine.podman import remote

    assign = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    argv = [*remote.ssh_options(conn), "--", conn.host, f"{assign} exec sh -c {shlex.quote(script)}"]
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, errors="replace", timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        return 255, "", f"ssh did not answer in {timeout:.0f} s"
    return proc.returncode, proc.stdout, proc.stderr


def _last_line(text: str) -> str:
    from qpod_engine.base.textsafe import visible

    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip() and "level=warning" not in ln]
    return visible(lines[-1]) if lines else "no message"


def local_image_id(image: str) -> str | None:
    from qpod_engine.podman.local_images import image_id

    return image_id(image)


def ensure_host(env: dict[str, Any], host: str, want: str) -> tuple[str, str]:
    """(state, why) of build host ``host`` for environment ``env``: "ok", "refused"
    (its image differs or is missing: left out), "down" (kept: distcc tries it again)."""
    from qpod_engine.podman import remote

    try:
        conn = remote.connection(host)
    except QpodError as no_conn:
        return "refused", str(no_conn)
    rc, out, err = _ssh_job(
        conn,
        _ENSURE,
        {
            "SOCK": conn.socket,
            "IMG": env["image"],
            "WANT": want,
            "NAME": distccd_name(env["name"], host),
            "CONFIG": naming.config_id(),
            "ENVNAME": env["name"],
            "HOSTNAME_": host,
            "WAKE": WAKE_SRC,
            "LIB": WAKE_LIB,
        },
    )
    if rc == 255:
        return "down", f"cannot reach it over ssh: {_last_line(err)}"
    what, _, rest = (out.strip().splitlines() or [""])[-1].partition("\t")
    image = env["image"]
    if what == "ok":
        naming.write_facts({"name": distccd_name(env["name"], host), "host": host, "distccd": True})
        return "ok", ""
    if what == "differs":
        return "refused", (
            f"its image {image} is {_short(rest)}, here {_short(want)}: a different compiler would build different "
            f"objects (podman image scp {image} {host}:: copies this machine's)"
        )
    if what == "noimage":
        return "refused", (
            f"image {image} is not there and cannot be pulled ({rest or 'no message'}); podman image scp {image} "
            f"{host}:: copies it"
        )
    if what == "fail":
        return "down", f"cannot start its distccd container: {rest or 'no message'}"
    return "down", f"the check there failed (status {rc}): {_last_line(err or out)}"


def _short(image_id: str) -> str:
    return "sha256:" + image_id.removeprefix("sha256:")[:12]


def _probe_container(container: str) -> tuple[list[str], str | None]:
    """The compilers the build container has (of COMPILERS) and its distcc's path (None: none)."""
    from qpod_engine.podman.service import podman_binary, podman_env

    script = 'for c in "$@"; do command -v "$c" >/dev/null 2>&1 && echo "$c"; done; command -v distcc || echo -'
    proc = subprocess.run(
        [podman_binary(), "exec", container, "/bin/sh", "-c", script, "sh", *COMPILERS],
        capture_output=True,
        text=True,
        env=podman_env(),
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    lines = proc.stdout.split()
    if proc.returncode != 0 or not lines:
        raise QpodError(f"cannot look for distcc in container {container}: {_last_line(proc.stderr)}", EXIT_QPOD)
    distcc = lines[-1] if lines[-1].startswith("/") else None
    return [c for c in lines[:-1] if c in COMPILERS], distcc


def _masquerade(d: str, container: str, container_id: str) -> str | None:
    """Links in ``d/bin``, one per compiler the image has, to its distcc (asked once per
    container). Returns distcc's path there, or None when the image has no distcc."""
    from qpod_engine.base.fileio import write_atomic

    stamp = os.path.join(d, "probed")
    try:
        with open(stamp, encoding="utf-8") as f:
            cid, _, known = f.read().strip().partition("\t")
        if cid == container_id:
            return known or None
    except OSError:
        pass
    compilers, distcc = _probe_container(container)
    bindir = os.path.join(d, "bin")
    for entry in os.listdir(bindir):
        os.unlink(os.path.join(bindir, entry))
    if distcc:
        for c in compilers:
            os.symlink(distcc, os.path.join(bindir, c))
    write_atomic(stamp, f"{container_id}\t{distcc or ''}\n")
    return distcc


def ensure(env: dict[str, Any], facts: dict[str, Any]) -> None:
    """Make the build hosts of ``env`` ready for the build container of ``facts``: the distccd
    containers there, the wrapper and the host list here. Never fails the command: a host that
    cannot serve is named in one line and its compiles run here."""
    from concurrent.futures import ThreadPoolExecutor

    from qpod_engine.base.fileio import private_dir, write_atomic
    from qpod_engine.podman import remote

    listed = hosts(env)
    if not listed:
        return
    container = facts["name"]
    d = private_dir(host_dir(container))
    state = private_dir(os.path.join(d, "state"))
    private_dir(os.path.join(d, "bin"))
    hosts_file = os.path.join(state, "hosts")
    try:
        distcc = _masquerade(d, container, facts.get("id") or "")
    except QpodError as err:
        _say(f"environment {env['name']}: {err}: every compile runs here")
        write_atomic(hosts_file, "")
        return
    if distcc is None:
        _say(f"environment {env['name']}: image {env['image']} has no distcc: every compile runs here")
        write_atomic(hosts_file, "")
        return
    want = local_image_id(env["image"])
    if not want:
        _say(f"environment {env['name']}: image {env['image']} has no id here: every compile runs here")
        write_atomic(hosts_file, "")
        return
    with ThreadPoolExecutor(len(listed)) as pool:
        results = list(pool.map(lambda h: ensure_host(env, h[0], want), listed))
    entries = []
    for name, _slots in listed:
        try:
            conn = remote.connection(name)
        except QpodError:
            continue
        there = remote_command(conn.socket, distccd_name(env["name"], name))
        argv = [*remote.ssh_options(conn), "--", conn.host, there]
        entries.append((name, argv))
    write_atomic(os.path.join(d, "ssh"), wrapper_text(env["name"], entries))
    os.chmod(os.path.join(d, "ssh"), 0o700)
    serving = [f"@{name}/{slots}" for (name, slots), (st, _) in zip(listed, results, strict=True) if st != "refused"]
    write_atomic(hosts_file, " ".join(serving) + "\n")
    for (name, _slots), (st, why) in zip(listed, results, strict=True):
        marker = os.path.join(state, f"failed-{name}")
        if st == "ok":
            _unlink(marker)
        elif st == "refused":
            _say(f"build host {name} refused: {why}")
        else:
            _say(f"build host {name} failed, its compiles run here: {why}")
            write_atomic(marker, why + "\n")  # the wrapper does not say it again


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _say(line: str) -> None:
    from qpod_engine.base.textsafe import visible

    sys.stderr.write(f"qpod: {visible(line)}\n")
    sys.stderr.flush()


# --- qpod doctor --------------------------------------------------------------------------------


def image_lacks(image: str, ulimits: dict[str, str]) -> list[str]:
    """Which of distcc, distccd and ssh image ``image`` lacks (a throwaway container of it, no
    network, with ``ulimits``: NAME -> SOFT:HARD); ["the image"] when it is not here."""
    from qpod_engine.podman.local_images import image_exists
    from qpod_engine.podman.service import podman_binary, podman_env

    if not image_exists(image):
        return ["the image (not in this machine's storage)"]
    limits = [arg for k, v in ulimits.items() for arg in ("--ulimit", f"{k}={v}")]
    script = 'for p in distcc distccd ssh; do command -v "$p" >/dev/null 2>&1 || echo "$p"; done'
    proc = subprocess.run(
        [podman_binary(), "run", "--rm", "--network", "none", *limits, "--entrypoint", "/bin/sh", image, "-c", script],
        capture_output=True,
        text=True,
        env=podman_env(),
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        return [f"a shell to look with ({_last_line(proc.stderr)})"]
    return proc.stdout.split()


_CHECK = r"""
t=$(mktemp) || exit 1
trap 'rm -f "$t"' EXIT
v=$(podman --url "unix://$SOCK" version --format '{{.Server.Version}}' 2>"$t") || {
  printf 'nopodman\t%s\n' "$(grep -v '^ *$' "$t" | tail -n 1)"; exit 0; }
printf 'podman\t%s\n' "$v"
id=$(podman --url "unix://$SOCK" image inspect --format '{{.Id}}' "$IMG" 2>/dev/null)
printf 'image\t%s\n' "$id"
"""


def check_host(env: dict[str, Any], host: str, want: str) -> Iterator[tuple[bool, str, str]]:
    """``qpod doctor``'s checks of one build host: ssh, podman there, the image there."""
    from qpod_engine.podman import remote

    what = f"build host {host} (environment {env['name']})"
    try:
        conn = remote.connection(host)
    except QpodError as no_conn:
        yield (False, f"{what}: {no_conn}", f"podman system connection add {host} ssh://USER@HOST/PATH/podman.sock")
        return
    who = f"{conn.user}@{conn.host}" if conn.user else conn.host
    rc, out, err = _ssh_job(conn, _CHECK, {"SOCK": conn.socket, "IMG": env["image"]}, timeout=remote.SSH_TIMEOUT)
    if rc == 255:
        yield (
            False,
            f"{what}: ssh {who} without a prompt: {_last_line(err)}",
            f"run ssh {who} true once (accept its host key into {remote.known_hosts()}; the key must be in the "
            "server's authorized_keys)",
        )
        return
    yield (True, f"{what}: ssh {who} works without a prompt", "")
    found = dict(line.partition("\t")[::2] for line in out.splitlines())
    if "podman" not in found:
        yield (
            False,
            f"{what}: podman at {conn.socket} answers: {found.get('nopodman') or _last_line(err)}",
            f"on {conn.host}: systemctl --user enable --now podman.socket (or the system one for root)",
        )
        return
    yield (True, f"{what}: podman {found['podman']} answers", "")
    there = found.get("image", "")
    image = env["image"]
    if not there:
        yield (False, f"{what}: image {image} is there", f"podman image scp {image} {host}:: (or pull it there)")
    else:
        yield (
            there == want,
            f"{what}: image {image} there is this machine's ({_short(there)}"
            + (")" if there == want else f", here {_short(want) if want else 'none'})"),
            f"podman image scp {image} {host}:: (a different image could hold a different compiler)",
        )
