"""Repository bindings (``repositories.yaml``): which environment a repository, or one of its
branches, uses.

    repositories:
      /home/me/dev/mmsx-2018.3:
        environment: mmsx-2018.3-centos7     # any branch (optional)
        branches:                            # optional; first matching glob wins
          release/2018.*: mmsx-2018.3-centos7
"""

from __future__ import annotations

from qpod_engine.base import paths
from qpod_engine.base.errors import ConfigError, QpodError

# typing is imported for type checkers only, and yamlio (PyYAML) and fnmatch inside the
# functions that need them: the launcher imports this module on every command, only for
# Binding.environment_for
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from qpod_engine.base import yamlio


class Binding:
    __slots__ = ("root", "environment", "branches")

    def __init__(self, root: str, environment: str | None = None, branches: dict[str, str] | None = None) -> None:
        self.root = root
        self.environment = environment
        self.branches: dict[str, str] = branches if branches is not None else {}  # glob -> env, file order

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Binding) and (self.root, self.environment, self.branches) == (
            other.root,
            other.environment,
            other.branches,
        )

    def __repr__(self) -> str:
        return f"Binding({self.root!r}, {self.environment!r}, {self.branches!r})"

    def environment_for(self, branch: str | None) -> tuple[str | None, str]:
        """(environment or None, why) for the given checked-out branch."""
        if branch is not None and self.branches:
            from fnmatch import fnmatchcase

            for glob, env in self.branches.items():
                if fnmatchcase(branch, glob):
                    return env, f"branch '{branch}' matches rule '{glob}'"
        if self.environment:
            return self.environment, "repository binding"
        rules = ", ".join(self.branches) or "none"
        on = f"branch '{branch}'" if branch else "a detached HEAD"
        return None, f"bound only for branches {rules}; on {on}"

    def referenced_environments(self) -> list[str]:
        names = ([self.environment] if self.environment else []) + list(self.branches.values())
        return list(dict.fromkeys(names))

    def to_yaml_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.environment:
            data["environment"] = self.environment
        if self.branches:
            data["branches"] = dict(self.branches)
        return data


def _parse(data: Any, file: str, lines: yamlio.Lines) -> dict[str, Binding]:
    if data is None:
        return {}
    if not isinstance(data, dict) or set(data) - {"repositories"}:
        extra = sorted(set(data) - {"repositories"}) if isinstance(data, dict) else []
        key = extra[0] if extra else None
        msg = f"unknown key '{key}' (expected 'repositories')" if key else "expected a 'repositories:' mapping"
        raise ConfigError(file, msg, lines.get(key) if key else lines.get())
    repos = data.get("repositories") or {}
    if not isinstance(repos, dict):
        raise ConfigError(file, "'repositories' must map repository paths to bindings", lines.get("repositories"))
    out: dict[str, Binding] = {}
    for root, entry in repos.items():
        where = lines.get("repositories", root)
        if not isinstance(root, str) or not root.startswith("/"):
            raise ConfigError(file, f"repository '{root}' must be an absolute path", where)
        if not isinstance(entry, dict):
            raise ConfigError(file, f"'{root}' must have 'environment' and/or 'branches'", where)
        for key in entry:
            if key not in ("environment", "branches"):
                raise ConfigError(
                    file,
                    f"unknown key '{key}' (known keys: branches, environment)",
                    lines.get("repositories", root, key),
                )
        env = entry.get("environment")
        if env is not None and not isinstance(env, str):
            raise ConfigError(
                file, "'environment' must be an environment name", lines.get("repositories", root, "environment")
            )
        branches = entry.get("branches") or {}
        if not isinstance(branches, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in branches.items()
        ):
            raise ConfigError(
                file,
                "'branches' must map branch globs to environment names",
                lines.get("repositories", root, "branches"),
            )
        if env is None and not branches:
            raise ConfigError(file, f"'{root}' has neither 'environment' nor 'branches'", where)
        norm = root.rstrip("/") or "/"
        out[norm] = Binding(root=norm, environment=env, branches=dict(branches))
    return out


def load_bindings() -> dict[str, Binding]:
    from pathlib import Path

    from qpod_engine.base import yamlio

    path = paths.repositories_file()
    try:
        data, lines = yamlio.load(Path(path))
    except FileNotFoundError:
        return {}
    return _parse(data, str(path), lines)


def save_bindings(bindings: dict[str, Binding]) -> Path:
    from pathlib import Path

    from qpod_engine.base import yamlio

    path = Path(paths.repositories_file())
    data = {"repositories": {root: b.to_yaml_dict() for root, b in sorted(bindings.items())}}
    _parse(data, str(path), yamlio.Lines())  # never write what we could not read back
    yamlio.write_atomic(path, yamlio.dump_text(data))
    return path


def find_binding(bindings: dict[str, Binding], path: str) -> Binding | None:
    """The binding whose root contains ``path`` (the innermost, for nested repositories)."""
    from qpod_engine.base.gitinfo import innermost_root

    root = innermost_root(path, bindings)
    return bindings[root] if root is not None else None


def bind(bindings: dict[str, Binding], root: str, env: str, branch_glob: str | None) -> Binding:
    if "\t" in root or "\n" in root:
        # the preload library's rules are tab- and line-separated: such a root could not be
        # claimed, and its builds would run on the host without a word
        from qpod_engine.base.textsafe import visible

        raise QpodError(
            f"{visible(root)}: qpod cannot watch a path with a tab or a newline in it (rename the directory)", status=2
        )
    b = bindings.get(root) or Binding(root=root)
    if branch_glob:
        b.branches[branch_glob] = env
    else:
        b.environment = env
    bindings[root] = b
    return b


def unbind(bindings: dict[str, Binding], root: str, branch_glob: str | None) -> None:
    b = bindings.get(root)
    if b is None:
        raise QpodError(f"{root}: repository is not bound", status=2)
    if branch_glob:
        if branch_glob not in b.branches:
            rules = ", ".join(b.branches) or "none"
            raise QpodError(f"{root}: no branch rule '{branch_glob}' (rules: {rules})", status=2)
        del b.branches[branch_glob]
        if not b.branches and not b.environment:
            del bindings[root]
    else:
        del bindings[root]


def directory_root(path: str) -> str:
    """The root of a directory binding (``qpod init ENV --dir PATH``): the real path of an
    existing directory, never one that holds your whole home (every program there would go to
    the container)."""
    import os
    import pwd

    from qpod_engine.base.gitinfo import is_within

    root = os.path.realpath(path)
    if not os.path.isdir(root):
        raise QpodError(f"{path}: not a directory", status=2)
    try:
        home = os.path.realpath(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:
        home = "/"
    if root == "/" or is_within(home, root):
        raise QpodError(f"{root}: holds your home directory; bind the build directory itself", status=2)
    return root
