"""``qpod doctor``: each check says what it looked at and, when it fails, the fix."""

import os
import shutil
import subprocess
from collections.abc import Iterator

from qpod_engine.base.errors import QpodError
from qpod_engine.base.paths import REPO_FILE, find_program

Check = tuple[bool, str, str]  # (ok, what was checked, how to fix)


def run_checks() -> Iterator[Check]:
    exe = find_program("podman")
    yield (exe is not None, f"podman installed ({exe or 'not found'})", "apt-get install podman runc")
    if exe is None:
        return
    from qpod_engine.podman import lifecycle as pb
    from qpod_engine.podman import service

    if service.is_rootless():
        checks = list(rootless_checks())
        yield from checks
        if not all(ok for ok, _, _ in checks):
            return  # podman itself cannot work for this user yet: the fixes above come first
    rt = pb.runtime_name("auto")
    yield (
        rt is None or shutil.which(rt) is not None,
        f"OCI runtime: {rt or 'podman default'}",
        "apt-get install runc (crun fails on cgroups-hybrid hosts)",
    )
    try:
        url = service.ensure_service()
        yield (True, f"podman API socket answers ({url})", "")
    except QpodError as err:
        yield (False, f"podman API socket: {err}", _service_fix())
        return
    yield _trivial_container(exe, rt)
    yield from _config_checks()
    yield from _preload_checks()
    yield from _activation_checks()
    yield _host_terminals_check()
    yield from _transport_checks()
    yield from _remote_checks(exe)
    yield from _distribute_checks()


def _host_terminals_check() -> Check:
    from qpod_engine.config import containers as naming

    return (
        naming.host_terminals({}),
        "containers see your terminals at /dev/pts (tty names yours; an editor's pty opens there)",
        "sudo chmod 0666 /dev/pts/ptmx (as /dev/ptmx is; scripts/setup.sh does it, also at boot)",
    )


def _activation_checks() -> Iterator[Check]:
    """When activation is on: the library its files name is there, each shell's startup file
    still sources its hook, and the desktop session is reached."""
    from qpod_engine.activation import state

    st = state.status()
    if not st.on:
        yield (True, "activation: off (qpod-shell starts a qpod shell; qpod activate: every terminal)", "")
        return
    yield (
        st.library_present,
        f"activation: the library it names is there ({st.library})",
        "qpod activate (again: it writes this install's paths), or qpod deactivate",
    )
    for shell, files in state.startup_files().items():
        for f in dict.fromkeys(files):
            yield (
                f in st.shells.get(shell, []),
                f"activation: {shell} starts in qpod mode from {f}",
                "qpod activate (the line that sources its hook is gone from that file)",
            )
    yield (
        st.generator is not None,
        f"activation: desktop programs reached ({st.generator or 'no systemd user environment generator'})",
        "sudo bash scripts/setup.sh installs it; without systemd see README, 'Activation'",
    )


def _service_fix() -> str:
    from qpod_engine.podman import service

    try:
        return f"podman system service --time=0 unix://{service.socket_path()} (and see its error)"
    except QpodError as err:
        return f"podman itself fails here: {err}"


def _trivial_container(exe: str, runtime: str | None, connection: str | None = None) -> Check:
    """Start a throwaway container with qpod's runtime and limits, from any image there (this
    machine's, or that of podman connection ``connection``)."""
    from qpod_engine.podman.lifecycle import default_ulimits
    from qpod_engine.podman.service import podman_env

    env = podman_env()
    podman = [exe, "--connection", connection] if connection else [exe]
    where = f" on host {connection}" if connection else ""
    images = subprocess.run(
        [*podman, "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True, env=env, timeout=60
    ).stdout.split()
    images = [i for i in images if not i.startswith("<none>")]
    if not images:
        return (True, f"trivial container{where}: skipped (no image there yet; 'qpod demo' builds one)", "")
    limits = [arg for k, v in default_ulimits().items() for arg in ("--ulimit", f"{k}={v}")]
    rt = ["--runtime", runtime] if runtime else []
    # rootless: the host network, as qpod's containers use (slirp4netns needs /dev/net/tun)
    net = ["--network=host"] if os.geteuid() != 0 or connection else []
    proc = subprocess.run(
        [*podman, "run", "--rm", *rt, *net, *limits, images[0], "true"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    last = (proc.stderr.strip().splitlines() or [""])[-1]
    return (
        proc.returncode == 0,
        f"trivial container starts{where} ({images[0]}, runtime {runtime or 'default'})"
        + ("" if proc.returncode == 0 else f": {last}"),
        "set 'runtime' and 'ulimits' in settings.yaml (see README: Podman on restricted hosts)",
    )


def _remote_checks(exe: str) -> Iterator[Check]:
    """Each connection an environment runs on: defined, reachable by ssh without a prompt,
    qpod there at the same path, its podman answering and able to start a container."""
    from qpod_engine.podman import remote
    from qpod_engine.podman.lifecycle import client, remote_hosts

    for host in remote_hosts(build_hosts=False):  # (build hosts: _distribute_checks)
        try:
            conn = remote.connection(host)
        except QpodError as err:
            yield (
                False,
                f"host {host}: {err}",
                f"podman system connection add {host} ssh://USER@HOST/PATH/podman.sock --identity KEY",
            )
            continue
        probe = remote.remote_argv(conn, "test", "-x", remote.agent_program())
        try:
            proc = subprocess.run(
                probe, capture_output=True, text=True, timeout=remote.SSH_TIMEOUT, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            yield (False, f"host {host}: ssh to {conn.host} did not answer", "check the network and the ssh server")
            continue
        port = f" -p {conn.port}" if conn.port else ""
        ident = f" -i {conn.identity}" if conn.identity else ""
        who = f"{conn.user}@{conn.host}" if conn.user else conn.host
        if proc.returncode == 255:
            last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            yield (
                False,
                f"host {host}: ssh {who} without a prompt: {last}",
                f"run ssh{port}{ident} {who} true once (accept the host key into {remote.known_hosts()}; "
                "the key must be in the server's authorized_keys)",
            )
            continue
        yield (True, f"host {host}: ssh {who} works without a prompt", "")
        yield (
            proc.returncode == 0,
            f"host {host}: qpod installed at {remote.agent_program()}",
            "install qpod on that host at the same path as here (scripts/setup.sh from the same clone)",
        )
        try:
            info = client(host).info()
        except Exception as err:  # noqa: BLE001 - any failure here is the finding
            yield (
                False,
                f"host {host}: podman at {conn.socket} answers: {err}",
                f"on {conn.host}: systemctl --user enable --now podman.socket (or the system one for root)",
            )
            continue
        version = info.get("version", {}).get("Version", "?")
        rootless = info.get("host", {}).get("security", {}).get("rootless")
        yield (True, f"host {host}: podman {version} answers ({'rootless' if rootless else 'root'})", "")
        yield _trivial_container(exe, None, host)


def _distribute_checks() -> Iterator[Check]:
    """Each environment that distributes its compiles: distcc, distccd and ssh in its image;
    each build host reached by ssh without a prompt, its podman answering, the image there
    this machine's (by id)."""
    from qpod_engine.config import snapshot
    from qpod_engine.podman import distribute
    from qpod_engine.podman.lifecycle import default_ulimits

    try:
        snap = snapshot.load()
    except QpodError:
        return  # _config_checks said why
    for name, env in sorted(snap["envs"].items()):
        if "error" in env or not env.get("distribute"):
            continue
        missing = distribute.image_lacks(env["image"], default_ulimits())
        yield (
            not missing,
            f"environment {name}: image {env['image']} has distcc, distccd and ssh"
            + (f" (missing: {', '.join(missing)})" if missing else ""),
            "install distcc and openssh-client in the image (the demo's Debian 11 image has them)",
        )
        want = distribute.local_image_id(env["image"]) or ""
        for host, _slots in distribute.hosts(env):
            yield from distribute.check_host(env, host, want)


def _config_checks() -> Iterator[Check]:
    from qpod_engine.config import snapshot

    try:
        snap = snapshot.compile_config()
    except QpodError as err:
        yield (False, f"config parses: {err}", "fix the file at the line named")
        return
    broken = {n: e["error"] for n, e in snap["envs"].items() if "error" in e}
    yield (
        not broken,
        "config parses" + (f": {'; '.join(broken.values())}" if broken else ""),
        "fix the file at the line named",
    )
    for repo in snap["repos"]:
        if not os.path.isdir(repo["root"]):
            yield (
                False,
                f"bound repository {repo['root']} exists",
                f"qpod unbind --path {repo['root']} (or move it back)",
            )
        for env in ([repo["environment"]] if repo["environment"] else []) + [e for _, e in repo["branches"]]:
            if env == REPO_FILE:  # the repository's own file: its problems, if any
                entry = snapshot.environment_entry(snap, env, repo["root"]) or {"absent": True}
                if entry.get("absent") or "error" in entry:
                    why = entry.get("error") or f"no {env} in the checked-out tree"
                    yield (False, f"{repo['root']}: {why}", f"fix {env}, then qpod allow (or qpod init ENV)")
            elif env not in snap["envs"]:
                yield (False, f"{repo['root']}: environment '{env}' is defined", f"qpod env add {env} --image IMAGE")


def _preload_checks() -> Iterator[Check]:
    try:
        from qpod_engine.routing import preload_lib
    except ImportError:
        yield (False, "preload library: qpod_engine.routing.preload_lib missing", "reinstall: pip install .")
        return
    problems = preload_lib.check()
    yield (
        not problems,
        "preload library loads and the rules file is current" + (f": {'; '.join(problems)}" if problems else ""),
        "reinstall with: pip install .",
    )


def _transport_checks() -> Iterator[Check]:
    """Native exec: the client and the static agent are built; which containers fell back to
    podman exec, and why."""
    from qpod_engine.config import containers as naming

    agent = os.path.join(naming.agent_program_dir(), "qpod-agent")
    client = naming.client_program()
    built = os.access(agent, os.X_OK) and os.access(client, os.X_OK)
    yield (
        built,
        f"native exec: client {client}, agent {agent}",
        "reinstall (pip install . builds them; the agent needs libc6-dev for a static build)",
    )
    try:
        from qpod_engine.podman.lifecycle import list_containers

        ctrs = list_containers()
    except QpodError:
        return
    for c in ctrs:
        if c.get("transport") == naming.TRANSPORT_EXEC:
            why = naming.fallback_reason(c["name"]) or "the agent did not start"
            yield (
                False,
                f"container {c['name']} uses the podman exec fallback ({why}): no separate stderr "
                "under a TTY, no SIGPIPE, no job control, no signals without a TTY",
                f"let the agent run: relax environment '{c['environment']}' (seccomp, podman_options); "
                "the changed config makes the container again, with the agent first",
            )


# --- rootless: what podman needs from the system for a normal user --------------------------

SUBID_MIN = 65536  # a Debian image uses ids up to 65534 (nobody)


def _user() -> tuple[str, int]:
    import pwd

    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name, uid
    except KeyError:
        return str(uid), uid


def _subid_ranges(file: str, name: str, uid: int) -> list[tuple[int, int]]:
    """(start, count) ranges of ``file`` (/etc/subuid or /etc/subgid) for the user, by name or uid."""
    found = []
    try:
        with open(file, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[0] in (name, str(uid)) and parts[1].isdigit() and parts[2].isdigit():
                    found.append((int(parts[1]), int(parts[2])))
    except OSError:
        pass
    return found


def _free_subid_start(files: tuple[str, ...] = ("/etc/subuid", "/etc/subgid")) -> int:
    """The first id above every range already given out (what useradd would pick next)."""
    end = 100000
    for file in files:
        try:
            with open(file, encoding="utf-8", errors="replace") as f:
                for line in f:
                    parts = line.strip().split(":")
                    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                        end = max(end, int(parts[1]) + int(parts[2]))
        except OSError:
            pass
    return end


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _runtime_dir_check(uid: int) -> Check:
    """Podman keeps its runtime files (and qpod its API socket) in XDG_RUNTIME_DIR; without a login
    session (su -, cron, CI) it is unset and podman falls back to /tmp/podman-run-UID."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    fix = (
        "unset XDG_RUNTIME_DIR (podman then uses /tmp/podman-run-UID), or log in for a session that "
        "creates it (sudo loginctl enable-linger USER)"
    )
    if not xdg:
        return (
            True,
            f"rootless: runtime dir: XDG_RUNTIME_DIR unset (no login session); podman uses /tmp/podman-run-{uid}",
            "",
        )
    try:
        st = os.stat(xdg)
    except OSError as err:
        return (False, f"rootless: runtime dir: XDG_RUNTIME_DIR={xdg}: {err.strerror}", fix)
    if st.st_uid != os.geteuid() or not os.access(xdg, os.W_OK | os.X_OK):
        return (False, f"rootless: runtime dir: XDG_RUNTIME_DIR={xdg} is not yours or not writable", fix)
    return (True, f"rootless: runtime dir: XDG_RUNTIME_DIR={xdg}", "")


def rootless_checks() -> Iterator[Check]:
    """What rootless podman needs: subordinate id ranges, newuidmap/newgidmap, user namespaces, a
    usable runtime dir, and podman answering for this user. Each failure names its fix."""
    name, uid = _user()
    start = _free_subid_start()
    for file, kind in (("/etc/subuid", "uids"), ("/etc/subgid", "gids")):
        ranges = _subid_ranges(file, name, uid)
        total = sum(count for _, count in ranges)
        shown = ", ".join(f"{a}-{a + n - 1}" for a, n in ranges) or "none"
        yield (
            total >= SUBID_MIN,
            f"rootless: subordinate {kind} for {name} in {file}: {shown}",
            f"sudo usermod --add-sub{kind} {start}-{start + SUBID_MIN - 1} {name}",
        )
    for tool in ("newuidmap", "newgidmap"):
        path = find_program(tool) or (f"/usr/bin/{tool}" if os.path.exists(f"/usr/bin/{tool}") else None)
        usable = path is not None and (os.stat(path).st_mode & 0o4000 != 0 or _has_file_caps(path))
        yield (
            usable,
            f"rootless: {tool} installed and privileged ({path or 'not found'})",
            "sudo apt-get install uidmap",
        )
    max_ns = _read_int("/proc/sys/user/max_user_namespaces")
    clone = _read_int("/proc/sys/kernel/unprivileged_userns_clone")  # Debian kernels before 5.10 had it
    apparmor = _read_int("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")  # Ubuntu 23.10+
    ns_ok = (max_ns is None or max_ns > 0) and clone in (None, 1) and apparmor in (None, 0)
    shown = f"user.max_user_namespaces={max_ns}" + (f", unprivileged_userns_clone={clone}" if clone is not None else "")
    shown += f", apparmor_restrict_unprivileged_userns={apparmor}" if apparmor is not None else ""
    yield (
        ns_ok,
        f"rootless: user namespaces enabled ({shown})",
        "sudo sysctl -w user.max_user_namespaces=28633 kernel.unprivileged_userns_clone=1 (persist in /etc/sysctl.d/)",
    )
    runtime = _runtime_dir_check(uid)
    yield runtime
    if runtime[0]:
        yield _podman_answers_for_user()


def _has_file_caps(path: str) -> bool:
    try:
        return bool(os.getxattr(path, "security.capability"))
    except OSError:
        return False


def _podman_answers_for_user() -> Check:
    """Podman's own resolution of the API socket: it fails here when the checks above could not see why."""
    from qpod_engine.podman import service

    try:
        path = service.ask_podman_socket()
    except QpodError as err:
        return (False, f"rootless: {err}", "fix what podman names (podman info --log-level=debug shows more)")
    return (True, f"rootless: podman works for this user (API socket {path})", "")
