"""Where qpod keeps its config (human-owned YAML) and its state (log, rules, runtime files)."""

import os
from pathlib import Path


def _xdg(var: str, env_override: str, fallback: str) -> Path:
    if os.environ.get(env_override):
        return Path(os.environ[env_override])
    base = os.environ.get(var) or os.path.join(os.path.expanduser("~"), fallback)
    return Path(base) / "qpod"


def config_dir() -> Path:
    """``$QPOD_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/qpod``, else ``~/.config/qpod``."""
    return _xdg("XDG_CONFIG_HOME", "QPOD_CONFIG_DIR", ".config")


def state_dir() -> Path:
    """``$QPOD_STATE_DIR``, else ``$XDG_STATE_HOME/qpod``, else ``~/.local/state/qpod``."""
    return _xdg("XDG_STATE_HOME", "QPOD_STATE_DIR", ".local/state")


def environments_dir() -> Path:
    return config_dir() / "environments"


def environment_file(name: str) -> Path:
    return environments_dir() / f"{name}.yaml"


def repositories_file() -> Path:
    return config_dir() / "repositories.yaml"


def settings_file() -> Path:
    return config_dir() / "settings.yaml"


def snapshot_file() -> Path:
    """The compiled config (JSON) the launcher reads instead of parsing YAML."""
    return state_dir() / "snapshot.json"


def rules_file() -> Path:
    """The compiled rules the preload library reads."""
    return state_dir() / "rules"


def log_file() -> Path:
    return state_dir() / "commands.log"


def containers_cache_dir() -> Path:
    """Per-container facts (id, pid, config hash) so a warm launch needs no podman query."""
    return state_dir() / "containers"
