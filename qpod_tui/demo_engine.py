"""A deterministic, in-memory engine: snapshot tests, the screenshot script and the benchmark's
container list use it. Same interface as ``qpod_engine.api.Engine``; the command log is a real
file (written once into ``state_dir``) so the log view runs its real reading code.
"""

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

from qpod_engine.api import (
    ContainerInfo,
    ContainerRow,
    Engine,
    Environment,
    EnvRow,
    FieldError,
    LogIndex,
    QpodError,
    RepoRow,
    Stats,
)

NOW = 1_764_000_000.0  # a fixed "now" so uptimes do not change between runs
# the hard states (DemoEngine(trouble=True))
BROKEN_ENV = "mmsx-2019.2-broken"
BROKEN_ENV_ERROR = f"environments/{BROKEN_ENV}.yaml:7: 'mounts' must be a list of HOST:CONTAINER[:ro], got a mapping"
WAITING = ".qpod.yaml changed since it was allowed (commit 3f2a91c): qpod allow, or qpod deny"
REPO_FILE_SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
HOME = "/home/dev/src"
COMMANDS = (
    ["make", "-j8"],
    ["make", "test"],
    ["gdb", "-batch", "-ex", "run", "./mmsx"],
    ["waf", "build"],
    ["make", "install", "DESTDIR=/tmp/stage"],
    ["./build/tools/gen-tables", "--check"],
)
STATUSES = (0, 0, 0, 2, 0, 1, 0, 130)


def demo_envs(count: int = 4) -> dict[str, Environment]:
    names = ["mmsx-2018.3-centos7", "mmsx-2021.1-debian10", "mmsx-2023.2-debian11", "tools-busybox"]
    names += [f"legacy-{i:02d}" for i in range(max(0, count - len(names)))]
    envs = {}
    for i, name in enumerate(names[:count]):
        image = [
            "registry.example.com/build/centos:7",
            "docker.io/library/debian:10",
            "localhost/qpod-debian11:latest",
            "localhost/qpod-busybox:latest",
        ][i % 4]
        envs[name] = Environment(
            name=name,
            image=image,
            mounts=["/opt/toolchains:/opt/toolchains:ro"] if i % 2 == 0 else [],
            env={"CC": "gcc"} if i % 3 == 0 else {},
            cap_add=["SYS_PTRACE"] if i == 0 else [],
        )
    return envs


def demo_repos(count: int, envs: list[str]) -> dict[str, tuple[str | None, dict[str, str]]]:
    names = ["mmsx-2018.3", "mmsx-2021.1", "mmsx-main", "gen-tables"]
    names += [f"product-{i:03d}" for i in range(max(0, count - len(names)))]
    out: dict[str, tuple[str | None, dict[str, str]]] = {}
    for i, name in enumerate(names[:count]):
        rules = {"release/2018.*": envs[0]} if i % 5 == 2 else {}
        out[f"{HOME}/{name}"] = (envs[i % len(envs)], rules)
    return out


def write_demo_log(path: str, count: int, repos: list[str], envs: list[str]) -> None:
    """``count`` plausible records, oldest first, one per 37 seconds before NOW."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(count):
            t = NOW - (count - i) * 37
            repo, env = repos[i % len(repos)], envs[i % len(envs)]
            argv = COMMANDS[i % len(COMMANDS)]
            stamp = _utc(t)
            rec = {
                "time": stamp,
                "repo": repo,
                "branch": "main",
                "env": env,
                "container": f"qpod-{env}-{os.path.basename(repo)}-0000abcd",
                "cwd": f"{repo}/build",
                "argv": argv,
                "path": f"/usr/bin/{argv[0]}",
                "reason": f"'{argv[0]}' is a command of environment '{env}'",
                "status": STATUSES[i % len(STATUSES)],
                "duration": round(0.05 + (i * 7 % 900) / 10, 3),
            }
            f.write(json.dumps(rec, separators=(",", ":")) + "\n")


def write_running(path: str, count: int, ctrs: Sequence[ContainerRow]) -> None:
    """Start records of ``count`` commands still running (started 7 s to 12 min before NOW)."""
    running = [c for c in ctrs if c.state == "running"]
    argvs = (["make", "-j8", "all"], ["gdb", "-batch", "-ex", "run", "./mmsx"], ["waf", "build", "--jobs=4"])
    with open(path, "a", encoding="utf-8") as f:
        for i in range(count):
            c = running[i % len(running)]
            argv = argvs[i % len(argvs)]
            rec = {
                "id": f"demo{i:04x}",
                "time": _utc(NOW - [734, 95, 7][i % 3]),
                "repo": c.repository,
                "branch": "main",
                "env": c.environment,
                "container": c.name,
                "cwd": c.repository,
                "argv": argv,
                "path": f"/usr/bin/{argv[0]}",
                "reason": f"'{argv[0]}' is a command of environment '{c.environment}'",
                "pid": 1,
                "status": None,
            }
            f.write(json.dumps(rec, separators=(",", ":")) + "\n")


def _utc(t: float) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".000+00:00"


class DemoEngine(Engine):
    """Fixed repositories, environments and containers; a real log file in ``state_dir``."""

    def __init__(
        self,
        state_dir: str,
        repos: int = 12,
        envs: int = 4,
        containers: int = 6,
        records: int = 60,
        podman: bool = True,
        running: int = 0,
        trouble: bool = False,
    ) -> None:
        """``trouble``: the hard states too (screenshots and snapshots of them): an environment
        file qpod cannot parse and a repository bound to it, a repository whose .qpod.yaml
        waits for an allow, an image that cannot be pulled."""
        self.state_dir = state_dir
        self.trouble = trouble
        self.envs = demo_envs(envs)
        env_names = list(self.envs)
        self.repos = demo_repos(repos, env_names)
        self.podman = podman
        # not ``images``: that is Engine.images(), the images view's rows
        self.present_images = {e.image for e in self.envs.values() if e.image.startswith("localhost/")}
        self.ctrs = []
        for i, root in enumerate(list(self.repos)[:containers]):
            env = self.repos[root][0] or env_names[0]
            state = "running" if i % 3 != 2 else "exited"
            self.ctrs.append(
                ContainerInfo(
                    name=f"qpod-{env}-{os.path.basename(root)}-{i:08x}",
                    id=f"{i:012x}",
                    environment=env,
                    repository=root,
                    image=self.envs[env].image,
                    state=state,
                    started=NOW - 3600 * (i + 1) - 60 * i if state == "running" else None,
                    outdated=i == 3,
                )
            )
        self.calls: list[tuple[str, ...]] = []  # what the UI asked for, for tests
        broken_repo = f"{HOME}/product-000"
        if trouble and broken_repo in self.repos:
            self.repos[broken_repo] = (BROKEN_ENV, {})  # (its container was made before the file broke)
        self.theme: str | None = None
        if records:
            write_demo_log(self.log_path(), records, list(self.repos), env_names)
        if running:
            write_running(self.log_path(), running, self.ctrs)

    def now(self) -> float:
        return NOW

    def keymap(self) -> dict[str, str]:
        return {}

    def tui_theme(self) -> str | None:
        return self.theme

    def save_tui_theme(self, name: str) -> None:
        self.theme = name  # never the user's state dir

    def config_dir(self) -> str:
        return os.path.join(self.state_dir, "config")

    def default_bind_path(self) -> str:
        return f"{HOME}/"

    def complete_path(self, text: str, limit: int = 50) -> list[str]:
        return [r + "/" for r in self.repos if r.startswith(text)][:limit]

    def _need_podman(self) -> None:
        if not self.podman:
            raise QpodError("podman: cannot connect to the API socket /run/podman/podman.sock", 125)

    def container_states(self) -> dict[str, str]:
        self._need_podman()
        return {c.name: c.state for c in self.ctrs}

    def activation(self) -> str:
        return "on: new terminals (bash, zsh), desktop session"

    def repositories(self, states: dict[str, str] | None = None) -> list[RepoRow]:
        rows = []
        by_repo = {c.repository: c for c in self.ctrs}
        for root, (env, rules) in self.repos.items():
            c = by_repo.get(root)
            state = (c.state if c else "none") if states is not None else "unknown"
            missing = root.endswith("-003")
            rows.append(
                RepoRow(
                    root,
                    not missing,
                    None if missing else "main",
                    env,
                    "repository binding" if not missing else "repository path is missing (moved or deleted?)",
                    env,
                    dict(rules),
                    c.name if c else None,
                    state,
                    waiting=WAITING if self.trouble and root.endswith("/gen-tables") else None,
                    broken=BROKEN_ENV_ERROR if self.trouble and root.endswith("-000") else None,
                )
            )
        return rows

    def waiting_files(self) -> dict[str, str]:
        return {f"{HOME}/gen-tables": WAITING} if self.trouble else {}

    def repo_file_changes(self, root: str) -> list[str]:
        if not self.trouble:
            return []
        return [
            "changed since the version allowed 2026-11-20T09:12:44+0000 (sha256 3f0c9a7d51e2b804):",
            "@@ -1,3 +1,4 @@",
            " image: registry.example.com/build/gen-tables-toolchain:2024.11-with-a-rather-long-tag",
            "+mounts: [/opt/toolchains/gen-tables-2024.11/x86_64-linux-gnu:/opt/toolchain]",
            " commands: [make, cmake, ninja, ./build/tools/gen-tables]",
        ]

    def repo_file_summary(self, root: str) -> tuple[str, list[str], list[str]]:
        if not self.trouble:
            raise QpodError(f"{root}: no .qpod.yaml at the repository's root")
        info = [
            "image: registry.example.com/build/gen-tables-toolchain:2024.11-with-a-rather-long-tag",
            "commands: make cmake ninja ./build/tools/gen-tables",
            "env: GEN_TABLES_STRICT=1",
        ]
        risky = [
            "mounts: /opt/toolchains/gen-tables-2024.11/x86_64-linux-gnu:/opt/toolchain (outside the repository)",
            "cap_add: SYS_PTRACE",
        ]
        return REPO_FILE_SHA, risky, info

    def bind(self, path: str, env: str, branch: str | None = None, directory: bool = False) -> str:
        if env not in self.envs:
            raise FieldError("environment", f"unknown environment '{env}'")
        root = path.rstrip("/")
        if not root.startswith("/"):
            raise FieldError("path", f"{path}: not inside a git repository")
        self.calls.append(("bind", root, env, branch or ""))
        self.repos[root] = (env, {branch: env} if branch else {})
        return root

    def set_environment(self, root: str, env: str) -> None:
        self.calls.append(("set_environment", root, env))
        self.repos[root] = (env, self.repos[root][1])

    def add_branch_rule(self, root: str, glob: str, env: str) -> None:
        self.calls.append(("add_branch_rule", root, glob, env))
        self.repos[root][1][glob] = env

    def remove_branch_rule(self, root: str, glob: str) -> None:
        self.calls.append(("remove_branch_rule", root, glob))
        del self.repos[root][1][glob]

    def unbind(self, root: str) -> None:
        self.calls.append(("unbind", root))
        del self.repos[root]

    def environment_names(self) -> list[str]:
        return sorted(self.envs)

    def environments(self) -> list[EnvRow]:
        from dataclasses import asdict

        users: dict[str, list[str]] = {}
        for root, (env, rules) in self.repos.items():
            for name in dict.fromkeys([env, *rules.values()]):
                if name:
                    users.setdefault(name, []).append(root)
        rows = [EnvRow(n, e.image, users.get(n, []), settings=asdict(e)) for n, e in sorted(self.envs.items())]
        if self.trouble:
            rows.append(EnvRow(BROKEN_ENV, "", users.get(BROKEN_ENV, []), error=BROKEN_ENV_ERROR))
        return sorted(rows, key=lambda r: r.name)

    def load_environment(self, name: str) -> Environment:
        return self.envs[name]

    def image_present(self, ref: str) -> bool:
        self._need_podman()
        return ref in self.present_images

    def save_environment(self, env: Environment, create: bool, edit: bool = False) -> str:
        if create and env.name in self.envs:
            raise FieldError("name", f"environment '{env.name}' exists")
        self.calls.append(("save_environment", env.name))
        self.envs[env.name] = env
        return f"{self.config_dir()}/environments/{env.name}.yaml"

    def delete_environment(self, name: str, force: bool = False) -> None:
        self.calls.append(("delete_environment", name))
        del self.envs[name]

    def pull_image(self, ref: str, progress: Callable[[str, int, int], None] | None = None) -> None:
        self._need_podman()
        if self.trouble and ref.startswith("registry.example.com/"):
            if progress:
                progress("sha256:5c3f0d1e9a2b4c6d", 0, 72_000_000)
            raise QpodError(
                f"cannot pull image {ref}: initializing source docker://{ref}: "
                "reading manifest 7: manifest unknown; check the name and tag, "
                "or log in (podman login registry.example.com)"
            )
        if progress:
            for done in range(0, 101, 25):
                progress("layer0", done * 10_000, 1_000_000)
        self.present_images.add(ref)

    def containers(self) -> list[ContainerRow]:
        self._need_podman()
        return list(self.ctrs)

    def container_stats(self, ids: list[str], hosts: dict[str, str] | None = None) -> dict[str, Stats]:
        self._need_podman()
        return {
            cid: Stats(
                cpu=[97.5, 0.1, 12.0, 180.4][int(cid, 16) % 4],
                memory=(38 + int(cid, 16) * 217) << 20,
                memory_limit=16 << 30,
                pids=1 + int(cid, 16),
            )
            for cid in ids
        }

    def stop_container(self, name: str) -> None:
        self.calls.append(("stop_container", name))
        self.ctrs = [
            ContainerInfo(**{**c.__dict__, "state": "exited", "started": None}) if c.name == name else c
            for c in self.ctrs
        ]

    def restart_container(self, name: str) -> None:
        self.calls.append(("restart_container", name))

    def stop_container_by(self, name: str, by: str) -> None:
        self.stop_container(name)

    def restart_container_by(self, name: str, by: str) -> None:
        self.restart_container(name)

    def signal_command(self, rec: dict[str, Any], name: str, by: str = "qpod tui") -> str:
        """The demo's running commands have no client: the signal is noted, nothing is sent."""
        self.calls.append(("signal_command", f"{rec.get('id')} {name}"))
        return f"sent SIG{name} to {' '.join(rec.get('argv') or [])} (demo: nothing runs)"

    def container_logs(self, name: str, tail: int = 200) -> str:
        return ""

    def log_path(self) -> str:
        return os.path.join(self.state_dir, "commands.log")

    def open_log(self) -> LogIndex:
        return DemoLogIndex(self.log_path())


class DemoLogIndex(LogIndex):
    """The demo's start records stand for commands still running (no launcher to ask)."""

    def running(self, alive: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
        return super().running(alive=lambda _rec: True)
