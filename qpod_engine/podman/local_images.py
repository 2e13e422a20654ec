"""Build the local images qpod's tests and demo use, with the podman CLI.

No image registry is reachable from where qpod is developed and tested, so
every image is built here from Debian packages and brought in with
``podman import``:

- ``BUSYBOX_REF``: busybox-static with its applets linked in (a few MB,
  built in about a second) for fast tests.
- ``DEBIAN11_REF``: Debian 11 (bullseye) with make, gcc 10, libc6-dev, gdb, python3, distcc
  and openssh-client:
  the "old OS" an old branch builds in. Made by mmdebstrap, as a normal user too
  (``--mode=unshare``: no root needed, the image goes to that user's own podman
  storage); as root without mmdebstrap, by debootstrap and chroot.

Both builders reuse an existing image unless ``force`` is set, and hold a
per-image lock file so two processes asking at once build it only once. The
lock lives in the user's private state dir (``fileio.locked``, which
imagebuild.py's builds use too): a fixed name in /tmp could be made first, or
held, by another user. A waiter says who holds the lock and gives up after a
timeout instead of hanging.
Stdlib only, so importing this module costs nothing on the launcher's path.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from qpod_engine.base.errors import QpodError
from qpod_engine.base.fileio import locked, make_dirs

BUSYBOX_REF = "localhost/qpod-busybox:latest"
DEBIAN11_REF = "localhost/qpod-debian11:latest"

DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN11_SUITE = "bullseye"
# gdb is added with apt afterwards: debootstrap's own resolver broke on one of its dependencies.
DEBIAN11_INCLUDE = ("make", "gcc", "libc6-dev")
# python3: waf and the build scripts of its era; distcc and openssh-client: an environment's
# ``distribute:`` (distcc in front of the compilers, its jobs sent over ssh; distccd on the
# build hosts runs from this same image)
DEBIAN11_APT_PACKAGES = ("gdb", "python3-minimal", "distcc", "openssh-client")
# the recipe's version, a label of the image: an image of an older recipe is rebuilt, not reused
RECIPE_LABEL = "qpod.recipe"
DEBIAN11_RECIPE = "3"  # 3: distcc and openssh-client
_DEBIAN11_CHANGES = ('CMD ["/bin/bash"]', f"LABEL {RECIPE_LABEL}={DEBIAN11_RECIPE}")

# Applets tests and users reach for; the image gets every applet busybox has, these must be among them.
COMMON_APPLETS = (
    "sh", "ls", "cat", "echo", "sleep", "true", "false", "kill", "env", "id", "pwd", "mkdir", "touch", "rm",
    "test", "[", "expr", "seq", "printf", "wc", "head", "tail", "grep", "sed", "stat", "ps", "readlink",
    "dirname", "basename", "cp", "mv", "chmod", "date", "uname", "tr", "cut", "sort", "yes", "which", "ln",
    "find", "xargs", "awk", "tee", "hostname", "whoami", "timeout", "md5sum", "diff", "vi",
)  # fmt: skip

# A PATH independent of podman's default, so `podman run IMG sh` finds its tools either way.
_IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Proxy settings are the only host environment apt inside the chroot should see.
_PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")

Progress = Callable[[str], None] | None


# --- podman -----------------------------------------------------------------------------------


def _podman() -> str:
    from qpod_engine.podman.service import podman_binary

    return podman_binary()


def image_exists(ref: str) -> bool:
    """True if the local image store has ``ref`` (``podman image exists``)."""
    proc = subprocess.run([_podman(), "image", "exists", ref], capture_output=True, text=True)
    if proc.returncode == 0:
        return True
    if proc.returncode == 1 and not _last_line(proc.stderr):
        return False  # absent; podman failing exits 1 too, but says why
    raise QpodError(f"podman image exists {ref} failed: {_last_line(proc.stderr) or f'exit {proc.returncode}'}")


def image_id(ref: str) -> str | None:
    """The full image id of ``ref``, or None if there is no such image."""
    proc = subprocess.run([_podman(), "image", "inspect", "--format", "{{.Id}}", ref], capture_output=True, text=True)
    return (proc.stdout.strip() or None) if proc.returncode == 0 else None


def image_label(ref: str, key: str) -> str | None:
    """The value of label ``key`` of image ``ref`` (None: no such label or image)."""
    import json

    proc = subprocess.run([_podman(), "image", "inspect", ref], capture_output=True, text=True)
    try:
        labels = json.loads(proc.stdout)[0].get("Labels") or {} if proc.returncode == 0 else {}
    except (ValueError, IndexError, AttributeError):
        return None
    value = labels.get(key)
    return value if isinstance(value, str) else None


def _import_dir(root: Path, ref: str, changes: Sequence[str], tar_opts: Sequence[str], what: str) -> None:
    """``tar -C root -c . | podman import --change ... - ref``; on failure, one line naming the side that failed."""
    old_id = image_id(ref)
    podman = _podman()
    with tempfile.TemporaryFile() as tar_err:
        tar = subprocess.Popen(
            ["tar", "--numeric-owner", *tar_opts, "-C", str(root), "-c", "."],
            stdout=subprocess.PIPE,
            stderr=tar_err,
        )
        try:
            cmd = [podman, "import"]
            for change in changes:
                cmd += ["--change", change]
            imp = subprocess.run([*cmd, "-", ref], stdin=tar.stdout, capture_output=True, text=True)
        finally:
            assert tar.stdout is not None
            tar.stdout.close()  # podman gone -> tar gets SIGPIPE instead of blocking forever
            tar_rc = tar.wait()
        tar_err.seek(0)
        tar_msg = tar_err.read().decode(errors="replace")
    if imp.returncode != 0:
        raise QpodError(f"{what}: podman import failed (exit {imp.returncode}): {_last_line(imp.stderr)}")
    if tar_rc != 0:
        raise QpodError(f"{what}: tar of {root} failed (exit {tar_rc}): {_last_line(tar_msg)}")
    _drop_replaced(old_id, ref)


def _import_tarball(tarball: Path, ref: str, changes: Sequence[str], what: str) -> None:
    """``podman import --change ... TARBALL ref`` into the caller's own storage (rootless too)."""
    old_id = image_id(ref)
    cmd = [_podman(), "import"]
    for change in changes:
        cmd += ["--change", change]
    imp = subprocess.run([*cmd, str(tarball), ref], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if imp.returncode != 0:
        raise QpodError(f"{what}: podman import failed (exit {imp.returncode}): {_last_line(imp.stderr)}")
    _drop_replaced(old_id, ref)


def _drop_replaced(old_id: str | None, ref: str) -> None:
    """A forced rebuild leaves the old image untagged; drop it unless a container still uses it."""
    new_id = image_id(ref)
    if old_id and new_id and old_id != new_id:
        subprocess.run([_podman(), "image", "rm", old_id], capture_output=True)


# --- helpers ----------------------------------------------------------------------------------


def _last_line(text: str) -> str:
    """podman's last word, its warnings (printed on every rootless command here) left out."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and "level=warning" not in line]
    return lines[-1] if lines else ""


# How long a build waits for another process building the same image: a Debian 11 build on a
# slow mirror takes minutes; past this, the holder is taken to be stuck and the waiter says so.
LOCK_TIMEOUT = 900.0


def lock_dir() -> str:
    """``<state>/locks``: 0700 and the user's own (checked), never a fixed name in /tmp that
    another user could create first, hold, or make unreadable. Raises QpodError."""
    import stat

    from qpod_engine.base import paths
    from qpod_engine.base.fileio import private_dir

    d = os.path.join(paths.state_dir(), "locks")
    try:
        private_dir(d)
        st = os.lstat(d)
    except OSError as err:
        raise QpodError(f"{d}: cannot make qpod's lock dir: {err.strerror}") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise QpodError(f"{d}: not a private directory of yours (qpod's locks live there)")
    return d


def image_lock_path(ref: str) -> str:
    """The lock file of image ``ref`` (per user too: root and rootless podman have separate stores,
    and root may run with a user's state dir)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", ref)
    return os.path.join(lock_dir(), f"image-{name}-{os.geteuid()}.lock")


def _image_lock(ref: str, progress: Progress = None, timeout: float = LOCK_TIMEOUT) -> locked:
    """Exclusive lock per image ref (and per user), see ``image_lock_path``: a waiter says who
    builds (through ``progress``, else on stderr: a build takes minutes)."""
    return locked(image_lock_path(ref), f"building image {ref}", timeout, progress or _to_stderr)


def _to_stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _say(progress: Progress, message: str) -> None:
    if progress is not None:
        progress(message)


def _run_step(
    step: str, cmd: Sequence[str], progress: Progress, env: dict[str, str] | None = None, cwd: Path | None = None
) -> list[str]:
    """Run ``cmd``, pass each output line to ``progress``; raise QpodError naming ``step`` on failure.

    Returns the last output lines (for callers that want a better error line than the very last).
    """
    tail: collections.deque[str] = collections.deque(maxlen=50)
    try:
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=env,
            cwd=cwd,
            # Own process group: debootstrap and apt fork helpers (dpkg, subshells) that must die with them.
            process_group=0,
        )
    except OSError as err:
        raise QpodError(f"{step} failed: cannot run {cmd[0]}: {err.strerror}") from err
    assert proc.stdout is not None
    try:
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            if line.strip():
                tail.append(line.strip())
                _say(progress, line)
        rc = proc.wait()
    except BaseException:
        # Ctrl-C or a failing progress callback: do not leave debootstrap/apt running behind us.
        _stop_group(proc)
        raise
    finally:
        proc.stdout.close()
    if rc != 0:
        raise _StepFailed(step, rc, list(tail))
    return list(tail)


def _stop_group(proc: subprocess.Popen[str]) -> None:
    """SIGTERM the step's process group (debootstrap's trap then unmounts /proc and /sys), SIGKILL if it lingers."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; helpers in its group may not be yet.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return


class _StepFailed(QpodError):
    """A step's non-zero exit; keeps the output tail so a caller can pick a better line than the last."""

    def __init__(self, step: str, rc: int, tail: list[str]) -> None:
        super().__init__(f"{step} failed (exit {rc}): {tail[-1] if tail else 'no output'}")
        self.step, self.rc, self.tail = step, rc, tail


def _require_tools(what: str, *tools: str) -> None:
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        raise QpodError(f"{what}: missing {', '.join(missing)} on PATH")


# --- busybox ----------------------------------------------------------------------------------


def _is_static_elf(path: Path) -> bool:
    """True for an ELF executable with no program interpreter (PT_INTERP), i.e. statically linked."""
    try:
        with open(path, "rb") as f:
            ident = f.read(16)
            if ident[:4] != b"\x7fELF" or ident[4] not in (1, 2) or ident[5] not in (1, 2):
                return False
            is64, end = ident[4] == 2, "<" if ident[5] == 1 else ">"
            if is64:
                f.seek(0x20)
                (phoff,) = struct.unpack(end + "Q", f.read(8))
                f.seek(0x36)
            else:
                f.seek(0x1C)
                (phoff,) = struct.unpack(end + "I", f.read(4))
                f.seek(0x2A)
            phentsize, phnum = struct.unpack(end + "HH", f.read(4))
            if phnum == 0:
                return False
            for i in range(phnum):
                f.seek(phoff + i * phentsize)
                (p_type,) = struct.unpack(end + "I", f.read(4))
                if p_type == 3:  # PT_INTERP
                    return False
            return True
    except (OSError, struct.error):
        return False


def _busybox_binary(workdir: Path, progress: Progress, host_candidates: Sequence[str] = ("/bin/busybox",)) -> Path:
    """A static busybox: the host's if it is static (Debian's busybox-static), else from the Debian package."""
    for candidate in host_candidates:
        if _is_static_elf(Path(candidate)):
            return Path(candidate)
    _require_tools("downloading busybox-static", "apt-get", "dpkg-deb")
    _say(progress, "downloading busybox-static with apt-get")
    dl = workdir / "deb"
    dl.mkdir()
    dl.chmod(0o755)  # lets apt's unprivileged _apt user write here (else it warns and downloads as root)
    _run_step("apt-get download busybox-static", ["apt-get", "download", "busybox-static"], None, cwd=dl)
    debs = sorted(dl.glob("busybox-static_*.deb"))
    if not debs:
        raise QpodError("apt-get download busybox-static failed: no .deb was written")
    extracted = workdir / "pkg"
    _run_step("dpkg-deb -x busybox-static", ["dpkg-deb", "-x", str(debs[-1]), str(extracted)], None)
    binary = extracted / "bin" / "busybox"
    if not _is_static_elf(binary):
        raise QpodError(f"busybox-static package did not contain a static bin/busybox ({debs[-1].name})")
    return binary


def _busybox_rootfs(root: Path, busybox: Path) -> None:
    """Lay out a merged-/usr busybox root: /bin -> usr/bin, every applet a symlink to busybox."""
    for d in ("usr/bin", "usr/sbin", "etc", "root", "proc", "sys", "dev", "run", "var/tmp"):
        make_dirs(str(root / d))  # image content: 0755 whatever the umask
    (root / "bin").symlink_to("usr/bin")
    (root / "sbin").symlink_to("usr/sbin")
    shutil.copy2(busybox, root / "usr/bin/busybox")
    (root / "usr/bin/busybox").chmod(0o755)

    listing = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True)
    if listing.returncode != 0:
        raise QpodError(f"{busybox} --list-full failed: {_last_line(listing.stderr)}")
    applets: dict[str, str] = {}  # name -> "usr/bin" or "usr/sbin"
    for entry in listing.stdout.split():
        parts = entry.split("/")
        if parts[0] == "usr":
            parts = parts[1:]
        if len(parts) == 2 and parts[0] in ("bin", "sbin"):
            applets.setdefault(parts[1], f"usr/{parts[0]}")
    missing = [a for a in COMMON_APPLETS if a not in applets]
    if missing:
        raise QpodError(f"{busybox} lacks applets: {' '.join(missing)}")
    for name, d in applets.items():
        link = root / d / name
        if name != "busybox" and not link.exists():
            link.symlink_to("busybox" if d == "usr/bin" else "../bin/busybox")

    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    )
    (root / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (root / "root").chmod(0o700)
    tmp = root / "tmp"
    tmp.mkdir()
    tmp.chmod(0o1777)  # mkdir honours the umask and drops the sticky bit: set it explicitly


def build_busybox_image(ref: str = BUSYBOX_REF, progress: Progress = None, force: bool = False) -> str:
    """Build (or reuse) a tiny busybox image for fast tests and return ``ref``.

    Safe to call from several processes at once: the first builds, the others wait and reuse.
    """
    if not force and image_exists(ref):
        return ref
    with _image_lock(ref, progress):
        if not force and image_exists(ref):  # another process built it while we waited
            return ref
        _require_tools(f"building {ref}", "tar")
        with tempfile.TemporaryDirectory(prefix="qpod-busybox-") as tmp:
            work = Path(tmp)
            busybox = _busybox_binary(work, progress)
            root = work / "root"
            root.mkdir()
            _busybox_rootfs(root, busybox)
            _say(progress, f"importing {ref}")
            # --owner/--group 0: the files belong to root inside the image even when built rootless.
            _import_dir(
                root,
                ref,
                [f"ENV PATH={_IMAGE_PATH}", 'CMD ["/bin/sh"]'],
                ["--owner=0", "--group=0"],
                f"building {ref}",
            )
    return ref


# --- Debian 11 --------------------------------------------------------------------------------


def _mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root`` (from /proc/self/mountinfo), deepest first."""
    prefix = os.path.realpath(root)
    found = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split(" ")
                if len(fields) < 5:
                    continue
                # mountinfo escapes space, tab, newline and backslash as octal.
                point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
                if point == prefix or point.startswith(prefix + "/"):
                    found.append(point)
    except OSError:
        return []
    return sorted(set(found), key=len, reverse=True)


def _remove_tree(path: Path) -> None:
    """Delete a build root, but never through a mount: /proc, /sys or a bind of /dev left by a failed
    debootstrap would otherwise have rmtree walk into the host's own filesystems."""
    for point in _mounts_under(path):
        subprocess.run(["umount", "-l", point], capture_output=True)
    left = _mounts_under(path)
    if left:
        raise QpodError(f"not removing {path}: still mounted below it: {left[0]}")
    shutil.rmtree(path, ignore_errors=True)


def _chroot_env() -> dict[str, str]:
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "DEBIAN_FRONTEND": "noninteractive",
        "LANG": "C",
        "LC_ALL": "C",
        "HOME": "/root",
    }
    env.update({k: os.environ[k] for k in _PROXY_VARS if k in os.environ})
    return env


def _copy_debs(src: Path, dst: Path, skip: Path | None = None) -> None:
    """Copy the .deb files of ``src`` missing from ``dst`` (and from ``skip``, which already caches them)."""
    make_dirs(str(dst))
    for deb in src.glob("*.deb"):
        target = dst / deb.name
        if not target.exists() and not (skip is not None and (skip / deb.name).exists()):
            shutil.copy2(deb, target)


def _write_resolv_conf(root: Path) -> None:
    """Give apt in the chroot the host's resolver *content*.

    debootstrap copies /etc/resolv.conf as is; on a systemd-resolved host that is a symlink into
    /run, which dangles inside the chroot. The chroot shares the host's network namespace, so the
    host's nameservers (even 127.0.0.53) answer there too.
    """
    target = root / "etc/resolv.conf"
    with contextlib.suppress(FileNotFoundError):
        target.unlink()
    try:
        content = Path("/etc/resolv.conf").read_text()
    except OSError:
        content = ""
    target.write_text(content)


DEBIAN11_BUILDERS = ("auto", "mmdebstrap", "debootstrap")


def debian11_builder(builder: str = "auto") -> str:
    """Which tool builds the Debian 11 root here: mmdebstrap (any user) where installed, else
    debootstrap (root only). Raises QpodError saying what to install."""
    if builder not in DEBIAN11_BUILDERS:
        raise QpodError(f"unknown Debian 11 builder '{builder}' (one of {', '.join(DEBIAN11_BUILDERS)})")
    root = os.geteuid() == 0
    if builder in ("auto", "mmdebstrap") and shutil.which("mmdebstrap"):
        return "mmdebstrap"
    if builder in ("auto", "debootstrap") and root and shutil.which("debootstrap"):
        return "debootstrap"
    if builder == "debootstrap":
        raise QpodError("debootstrap needs root and debootstrap; as a user: sudo apt-get install mmdebstrap")
    raise QpodError("needs mmdebstrap: sudo apt-get install mmdebstrap uidmap (or sudo bash scripts/setup.sh)")


def build_debian11_image(
    ref: str = DEBIAN11_REF,
    progress: Progress = None,
    force: bool = False,
    cache_dir: Path | None = None,
    *,
    mirror: str = DEBIAN_MIRROR,
    builder: str = "auto",
) -> str:
    """Build (or reuse) a Debian 11 image with make, gcc 10, libc6-dev, gdb, python3, distcc and
    openssh-client; return ``ref``.

    mmdebstrap builds it as whoever calls (a normal user: ``--mode=unshare``, into that user's own
    podman storage; about 30 s); without mmdebstrap, root uses debootstrap and chroot (about a
    minute). ``progress`` gets stage messages and every line the builder prints. ``cache_dir``
    keeps debootstrap's downloaded .deb files between builds (None: download everything).
    Raises QpodError naming the step that failed and the line that says why.
    """
    what = f"building {ref}"

    def current() -> bool:
        return image_exists(ref) and image_label(ref, RECIPE_LABEL) == DEBIAN11_RECIPE

    if not force and current():
        return ref
    with _image_lock(ref, progress):
        if not force and current():
            return ref
        try:
            tool = debian11_builder(builder)
        except QpodError as err:
            raise QpodError(f"{what}: {err}") from None
        if tool == "mmdebstrap":
            _debian11_mmdebstrap(ref, progress, mirror, what)
        else:
            _debian11_debootstrap(ref, progress, cache_dir, mirror, what)
    return ref


def _work_dir(prefix: str) -> Path:
    # /var/tmp rather than /tmp: ~430 MB that must allow exec and device nodes, and /tmp is often a
    # small tmpfs mounted noexec/nodev.
    base = os.environ.get("TMPDIR") or ("/var/tmp" if os.path.isdir("/var/tmp") else None)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def _debian11_mmdebstrap(ref: str, progress: Progress, mirror: str, what: str) -> None:
    """mmdebstrap writes the root as a tarball (apt resolves gdb too), podman imports it."""
    from qpod_engine.podman.service import podman_env

    _require_tools(what, "mmdebstrap")
    mode = "root" if os.geteuid() == 0 else "unshare"
    if mode == "unshare":
        _require_tools(f"{what} as a normal user", "newuidmap", "newgidmap")
    work = _work_dir("qpod-debian11-")
    tarball = work / "root.tar"
    packages = ",".join(DEBIAN11_INCLUDE + DEBIAN11_APT_PACKAGES)
    cmd = [
        "mmdebstrap",
        f"--mode={mode}",
        "--variant=minbase",
        f"--include={packages}",
        # host-specific files: podman supplies its own resolv.conf and hostname at run time
        '--customize-hook=rm -f "$1/etc/resolv.conf" "$1/etc/hostname"',
        DEBIAN11_SUITE,
        str(tarball),
        mirror,
    ]
    try:
        _say(progress, f"mmdebstrap --mode={mode} {DEBIAN11_SUITE} from {mirror} ({packages})")
        env = podman_env()  # the caller's environment minus qpod's preload library
        try:
            _run_step("mmdebstrap", cmd, progress, env=env)
        except _StepFailed as err:
            errors = [line for line in err.tail if line.startswith("E:")]
            line = errors[0] if errors else (err.tail[-1] if err.tail else "no output")
            raise QpodError(f"{what}: mmdebstrap failed (exit {err.rc}): {line}") from None
        _say(progress, f"importing {ref} ({tarball.stat().st_size // 2**20} MiB)")
        _import_tarball(tarball, ref, [*_DEBIAN11_CHANGES, f"ENV PATH={_IMAGE_PATH}"], what)
        _say(progress, f"built {ref}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _debian11_debootstrap(ref: str, progress: Progress, cache_dir: Path | None, mirror: str, what: str) -> None:
    """As root: debootstrap into a directory, apt-get install gdb in a chroot, tar | podman import."""
    if os.geteuid() != 0:
        raise QpodError(f"{what}: needs root (debootstrap and chroot)")
    _require_tools(what, "debootstrap", "chroot", "tar", "umount")
    work = _work_dir("qpod-debian11-")
    root = work / "root"
    deb_cache: Path | None = None
    try:
        cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(DEBIAN11_INCLUDE)}"]
        if cache_dir is not None:
            deb_cache = Path(cache_dir).resolve() / "debootstrap"
            make_dirs(str(deb_cache))
            cmd.append(f"--cache-dir={deb_cache}")
        cmd += [DEBIAN11_SUITE, str(root), mirror]
        _say(progress, f"debootstrap {DEBIAN11_SUITE} from {mirror}")
        try:
            _run_step("debootstrap", cmd, progress)
        except _StepFailed as err:
            # debootstrap's last line is usually "See .../debootstrap.log"; the E: line says what broke,
            # and the log is about to be deleted with the root, so keep a copy.
            errors = [line for line in err.tail if line.startswith("E:")]
            log = root / "debootstrap" / "debootstrap.log"
            kept = work.parent / "qpod-debian11-debootstrap.log"
            note = ""
            with contextlib.suppress(OSError):
                shutil.copyfile(log, kept)
                note = f" (log: {kept})"
            line = errors[-1] if errors else (err.tail[-1] if err.tail else "no output")
            raise QpodError(f"{what}: debootstrap failed (exit {err.rc}): {line}{note}") from None

        _write_resolv_conf(root)
        archives = root / "var/cache/apt/archives"
        if cache_dir is not None:
            _copy_debs(Path(cache_dir) / "apt", archives)  # apt checks their hashes, stale ones are refetched
        env = _chroot_env()
        chroot = ["chroot", str(root)]
        try:
            _say(progress, "apt-get update (in the chroot)")
            _run_step("apt-get update", [*chroot, "apt-get", "update"], progress, env=env)
            _say(progress, f"apt-get install {' '.join(DEBIAN11_APT_PACKAGES)} (in the chroot)")
            # Use-Pty=0: with no /dev/pts in the chroot, dpkg's pty log prints a misleading "E: Can not write log".
            install = ["apt-get", "install", "-y", "--no-install-recommends", "-o", "Dpkg::Use-Pty=0"]
            install += DEBIAN11_APT_PACKAGES
            _run_step(f"apt-get install {' '.join(DEBIAN11_APT_PACKAGES)}", [*chroot, *install], progress, env=env)
            if cache_dir is not None:
                _copy_debs(archives, Path(cache_dir).resolve() / "apt", skip=deb_cache)
            _run_step("apt-get clean", [*chroot, "apt-get", "clean"], progress, env=env)
        except QpodError as err:
            raise QpodError(f"{what}: {err}") from None

        # Host-specific files: podman supplies its own resolv.conf and hostname at run time.
        for name in ("etc/resolv.conf", "etc/hostname"):
            with contextlib.suppress(FileNotFoundError):
                (root / name).unlink()
        lists = root / "var/lib/apt/lists"
        for entry in lists.iterdir() if lists.is_dir() else ():
            if entry.is_file():
                entry.unlink()

        leftover = _mounts_under(root)
        if leftover:
            raise QpodError(f"{what}: refusing to import, still mounted: {leftover[0]}")
        _say(progress, f"importing {ref}")
        _import_dir(root, ref, [*_DEBIAN11_CHANGES, f"ENV PATH={_IMAGE_PATH}"], [], what)
        _say(progress, f"built {ref}")
    finally:
        _remove_tree(work)
