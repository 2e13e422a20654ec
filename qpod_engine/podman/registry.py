"""What qpod needs to know of a registry to pull as ``podman pull`` does: the credentials podman
would use (the same files, in the same order), and, when a pull fails, why, asked of the
registry itself (its answer to a manifest request), not read from podman's message.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

PROBE_TIMEOUT = 5.0


def registry_of(ref: str) -> str:
    """The registry host of an image reference (docker.io when it names none)."""
    first = ref.split("/", 1)[0]
    if "/" in ref and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def split_ref(ref: str) -> tuple[str, str, str]:
    """(registry, repository path, tag or digest) of an image reference."""
    reg = registry_of(ref)
    rest = ref[len(reg) + 1 :] if ref.startswith(reg + "/") else ref
    if "@" in rest:
        name, _, ver = rest.partition("@")
    else:
        name, sep, tag = rest.rpartition(":")
        name, ver = (name, tag) if sep and "/" not in tag else (rest, "latest")
    if reg == "docker.io" and "/" not in name:
        name = f"library/{name}"
    return reg, name, ver


# --- credentials --------------------------------------------------------------------------------


def auth_files(env: Mapping[str, str] | None = None) -> list[str]:
    """Where podman looks for credentials, first match wins (containers-auth.json(5)):
    REGISTRY_AUTH_FILE, else $XDG_RUNTIME_DIR/containers/auth.json, then
    ~/.config/containers/auth.json and ~/.docker/config.json."""
    env = os.environ if env is None else env
    if env.get("REGISTRY_AUTH_FILE"):
        return [env["REGISTRY_AUTH_FILE"]]
    home = env.get("HOME") or os.path.expanduser("~")
    out = []
    if env.get("XDG_RUNTIME_DIR"):
        out.append(os.path.join(env["XDG_RUNTIME_DIR"], "containers", "auth.json"))
    config_home = env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    out += [os.path.join(config_home, "containers", "auth.json"), os.path.join(home, ".docker", "config.json")]
    return out


def credentials(ref: str, env: dict[str, str] | None = None) -> tuple[str, str] | None:
    """(user, password) for the image's registry from the first auth file that has an entry:
    the most specific key first (registry/namespace/repo, ..., registry)."""
    reg, name, _ = split_ref(ref)
    parts = name.split("/")
    keys = [f"{reg}/{'/'.join(parts[:i])}" for i in range(len(parts), 0, -1)] + [reg, f"https://{reg}"]
    if reg == "docker.io":
        keys += ["https://index.docker.io/v1/", "index.docker.io"]
    for path in auth_files(env):
        try:
            with open(path, encoding="utf-8") as f:
                auths = json.load(f).get("auths") or {}
        except (OSError, ValueError, AttributeError):
            continue
        for key in keys:
            entry = auths.get(key)
            if isinstance(entry, dict) and isinstance(entry.get("auth"), str):
                try:
                    user, sep, password = base64.b64decode(entry["auth"]).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    continue
                if sep:
                    return user, password
    return None


def registry_auth_header(ref: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """The X-Registry-Auth header of podman's API for ``ref`` (empty without credentials)."""
    found = credentials(ref, env)
    if not found:
        return {}
    blob = json.dumps({"username": found[0], "password": found[1]}).encode()
    return {"X-Registry-Auth": base64.urlsafe_b64encode(blob).decode()}


# --- why a pull failed --------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    kind: str  # down, tls, unauthorized, unknown
    hint: str


def insecure_registries() -> set[str]:
    """Registries that registries.conf (and its .d drop-ins) mark ``insecure = true``."""
    import glob
    import tomllib

    found: set[str] = set()
    user = os.path.join(os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config"), "containers")
    files = [
        "/etc/containers/registries.conf",
        *sorted(glob.glob("/etc/containers/registries.conf.d/*.conf")),
        os.path.join(user, "registries.conf"),
        *sorted(glob.glob(os.path.join(user, "registries.conf.d/*.conf"))),
    ]
    for path in files:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except (OSError, ValueError):
            continue
        for entry in data.get("registry") or []:
            if isinstance(entry, dict) and entry.get("insecure") and isinstance(entry.get("location"), str):
                found.add(entry["location"])
    return found


def diagnose(ref: str, env: dict[str, str] | None = None) -> Problem | None:
    """Ask the registry for the image's manifest, with the credentials podman would use, and
    say what stands in the way: nothing answers, TLS fails, it wants (other) credentials, or it
    has no such image. None when the registry serves the manifest (the failure is elsewhere)."""
    import ssl
    import urllib.error
    import urllib.request

    reg, name, ver = split_ref(ref)
    host = "registry-1.docker.io" if reg == "docker.io" else reg
    schemes = ["https", "http"] if reg in insecure_registries() else ["https"]
    headers = {
        "Accept": ", ".join(
            [
                "application/vnd.oci.image.index.v1+json",
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.docker.distribution.manifest.list.v2+json",
                "application/vnd.docker.distribution.manifest.v2+json",
            ]
        )
    }
    found = credentials(ref, env)
    if found:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{found[0]}:{found[1]}".encode()).decode()
    last: Problem | None = None
    for scheme in schemes:
        req = urllib.request.Request(f"{scheme}://{host}/v2/{name}/manifests/{ver}", headers=headers, method="HEAD")
        try:
            with urllib.request.urlopen(req, timeout=PROBE_TIMEOUT):
                return None
        except urllib.error.HTTPError as err:
            if err.code in (401, 403):
                how = "the credentials podman has for it are refused" if found else "it wants credentials"
                return Problem("unauthorized", f"{how}: run 'podman login {reg}' (or set REGISTRY_AUTH_FILE)")
            if err.code == 404:
                return Problem("unknown", f"{reg} has no image {name}:{ver}: check the name and tag")
            return None
        except urllib.error.URLError as err:
            reason = err.reason
            if isinstance(reason, (ssl.SSLError, ssl.CertificateError)):
                last = Problem(
                    "tls",
                    f"TLS with {reg} failed ({type(reason).__name__}): its certificate is not "
                    "trusted here; for a test registry, mark it insecure in registries.conf",
                )
                continue
            last = Problem("down", f"{reg} does not answer ({_reason(reason)}): is it up, and reachable from here?")
        except (TimeoutError, OSError) as err:
            last = Problem("down", f"{reg} does not answer ({_reason(err)}): is it up, and reachable from here?")
    return last


def _reason(err: object) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    return type(err).__name__
