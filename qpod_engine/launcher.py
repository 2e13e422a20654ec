"""The launcher: runs one command where the routing policy says, indistinguishably from a
native run (cwd, terminal, stdin, separate stdout/stderr, signals, exit status, file owner).

Hot path (warm container): stdlib only — the compiled snapshot (JSON), the cached container
facts, then one ``podman --url SOCKET exec`` against the API service (cheaper than a local
podman start). podman-py is imported only to (re)create a container.

How signals reach the command: the container shares the host pid namespace, and the command
is started through ``sh -c 'echo $$ >"$0"; exec "$@"' FIFO ...``, which reports its (host)
pid on a FIFO in qpod's runtime dir (mounted at /run/qpod) before becoming the command.
The launcher forwards SIGINT/SIGTERM/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2 to that pid (``podman
exec`` without a TTY forwards nothing), and a forked watchdog kills it if the launcher dies.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Sequence

from . import cmdlog, service, snapshot
from . import containers as naming
from .errors import EXIT_QPOD, QpodError
from .policy import Decision, Target, decide

# typing is imported for type checkers only: the launcher's hot path imports this module
# and ``import typing`` costs ~2 ms a command
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# how long a podman that has not started the command may keep the user waiting after a signal
GIVE_UP_SECONDS = 3.0
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def _host_exec(path: str | None, argv: Sequence[str], extra_env: dict[str, str] | None = None) -> int:
    """Become the program on the host, as if qpod were absent (errors as a shell reports them)."""
    env = dict(os.environ)
    if extra_env:
        env.update(extra_env)
    # Python starts with SIGPIPE and SIGXFSZ ignored, and an exec keeps that: give the program
    # the defaults it would have had (else 'yes | head -1' never ends)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    try:
        if path:
            os.execve(path, list(argv), env)
        os.execvpe(argv[0], list(argv), env)
    except FileNotFoundError:
        sys.stderr.write(f"{argv[0]}: command not found\n")
        return 127
    except PermissionError:
        sys.stderr.write(f"{argv[0]}: Permission denied\n")
        return 126
    except OSError as err:
        sys.stderr.write(f"{argv[0]}: {err.strerror}\n")
        return 126
    return 0  # not reached


def pass_env(env: dict[str, Any]) -> dict[str, str]:
    """The variables the command sees in the container: host variables on the passthrough list
    (minus the deny list and qpod's own), then the environment's fixed ``env``."""
    deny = [*env.get("deny", ()), *naming.ALWAYS_DENIED]
    allow = env.get("passthrough", ())
    out = {k: v for k, v in os.environ.items() if name_matches(k, allow) and not name_matches(k, deny)}
    out.update({k: v for k, v in env.get("env", {}).items() if not name_matches(k, naming.ALWAYS_DENIED)})
    return out


def name_matches(name: str, globs: Sequence[str]) -> bool:
    """Variable name against globs; plain names and ``PREFIX*`` without fnmatch (no ``re`` import)."""
    for g in globs:
        if g == name:
            return True
        star = g.find("*")
        if star == len(g) - 1 and "?" not in g and "[" not in g:
            if name.startswith(g[:-1]):
                return True
        elif star >= 0 or "?" in g or "[" in g:
            from fnmatch import fnmatchcase

            if fnmatchcase(name, g):
                return True
    return False


def container_argv(decision: Decision, env: dict[str, Any], facts: dict[str, Any], path: str,
                   argv: Sequence[str], cwd: str, tty: bool, stdin: bool, env_names: Sequence[str],
                   url: str, fifo: str) -> list[str]:
    """The ``podman exec`` command line for one command (remote mode, against the API service:
    the local podman start-up costs ~40 ms more per command)."""
    target = decision.target
    assert target is not None
    root = target.root
    workdir = naming.map_path(cwd, env, root)
    if workdir is None:
        # natively the program would run here; silently using another directory would make
        # its relative arguments name other files
        raise QpodError(f"{cwd}: not visible in the container of environment '{env['name']}' (run it from "
                        f"inside {root} or a mounted directory)", EXIT_QPOD)
    args = [service.podman_binary(), "--url", url, "exec", "--workdir", workdir]
    if stdin:
        args.append("-i")
    if tty:
        args.append("-t")
    if env["run_as"] == "user" and os.geteuid() == 0:
        # rootful: run as the invoking user (through sudo, the user behind it), so that build
        # outputs belong to them; rootless containers use --userns=keep-id instead
        uid, gid = invoking_user()
        if uid != 0:
            args += ["--user", f"{uid}:{gid}"]
    for name in env_names:
        args += ["--env", name]  # value taken from podman's own environment: not visible in ps
    cmd = list(argv)
    if path.startswith("/") and (path == root or path.startswith(root + "/")):
        # a program of the repository: run the container's view of that same file. Only a
        # name relative to the (mapped) cwd, like ./prog, can stay as typed: a bare name found
        # through the host's PATH is not on the container's PATH
        if not cmd or cmd[0].startswith("/") or "/" not in cmd[0]:
            cmd[0:1] = [naming.map_path(path, env, root) or path]
    return [*args, facts["name"], "/bin/sh", "-c", wrapper_script(), fifo, *cmd]


def wrapper_script() -> str:
    """Report the pid on the FIFO named by $0, take the user's umask (podman's is 0022: build
    outputs in a group-shared tree would lose group write), then become the command."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 'echo $$ >"$0"; umask ' + f"{mask:04o}" + '; exec "$@"'


def invoking_user() -> tuple[int, int]:
    """(uid, gid) of the person behind this process: SUDO_UID/SUDO_GID under sudo."""
    try:
        return int(os.environ["SUDO_UID"]), int(os.environ.get("SUDO_GID", os.environ["SUDO_UID"]))
    except (KeyError, ValueError):
        return os.getuid(), os.getgid()


class _PidChannel:
    """A FIFO in the runtime dir (mounted in every container at RUNTIME_IN_CONTAINER) on which
    the wrapper reports the command's pid. The launcher holds a write end too, so that reading
    before the wrapper opens it blocks instead of seeing end-of-file."""

    def __init__(self, mode: int) -> None:
        d = naming.runtime_dir()
        os.makedirs(d, exist_ok=True)
        self.name = f"pid-{os.getpid()}-{time.monotonic_ns()}"
        self.host_path = os.path.join(d, self.name)
        os.mkfifo(self.host_path, 0o600)
        os.chmod(self.host_path, mode)  # mkfifo applies the umask; the writer may be another uid
        self.r = os.open(self.host_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self.w = os.open(self.host_path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)

    @property
    def container_path(self) -> str:
        return f"{naming.RUNTIME_IN_CONTAINER}/{self.name}"

    def read_pid(self, child: int, fwd: _Forwarder) -> int:
        """The pid the wrapper wrote, or 0 when podman ended before the command started. A
        podman that hangs before starting the command (service stuck) is given up on a few
        seconds after the user's Ctrl-C or kill: the shell gets its prompt back."""
        import select

        pidfd = os.pidfd_open(child)
        data = b""
        try:
            while b"\n" not in data:
                ready, _, _ = select.select([self.r, pidfd], [], [], 0.5)
                if not ready:
                    if fwd.pending and time.monotonic() - fwd.first_pending > GIVE_UP_SECONDS:
                        os.kill(child, signal.SIGKILL)
                    continue
                if self.r in ready:
                    try:
                        chunk = os.read(self.r, 64)
                    except BlockingIOError:
                        continue
                    data += chunk
                elif pidfd in ready:
                    try:  # podman is gone; take what the wrapper may have written just before
                        data += os.read(self.r, 64)
                    except BlockingIOError:
                        pass
                    break
        finally:
            os.close(pidfd)
        text = data.strip().decode(errors="replace")
        return int(text) if text.isdigit() else 0

    def close(self) -> None:
        for fd in (self.r, self.w):
            os.close(fd)
        try:
            os.unlink(self.host_path)
        except OSError:
            pass


class _Forwarder:
    """Collects signals until the command's pid is known, then delivers them to it."""

    def __init__(self) -> None:
        self.pid = 0
        self.pending: list[int] = []
        self.first_pending = 0.0  # monotonic time of the first signal held back
        self.last: int | None = None
        self._old: dict[int, Any] = {}

    def install(self, job_control: bool) -> None:
        """``job_control``: Ctrl-Z suspends the command too (without a TTY; with one, the
        terminal is raw and Ctrl-Z goes to the container's own terminal)."""
        for sig in FORWARDED:
            self._old[sig] = signal.signal(sig, self._handle)
        if job_control:
            self._old[signal.SIGTSTP] = signal.signal(signal.SIGTSTP, self._suspend)

    def _suspend(self, _sig: int, _frame: Any) -> None:
        """Stop the command, then this launcher (so the shell sees the job stopped); when the
        shell continues the job (fg, bg), continue the command."""
        if self.pid:
            self._send(signal.SIGSTOP)
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)
        # resumed here by SIGCONT
        signal.signal(signal.SIGTSTP, self._suspend)
        if self.pid:
            self._send(signal.SIGCONT)

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, sig: int, _frame: Any) -> None:
        self.last = sig
        if self.pid:
            self._send(sig)
        else:
            self.first_pending = self.first_pending or time.monotonic()
            self.pending.append(sig)

    def _send(self, sig: int) -> None:
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def started(self, pid: int) -> None:
        self.pid = pid
        for sig in self.pending:
            self._send(sig)
        self.pending.clear()


def _watchdog(pid: int, pid_start: str | None) -> int:
    """Fork a process that kills ``pid`` if the launcher dies without saying it is done.
    Returns the write end the launcher closes (after writing b"x") when it finishes normally."""
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked watchdog
        try:
            os.setsid()
            for sig in FORWARDED:
                signal.signal(sig, signal.SIG_IGN)
            os.closerange(0, r)
            os.closerange(r + 1, 1 << 16)
            done = os.read(r, 1)
            if not done and naming.proc_start_time(pid) == pid_start:
                os.kill(pid, signal.SIGTERM)
                for _ in range(50):
                    if naming.proc_start_time(pid) != pid_start:
                        break
                    time.sleep(0.1)
                else:
                    os.kill(pid, signal.SIGKILL)
        finally:
            os._exit(0)
    os.close(r)
    return w


def _terminal_state() -> tuple[bool, bool, bool]:
    """(tty, read_stdin, foreground) for this launch.

    tty: stdin and stdout are terminals and this is the terminal's foreground job (a background
    job must not put the terminal in raw mode: it would stop on SIGTTOU);
    read_stdin: False for a background job whose stdin is the terminal (SIGTTIN), natively the
    job would stop only if it read, here podman would read at once;
    foreground: podman must stay in the launcher's process group to read the terminal."""
    if not os.isatty(0):
        return False, True, False
    try:
        fg = os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        fg = False
    return fg and os.isatty(1), fg, fg


def run_in_container(decision: Decision, env: dict[str, Any], facts: dict[str, Any], path: str,
                     argv: Sequence[str], cwd: str, settings: dict[str, Any],
                     fwd: _Forwarder) -> tuple[int, int | None]:
    """Run the command; returns (exit status, signal to re-raise or None). ``fwd`` is installed
    by the caller and stays installed until the log record is written."""
    tty, stdin_ok, foreground = _terminal_state()
    url = service.ensure_service(settings.get("service_idle_seconds", 3600))
    values = pass_env(env)
    podman_env = service.podman_env(values)
    # the command may run as another uid (rootful --user): it must be able to write the FIFO
    channel = _PidChannel(0o622 if os.geteuid() == 0 else 0o600)
    args = container_argv(decision, env, facts, path, argv, cwd, tty, stdin_ok, sorted(values), url,
                          channel.container_path)
    actions = [] if stdin_ok else [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)]
    # Unless podman must read the terminal, it goes in its own process group: a terminal's
    # Ctrl-C then reaches only the launcher, which forwards it (podman would die of it and lose
    # the status). Python ignores SIGPIPE/SIGXFSZ; podman gets the defaults back.
    spawn_kw: dict[str, Any] = {"setsigdef": (signal.SIGPIPE, signal.SIGXFSZ)}
    if not foreground:
        spawn_kw["setpgroup"] = 0
    try:
        child = os.posix_spawn(args[0], args, podman_env, file_actions=actions, **spawn_kw)
    except OSError as err:
        channel.close()
        raise QpodError(f"cannot run podman: {err.strerror}", EXIT_QPOD) from None
    try:
        cpid = channel.read_pid(child, fwd)
    finally:
        channel.close()
    watch = None
    cpid_start = naming.proc_start_time(cpid) if cpid else None
    if cpid:
        fwd.started(cpid)
        watch = _watchdog(cpid, cpid_start)
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
    podman_died = False
    if cpid and cpid_start and naming.proc_start_time(cpid) == cpid_start:
        # podman returned but the command still runs: podman itself was killed (a terminal's
        # Ctrl-C reaches it too). Wait for the command before giving the prompt back.
        podman_died = True
        while naming.proc_start_time(cpid) == cpid_start:
            time.sleep(0.05)
    if watch is not None:
        os.write(watch, b"x")
        os.close(watch)
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        code = 128 - code
    if podman_died and fwd.last is not None:
        code = 128 + fwd.last
    if not cpid and fwd.pending:
        code = 128 + fwd.pending[-1]  # interrupted before the command started
    elif not cpid and code != 0:
        code = code if code in (126, 127) else EXIT_QPOD
    resignal = None
    if fwd.last is not None and code == 128 + fwd.last:
        resignal = fwd.last
    elif tty and code == 128 + signal.SIGINT:
        resignal = signal.SIGINT
    return code, resignal


def _resolve(path: str, argv: Sequence[str], cwd: str, explicit: bool,
             env_name: str | None) -> tuple[dict[str, Any], Decision]:
    snap = snapshot.load()
    targets = snapshot.targets(snap, near=(path, cwd))
    if env_name:
        if env_name not in snap["envs"]:
            from .config import unknown_environment_message

            raise QpodError(unknown_environment_message(env_name), EXIT_QPOD)
        here = next((t for t in sorted(targets, key=lambda t: -len(t.root))
                     if cwd == t.root or cwd.startswith(t.root + "/")), None)
        if here:
            root = here.root
        else:
            from .gitinfo import discover_root

            root = discover_root(cwd)
        env = snap["envs"][env_name]
        t = Target(root, env_name, tuple(env.get("commands", ())), "--env on the command line")
        return snap, Decision("container", f"qpod exec --env {env_name}", t)
    return snap, decide(path, argv, cwd, targets, explicit=explicit)


def environment_of(snap: dict[str, Any], name: str) -> dict[str, Any]:
    env = snap["envs"].get(name)
    if env is None:
        from .config import unknown_environment_message

        raise QpodError(unknown_environment_message(name), EXIT_QPOD)
    if "error" in env:
        raise QpodError(env["error"], EXIT_QPOD)
    return env


def ensure_facts(snap: dict[str, Any], env: dict[str, Any], root: str) -> dict[str, Any]:
    """Facts of the running warm container; podman-py is asked only when the cache is stale."""
    name, want = snapshot.container_of(snap, env, root)
    facts = naming.warm_facts(name, want, root)
    if facts is None:
        from .podman_backend import ensure_container

        facts = ensure_container(env, root, snap["settings"]).__dict__
    return facts


def launch(path: str, argv: Sequence[str], cwd: str, explicit: bool = False, env_name: str | None = None,
           shim: bool = False) -> int:
    """Run one command where the policy says. Returns its exit status (or does not return: a
    host command replaces this process)."""
    t0 = time.time()
    snap, decision = _resolve(path, argv, cwd, explicit, env_name)
    if not decision.in_container:
        if shim:
            # the library must not send this launch (or its children under the same root) back
            # here: name the root it matched, by its own rule (program's root, else cwd's root)
            from .policy import redirected_root

            root = redirected_root(path, cwd, [repo["root"] for repo in snap["repos"]])
            return _host_exec(path, argv, {"QPOD_HOST_ROOT": root} if root else None)
        return _host_exec(None, argv)
    target = decision.target
    assert target is not None and target.environment is not None
    env = environment_of(snap, target.environment)
    facts = ensure_facts(snap, env, target.root)
    settings = snap["settings"]
    fwd = _Forwarder()
    fwd.install(job_control=not _terminal_state()[0])
    try:
        code, resignal = run_in_container(decision, env, facts, path, argv, cwd, settings, fwd)
        _log(t0, decision, env, facts, path, argv, cwd, code, settings)
    finally:
        fwd.restore()  # only now: a signal while the record is written must not lose it
    if resignal is not None:
        _reraise(resignal)
    return code


def _log(t0: float, decision: Decision, env: dict[str, Any], facts: dict[str, Any], path: str,
         argv: Sequence[str], cwd: str, code: int, settings: dict[str, Any]) -> None:
    target = decision.target
    assert target is not None
    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t0)) + f".{int(t0 % 1 * 1000):03d}+00:00",
        "repo": target.root, "branch": target.branch, "env": env["name"], "container": facts["name"],
        "cwd": cwd, "argv": list(argv), "path": path, "reason": decision.reason, "status": code,
        "duration": round(time.time() - t0, 3),
    }
    try:
        cmdlog.append(record, settings["log_max_bytes"], settings["log_keep"])
    except OSError as err:
        sys.stderr.write(f"qpod: cannot write the command log: {err.strerror}\n")


def _reraise(sig: int) -> None:
    """Die of the same signal, so the shell sees what it would see natively."""
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)


def cwd_or_pwd() -> str:
    """The working directory as the user sees it ($PWD when it names the same directory)."""
    cwd = os.getcwd()
    pwd = os.environ.get("PWD")
    if pwd and pwd != cwd:
        try:
            if os.path.samefile(pwd, cwd):
                return os.path.normpath(pwd)
        except OSError:
            pass
    return cwd


def shim_main(args: Sequence[str]) -> int:
    """Entry from the preload library: ``--shim PATH CWD -- ARGV...``."""
    try:
        if len(args) < 4 or args[0] != "--shim" or args[3] != "--":
            raise QpodError("launcher: expected --shim PATH CWD -- ARGV...", EXIT_QPOD)
        path, cwd, argv = args[1], args[2], list(args[4:]) or [args[1]]
        return launch(path, argv, cwd, shim=True)
    except QpodError as err:
        sys.stderr.write(f"qpod: {err}\n")
        return EXIT_QPOD
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # noqa: BLE001 - a redirected command fails in one line, never a traceback
        from .errors import unexpected

        sys.stderr.write(f"qpod: {unexpected(err)}\n")
        return EXIT_QPOD
