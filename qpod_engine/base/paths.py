"""Where qpod keeps its config (human-owned YAML) and its state (log, rules, runtime files).

Plain ``str`` paths: the launcher's hot path cannot afford ``import pathlib`` (~4 ms).
"""

import os

# the installed package and the programs its build put beside it (preload/build.py: the preload
# library, the native-exec client, the agent); the launcher script the preload library starts
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIB_DIR = os.path.join(PACKAGE_DIR, "_lib")
LAUNCH_SCRIPT = os.path.join(PACKAGE_DIR, "launch", "entry.py")
# a repository's own environment file, at the root of its checked-out tree; also the
# environment name a binding to it carries
REPO_FILE = ".qpod.yaml"


def _xdg(var: str, env_override: str, fallback: str) -> str:
    if os.environ.get(env_override):
        return os.path.abspath(os.environ[env_override])
    base = os.environ.get(var) or os.path.join(os.path.expanduser("~"), fallback)
    return os.path.join(base, "qpod")


_trusted_config: set[str] = set()


def config_dir() -> str:
    """``$QPOD_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/qpod``, else ``~/.config/qpod``; once it
    exists, only if it is the user's own and writable by nobody else (ownership.check_config_dir),
    as its ``environments`` folder. Raises QpodError (125, one line naming it)."""
    d = _xdg("XDG_CONFIG_HOME", "QPOD_CONFIG_DIR", ".config")
    if d not in _trusted_config:
        from qpod_engine.base.ownership import check_config_dir

        if check_config_dir(d) and check_config_dir(os.path.join(d, "environments")):
            _trusted_config.add(d)
    return d


def state_dir_path() -> str:
    """Where the state dir is, unchecked: only to compare paths with, never to read or write."""
    return _xdg("XDG_STATE_HOME", "QPOD_STATE_DIR", ".local/state")


_trusted_state: set[str] = set()


def state_dir() -> str:
    """``$QPOD_STATE_DIR``, else ``$XDG_STATE_HOME/qpod``, else ``~/.local/state/qpod``; once it
    exists, only if it is the user's own and closed to others (ownership.check_private_dir: its
    rules, snapshot and launch specs decide where commands run). Every path in the state dir
    comes through here, so nothing in it is read or written before that check; a dir found
    good is not looked at again by this process. Raises QpodError (125, one line naming it)."""
    d = state_dir_path()
    if d not in _trusted_state:
        from qpod_engine.base.ownership import check_private_dir

        if check_private_dir(d):
            _trusted_state.add(d)
    return d


def environments_dir() -> str:
    return os.path.join(config_dir(), "environments")


def environment_file(name: str) -> str:
    return os.path.join(environments_dir(), f"{name}.yaml")


def repositories_file() -> str:
    return os.path.join(config_dir(), "repositories.yaml")


def settings_file() -> str:
    return os.path.join(config_dir(), "settings.yaml")


def trust_file() -> str:
    """The repository files (``.qpod.yaml``) the user allowed, by content hash (0600: it says
    which repositories may shape a container)."""
    return os.path.join(config_dir(), "allowed.json")


def config_lock_file() -> str:
    """Locked (flock) around every read-modify-write of the config: 20 ``qpod init`` at once
    must leave 20 bindings. Beside the files it guards (the config dir may be shared by
    several state dirs); a dot file, so no ``*.yaml`` listing sees it."""
    return os.path.join(config_dir(), ".qpod.lock")


def snapshot_file() -> str:
    """The compiled config (JSON) the launcher reads instead of parsing YAML."""
    return os.path.join(state_dir(), "snapshot.json")


def rules_file() -> str:
    """The compiled rules the preload library reads."""
    return os.path.join(state_dir(), "rules")


def log_file() -> str:
    return os.path.join(state_dir(), "commands.log")


def containers_cache_dir() -> str:
    """Per-container facts (id, pid, config hash) so a warm launch needs no podman query."""
    return os.path.join(state_dir(), "containers")


def find_program(name: str, path_env: str | None = None) -> str | None:
    """PATH search as execvp does it (first executable regular file); a name with '/' is
    taken as is."""
    if "/" in name:
        return os.path.abspath(name)
    search = os.environ.get("PATH") if path_env is None else path_env
    for d in (search or os.defpath).split(os.pathsep):
        cand = os.path.join(d or ".", name)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return os.path.abspath(cand)
    return None
