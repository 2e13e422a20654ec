"""Soak: several real users with rootless podman run redirected commands for minutes while their
containers are stopped and removed under them; nothing may be lost.

    sudo .venv/bin/python bench/soak.py [--users 5] [--workers 4] [--minutes 15] [--fault-every 50]
        [--qpod /usr/local/bin/qpod] [--keep-users]

Each user (``qpodsoak0`` ...: made with ``useradd -m``, the busybox test image loaded into its
own storage, a repository bound to it) runs ``--workers`` loops of ``qpod exec sh -c ...``: each
command prints its number to stdout and to stderr and exits with it modulo 7 (one in 20 after a
second's sleep). Every
``--fault-every`` seconds one user's container goes, in turn by ``qpod stop`` and by
``podman rm -f`` (as that user). A command is

- **exact** when its stdout, stderr and status are what it said;
- **ended by a fault** when it ended as a killed process does (143 or 137) with qpod's one line
  saying the container was stopped, and printed nothing else but what it printed before;
- **lost** otherwise (a wrong status, missing or foreign output, 125 "lost the agent", a hang).

At the end each user's ``qpod log`` must hold one record per command it ran, with that status.
Prints the counts; exits 1 when anything was lost. ``qpod`` is the install the users run
(setup.sh's link by default)."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qpod_engine.podman import local_images as images  # noqa: E402

USER_PATH = "/usr/local/bin:/usr/bin:/bin"
# one command in 20 lasts a second, so that faults also hit commands in flight
SCRIPT = 'printf "out-%s\\n" "$1"; printf "err-%s\\n" "$1" >&2; [ $(($1 % 20)) != 0 ] || sleep 1; exit $(($1 % 7))'
FAULT_LINES = ("was stopped by", "outside qpod")
# what runuser itself prints when the command it waits for is killed by a signal
RUNUSER_LINES = ("Killed", "Terminated")


def as_user(name: str, *cmd: str, qpod_dir: str) -> list[str]:
    home = pwd.getpwnam(name).pw_dir
    env = {"HOME": home, "USER": name, "LOGNAME": name, "PATH": f"{qpod_dir}:{USER_PATH}", "LANG": "C.UTF-8"}
    return ["runuser", "-u", name, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()), *cmd]


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.qpod_dir = str(Path(args.qpod).parent)
        self.users = [f"qpodsoak{i}" for i in range(args.users)]
        self.repos: dict[str, Path] = {}
        self.ran: dict[str, Counter[int]] = {u: Counter() for u in self.users}  # status -> commands
        self.outcomes: Counter[str] = Counter()
        self.lost: list[str] = []
        self.faults: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.numbers = itertools.count(1)

    def run(
        self, user: str, *cmd: str, cwd: Path | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            as_user(user, *cmd, qpod_dir=self.qpod_dir),
            cwd=cwd or pwd.getpwnam(user).pw_dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def prepare(self, image_tar: Path, image: str) -> None:
        for user in self.users:
            try:
                pwd.getpwnam(user)
            except KeyError:
                subprocess.run(["useradd", "-m", "-s", "/bin/bash", user], check=True)
            home = Path(pwd.getpwnam(user).pw_dir)
            os.chmod(image_tar.parent, 0o755)
            r = self.run(user, "podman", "load", "-q", "-i", str(image_tar))
            if r.returncode:
                raise SystemExit(f"{user}: podman load failed: {r.stderr}")
            repo = home / "soak-repo"
            if not repo.exists():
                for step in (["mkdir", "-p", str(repo)], ["git", "init", "-q", str(repo)]):
                    self.run(user, *step)
            for step in (["qpod", "env", "add", "soak", "--image", image, "--replace"], ["qpod", "init", "soak"]):
                r = self.run(user, *step, cwd=repo)
                if r.returncode:
                    raise SystemExit(f"{user}: {' '.join(step)} failed: {r.stderr}")
            r = self.run(user, "qpod", "exec", "true", cwd=repo)  # the container made before the clock starts
            if r.returncode:
                raise SystemExit(f"{user}: the first command failed ({r.returncode}): {r.stderr}")
            self.repos[user] = repo

    def worker(self, user: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            n = next(self.numbers)
            try:
                r = self.run(user, "qpod", "exec", "sh", "-c", SCRIPT, "sh", str(n), cwd=self.repos[user], timeout=600)
                rc, out, err = r.returncode, r.stdout, r.stderr
            except subprocess.TimeoutExpired:
                rc, out, err = -1, "", "hung for 600 s"
            exact = (rc, out, err) == (n % 7, f"out-{n}\n", f"err-{n}\n")
            by_fault = (
                rc in (137, 143)
                and out in ("", f"out-{n}\n")
                and any(line in err for line in FAULT_LINES)
                and all(
                    ln in (f"err-{n}", *RUNUSER_LINES) or any(f in ln for f in FAULT_LINES) for ln in err.splitlines()
                )
            )
            with self.lock:
                self.ran[user][rc] += 1
                if exact:
                    self.outcomes["exact"] += 1
                elif by_fault:
                    self.outcomes["ended by a fault"] += 1
                else:
                    self.outcomes["lost"] += 1
                    self.lost.append(f"{user} #{n}: status {rc}, stdout {out!r}, stderr {err!r}")

    def fault(self, deadline: float) -> None:
        for i in itertools.count():
            if time.monotonic() + self.args.fault_every >= deadline:
                return
            time.sleep(self.args.fault_every)
            user = self.users[i % len(self.users)]
            r: subprocess.CompletedProcess[str] | None
            if i % 2 == 0:
                r = self.run(user, "qpod", "stop", "soak", cwd=self.repos[user])
                kind = "qpod stop"
            else:
                ids = self.run(user, "podman", "ps", "-q", "--filter", "label=qpod.env=soak").stdout.split()
                r = self.run(user, "podman", "rm", "-f", "-t", "0", *ids) if ids else None
                kind = "podman rm -f"
            with self.lock:
                self.faults[kind if r is None or r.returncode == 0 else f"{kind} (failed)"] += 1

    def check_logs(self) -> list[str]:
        problems = []
        for user in self.users:
            r = self.run(user, "qpod", "log", "--json", "-n", "1000000", "--env", "soak")
            recs = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
            logged = Counter(rec.get("status") for rec in recs if rec.get("argv", [""])[0] == "sh")
            ran = Counter({k: v for k, v in self.ran[user].items() if k >= 0})
            if logged != ran:
                problems.append(f"{user}: ran {dict(ran)} but the log says {dict(logged)}")
        return problems

    def cleanup(self) -> None:
        for user in self.users:
            self.run(user, "podman", "rm", "-af", "-t", "0", timeout=120)
            subprocess.run(["pkill", "-u", user], capture_output=True)
            time.sleep(1)
            subprocess.run(["pkill", "-9", "-u", user], capture_output=True)
            uid = pwd.getpwnam(user).pw_uid
            subprocess.run(["userdel", "-r", "-f", user], capture_output=True)
            shutil.rmtree(f"/home/{user}", ignore_errors=True)
            shutil.rmtree(f"/run/user/{uid}", ignore_errors=True)
            shutil.rmtree(f"/tmp/podman-run-{uid}", ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=5)
    ap.add_argument("--workers", type=int, default=4, help="parallel command loops per user")
    ap.add_argument("--minutes", type=float, default=15)
    ap.add_argument("--fault-every", type=float, default=50, help="seconds between faults")
    ap.add_argument("--qpod", default=shutil.which("qpod") or "/usr/local/bin/qpod", help="the users' qpod")
    ap.add_argument("--keep-users", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("soak: making users needs root")
    soak = Soak(args)
    work = Path(tempfile.mkdtemp(prefix="qpod-soak-"))
    try:
        image = images.build_busybox_image()
        tar = work / "image.tar"
        subprocess.run(["podman", "save", "-q", "-o", str(tar), image], check=True, env={**os.environ, "QPOD_OFF": "1"})
        os.chmod(tar, 0o644)
        soak.prepare(tar, image)
        start = time.monotonic()
        deadline = start + args.minutes * 60
        threads = [threading.Thread(target=soak.fault, args=(deadline,), daemon=True)]
        threads += [
            threading.Thread(target=soak.worker, args=(u, deadline)) for u in soak.users for _ in range(args.workers)
        ]
        for t in threads:
            t.start()
        for t in threads[1:]:
            t.join()
        elapsed = time.monotonic() - start
        problems = soak.check_logs()
        total = sum(soak.outcomes.values())
        print(f"{args.users} users x {args.workers} loops, {elapsed / 60:.1f} min: {total} commands "
              f"({total / elapsed:.0f}/s)")  # fmt: skip
        print("  " + ", ".join(f"{k} {v}" for k, v in sorted(soak.outcomes.items())))
        print("  faults: " + (", ".join(f"{k} {v}" for k, v in sorted(soak.faults.items())) or "none"))
        for line in soak.lost[:20]:
            print(f"  LOST {line}")
        for line in problems:
            print(f"  LOG {line}")
        print("  nothing lost" if not soak.lost and not problems else "  LOSSES: see above")
        return 1 if soak.lost or problems else 0
    finally:
        if not args.keep_users:
            soak.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
