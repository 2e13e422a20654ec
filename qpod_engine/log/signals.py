"""Signals to a running command, by its command-log record.

A start record carries ``pid``: the host pid of the qpod client that runs the command. The
client forwards the signals it receives to the command in its container (the local agent, or the
bridge on another host), so signalling the client reaches the command wherever it runs. Two
rules of the client (preload/client/term.c) decide what reaches what:

- a signal that comes from ``kill(2)`` (si_code SI_USER, SI_QUEUE or SI_TKILL) goes to the
  command's own process only, as ``kill PID`` would (TERM and HUP excepted: the whole group);
  any other (the terminal's Ctrl-C) goes to the command's process group. The dashboard sends on
  the user's behalf what Ctrl-C would: a siginfo whose si_code is not one of kill's
  (``pidfd_send_signal`` may carry any negative code but SI_TKILL to another process), so the
  command's whole group gets it, locally and over ssh alike;
- SIGKILL cannot be caught: the client dies, and its agent kills the command's group when the
  connection closes. The client's end record cannot come then, so it is written here (status
  137, ``ended`` saying who sent the SIGKILL), and the command ends as its record, not as ``lost``.

The pid is checked before anything is sent: a pidfd is opened first (it stays bound to that one
process, so a pid recycled after the checks cannot be hit), then the process must be a qpod
client (its executable, or its name for a client run in place in a shell's fork child), started
no later than the record (not a newer process that reused the
pid), not a zombie, and running the record's argv (its command line ends with it).
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal as _signal
import time
from typing import Any

from qpod_engine.base import paths
from qpod_engine.base.errors import QpodError
from qpod_engine.log import cmdlog

# what the dashboard's picker offers, first the default (Enter): Ctrl-C's signal
SIGNALS: tuple[str, ...] = ("INT", "TERM", "KILL", "HUP", "USR1", "USR2")

CLIENT_EXE = "qpod-client"  # the installed ``qpod`` is a link to it
_SI_MESGQ = -3  # a code kill(2) never gives: the client takes the signal for the terminal's
_NR_PIDFD_SEND_SIGNAL = 424  # the same number on every architecture (new syscalls are shared)
START_SLACK = 5.0  # seconds: btime is whole seconds and clocks are adjusted (as cmdlog.pid_alive)
KILL_WAIT = 10.0  # seconds a SIGKILLed client may take to be gone (a loaded machine)


def signal_number(name: str) -> int:
    """``INT`` -> 2. QpodError for a name not in SIGNALS."""
    if name not in SIGNALS:
        raise QpodError(f"unknown signal {name!r}: one of {', '.join(SIGNALS)}")
    return int(getattr(_signal, "SIG" + name))


def signal_name(status: object) -> str | None:
    """The signal a status past 128 says the command died of (``130`` -> ``SIGINT``), else None."""
    if not isinstance(status, int) or isinstance(status, bool) or not 128 < status < 128 + 65:
        return None
    try:
        return _signal.Signals(status - 128).name
    except ValueError:
        return None


def _proc_fields(pid: int) -> tuple[bytes, list[bytes]]:
    """The process's name (comm) and the fields of /proc/PID/stat after it."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    # the name may hold spaces and ')'
    return data[data.index(b"(") + 1 : data.rindex(b")")], data[data.rindex(b")") + 2 :].split()


def _started_at(fields: list[bytes]) -> float | None:
    boot = cmdlog._btime()
    return None if boot is None else boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _ignored(pid: int, signum: int) -> bool:
    """Whether process ``pid`` ignores ``signum`` (a command started in the background of a
    script ignores SIGINT: its client does not forward what it ignores)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("SigIgn:"):
                    return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except (OSError, ValueError):
        pass
    return False


def check_client(rec: dict[str, Any], pid: int) -> str | None:
    """Why process ``pid`` is not the client of the running command ``rec`` (None: it is)."""
    try:
        comm, fields = _proc_fields(pid)
        exe = os.readlink(f"/proc/{pid}/exe")
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = [a.decode("utf-8", "surrogateescape") for a in f.read().split(b"\0")[:-1]]
    except FileNotFoundError:
        return "it has ended"
    except (OSError, ValueError, IndexError) as err:
        return f"its process cannot be read ({err})"
    if fields[0] in (b"Z", b"X"):
        return "it has ended"
    # a shell's fork child runs the client in place (preload/README.md): its executable and
    # command line stay the shell's, its name is the client's
    is_client = os.path.basename(exe.removesuffix(" (deleted)")) == CLIENT_EXE
    in_place = not is_client and comm == CLIENT_EXE.encode()
    if not is_client and not in_place:
        return f"process {pid} is no longer its qpod client (it runs {exe})"
    when = cmdlog.record_epoch(rec)
    started = _started_at(fields)
    if when is not None and started is not None and started > when + START_SLACK:
        return f"process {pid} started after the command: another program took its pid"
    argv = [str(a) for a in rec.get("argv") or []]
    if argv and cmdline[-len(argv) :] != argv and not in_place:
        return f"process {pid} runs another command"
    return None


def _send(pidfd: int, signum: int) -> bool:
    """Send ``signum`` through ``pidfd`` as the terminal would (not as kill(2)): True, or False
    when this kernel refused the siginfo (then it is sent as kill(2) would)."""
    buf = (ctypes.c_int * 32)()  # a siginfo_t: 128 bytes
    buf[0], buf[1], buf[2] = signum, 0, _SI_MESGQ
    at = 4 if ctypes.sizeof(ctypes.c_void_p) == 8 else 3  # the union after si_code, aligned
    buf[at], buf[at + 1] = os.getpid(), os.getuid()  # si_pid, si_uid
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(_NR_PIDFD_SEND_SIGNAL, pidfd, signum, ctypes.byref(buf), 0) == 0:
        return True
    err = ctypes.get_errno()
    if err == 3:  # ESRCH: it ended meanwhile
        raise ProcessLookupError(err, os.strerror(err))
    _signal.pidfd_send_signal(pidfd, signum)
    return False


def send(rec: dict[str, Any], name: str, by: str = "qpod tui", log: str | None = None) -> str:
    """Send signal ``name`` (one of SIGNALS) to the running command of start record ``rec``
    (its process group in its container). Returns what was done, in one line. QpodError when
    the record is not a running command of this machine or the signal cannot be sent."""
    signum = signal_number(name)
    what = " ".join(str(a) for a in rec.get("argv") or []) or "the command"
    pid = rec.get("pid")
    if not cmdlog.is_start(rec) or not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise QpodError(f"{what}: not a running command (its record has no client pid)")
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        raise QpodError(f"{what}: it has ended") from None
    except OSError as err:
        raise QpodError(f"{what}: cannot reach its client (pid {pid}): {err.strerror or err}") from None
    try:
        why = check_client(rec, pid)  # after the pidfd is open: the pid cannot be recycled now
        if why is not None:
            raise QpodError(f"{what}: {why}; nothing was sent")
        if signum != _signal.SIGKILL and _ignored(pid, signum):
            raise QpodError(
                f"{what}: it ignores SIG{name} (started in the background of a script?); TERM or KILL end it"
            )
        try:
            as_terminal = _send(pidfd, signum)
        except ProcessLookupError:
            raise QpodError(f"{what}: it has ended") from None
        except OSError as err:
            raise QpodError(f"{what}: cannot send SIG{name} to its client (pid {pid}): {err.strerror or err}") from None
        if signum == _signal.SIGKILL:
            return _killed(rec, pidfd, by, what, log)
    finally:
        os.close(pidfd)
    where = "its process group" if as_terminal or name in ("TERM", "HUP") else "its main process"
    return f"sent SIG{name} to {what} ({where} in container {rec.get('container') or '?'})"


def _killed(rec: dict[str, Any], pidfd: int, by: str, what: str, log: str | None) -> str:
    """The client was sent SIGKILL: once it is gone, its end record (it can no longer write one)."""
    readable, _, _ = select.select([pidfd], [], [], KILL_WAIT)
    if not readable:
        return f"sent SIGKILL to the client of {what}; it has not ended yet"
    if not _ended_in_log(str(rec.get("id")), log):
        end = {k: v for k, v in rec.items() if k not in ("status", "state", "started")}  # (shown-only keys)
        # read after "its container" by `qpod log`, as the client's own notes ("was stopped by ...")
        end["ended"] = f"killed the command's process group: its client got SIGKILL from {by}"
        end["status"] = 128 + int(_signal.SIGKILL)
        started = cmdlog.record_epoch(rec)
        end["duration"] = round(max(0.0, time.time() - started), 3) if started is not None else 0.0
        try:
            cmdlog.append(end, log=log)
        except OSError as err:
            raise QpodError(f"{what} was killed; its record could not be written: {err}") from None
    return f"killed {what} (SIGKILL: its client, then its process group in container {rec.get('container') or '?'})"


def _ended_in_log(rid: str, log: str | None) -> bool:
    """Whether the current log file holds a complete record of command ``rid`` (the client may
    have written it just before the kill)."""
    needle = json.dumps(rid).encode()
    try:
        with open(log or paths.log_file(), "rb") as f:
            data = f.read()
    except OSError:
        return False
    at = data.find(needle)
    while at >= 0:
        start = data.rfind(b"\n", 0, at) + 1
        end = data.find(b"\n", at)
        rec = cmdlog.parse_line(data[start : end if end >= 0 else len(data)])
        if rec is not None and rec.get("id") == rid and not cmdlog.is_start(rec):
            return True
        at = data.find(needle, at + 1)
    return False
