"""A "remote" build host for the tests and the bench: this machine through a real sshd on
127.0.0.1 (Debian's openssh-server) with throwaway host and user keys, a known_hosts file and
a podman API service of its own, registered as a podman system connection in a containers.conf
of its own. Nothing of root's ssh or podman configuration is touched: the caller points HOME
and CONTAINERS_CONF at ``env()``.

The two sides share this machine's podman storage, so a test could not tell a container made
there from one made here: every container the host's own service makes has ``MARKER`` (a file
naming the host, mounted by that service's containers.conf), and no container made here has it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from conftest import wait_until

SSHD = "/usr/sbin/sshd"
MARKER = "/run/qpod-test-host/name"  # in the containers of a host's own service: the host's name


def available() -> str | None:
    """Why this cannot run here, or None."""
    if not os.path.exists(SSHD) or shutil.which("ssh") is None:
        return "openssh-server is not installed (scripts/setup.sh --test installs it)"
    if os.geteuid() != 0:
        return "sshd for the remote-host tests is started as root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SshHost:
    def __init__(self, work: Path, name: str = "b1", hide: str | None = None, podman_socket: str | None = None) -> None:
        """``hide``: a directory this sshd's sessions see empty (a tmpfs over it in a mount
        namespace of its own): a tree the "remote" host does not share. ``podman_socket``: use
        that API socket (another SshHost's) instead of starting a service."""
        self.work, self.name = work, name
        work.mkdir(parents=True, exist_ok=True)
        self.home = work / "home"
        (self.home / ".ssh").mkdir(parents=True, exist_ok=True, mode=0o700)
        for key in ("hostkey", "id"):
            if not (work / key).exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / key)], check=True)
        shutil.copy(work / "id.pub", work / "authorized_keys")
        os.chmod(work / "authorized_keys", 0o600)
        self.port = _free_port()
        self.log = work / "sshd.log"
        (work / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {work / 'hostkey'}\n"
            f"AuthorizedKeysFile {work / 'authorized_keys'} .ssh/authorized_keys\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\nStrictModes no\n"
            f"PidFile {work / 'sshd.pid'}\nLogLevel VERBOSE\n"
        )
        hostkey = (work / "hostkey.pub").read_text().split()[:2]
        (self.home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {' '.join(hostkey)}\n")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        self.service: subprocess.Popen[bytes] | None = None
        self.socket = podman_socket or str(work / "podman.sock")
        if podman_socket is None:
            # this service's containers (and only those) see the host's name at MARKER
            side = work / "side"
            side.mkdir(exist_ok=True)
            (side / "name").write_text(f"{name}\n")
            service_conf = work / "service-containers.conf"
            service_conf.write_text(f'[containers]\nvolumes = ["{side}:{os.path.dirname(MARKER)}:ro"]\n')
            env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "CONTAINERS_CONF")}
            self.service = subprocess.Popen(
                ["podman", "system", "service", "--time=0", f"unix://{self.socket}"],
                env={**env, "QPOD_OFF": "1", "CONTAINERS_CONF": str(service_conf)},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            wait_until(lambda: os.path.exists(self.socket), "podman service")
        sshd = [SSHD, "-D", "-f", str(work / "sshd_config"), "-E", str(self.log)]
        if hide:
            sshd = [
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                'mount -t tmpfs qpod-hidden "$0" && exec "$@"',
                hide,
                *sshd,
            ]
        self.sshd = subprocess.Popen(sshd, start_new_session=True)
        wait_until(self._listening, "sshd")
        self.conf = work / "containers.conf"
        self.conf.write_text(
            f"[engine]\n[engine.service_destinations]\n  [engine.service_destinations.{name}]\n"
            f'    uri = "ssh://root@127.0.0.1:{self.port}{self.socket}"\n'
            f'    identity = "{work / "id"}"\n'
        )

    def add_connection(self, other: SshHost) -> None:
        """Make ``other``'s connection known in this one's containers.conf (and known_hosts)."""
        with open(self.conf, "a") as f:
            f.write(
                f"  [engine.service_destinations.{other.name}]\n"
                f'    uri = "ssh://root@127.0.0.1:{other.port}{other.socket}"\n'
                f'    identity = "{other.work / "id"}"\n'
            )
        with open(self.home / ".ssh" / "known_hosts", "a") as f:
            f.write((other.home / ".ssh" / "known_hosts").read_text())

    def _listening(self) -> bool:
        if self.sshd.poll() is not None:
            raise AssertionError(f"sshd exited with {self.sshd.returncode}: {self.log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def env(self) -> dict[str, str]:
        return {"HOME": str(self.home), "CONTAINERS_CONF": str(self.conf)}

    def session_pids(self) -> list[int]:
        """The sshd processes serving connections now: the listener's children (each in a
        session of its own)."""
        out = subprocess.run(["pgrep", "-P", str(self.sshd.pid)], capture_output=True, text=True).stdout.split()
        return [int(p) for p in out]

    def drop_connections(self) -> None:
        """What a network failure does to every open connection: they end, unannounced."""
        for pid in self.session_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        self.drop_connections()
        for proc in (self.sshd, self.service):
            if proc is None:
                continue
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the listener and its sessions
            except ProcessLookupError:
                pass
            proc.wait(timeout=30)
