"""Compiles the preload library with the system C compiler (used by setup.py, the tests and the
benchmark; stdlib only, no build dependencies).

Layout written into ``<pkg>/_lib``::

    qpod-client                     the native-exec client (runs on the host), static
    libqpod_client.so               the same client, loaded by the library into a program's fork
                                    child instead of an exec of qpod-client (it saves the exec)
    agent/qpod-agent                the agent, static (PID 1 of every warm container)
    libqpod_preload.so              the library (QPOD_PRELOAD names this file)
    <$LIB>/libqpod_preload.so       the same, where the 64-bit loader expands "$LIB"
    <32-bit $LIB>/libqpod_preload.so  an empty 32-bit object (x86_64 only, best effort)

(qpod_engine.routing.preload_lib finds the "$LIB" copy by its ELF class: no marker file to keep.)

LD_PRELOAD then names ``<pkg>/_lib/$LIB/libqpod_preload.so``: each loader finds an object of
its own class, so 32-bit programs run without the loader's "cannot be preloaded" warning.
"""

import os
import platform
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
LIB_NAME = "libqpod_preload.so"
# the agent alone in its folder: the folder is what containers mount (read-only)
AGENT_DIR = "agent"
AGENT_NAME = "qpod-agent"
CLIENT_NAME = "qpod-client"
CLIENT_SO_NAME = "libqpod_client.so"
# the library: its hooks (qpod_preload.c) and their parts (library/: environment, paths, rules, workdir)
SOURCES = [HERE / "qpod_preload.c", *(HERE / "library" / f for f in ("env.c", "paths.c", "rules.c", "workdir.c"))]
# the client: front and main (client.c) and its parts by role (client/)
CLIENT_SOURCES = [
    HERE / "client.c",
    *(HERE / "client" / f for f in ("util.c", "spec.c", "cmdlog.c", "term.c", "local.c", "relay.c")),
]
# the agent's program: the agent and its remote side, the relay's bridge
AGENT_SOURCES = [HERE / "agent.c", HERE / "bridge.c"]
CFLAGS = ["-O2", "-g0", "-fPIC", "-shared", "-fvisibility=hidden", "-fno-stack-protector", "-Wall", "-Wextra"]
# two load segments instead of four: fewer mappings and page faults in every process
LDFLAGS = ["-Wl,-O1", "-Wl,--hash-style=gnu", "-Wl,-z,noseparate-code", "-Wl,--as-needed", "-ldl"]
# where 32-bit loaders expand $LIB: Debian/Ubuntu, Arch, Fedora/SUSE
LIB32_CANDIDATES = ["lib/i386-linux-gnu", "lib32", "lib"]


def cc() -> list[str]:
    return (os.environ.get("CC") or "cc").split()


def compile_library(out: Path, sources: list[Path] | None = None, extra: list[str] | None = None) -> Path:
    """Compile ``sources`` (default: the preload library) into the shared object ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    cmd = [*cc(), *CFLAGS, *(extra or []), "-o", str(tmp), *map(str, sources or SOURCES), *LDFLAGS]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"compiling the qpod preload library failed:\n{' '.join(cmd)}\n{proc.stderr}")
    os.replace(tmp, out)  # a running process may have the old one mapped: never write in place
    return out


def compile_empty(out: Path) -> Path:
    """An empty preloadable library built the ordinary way (``cc -O2 -fPIC -shared``): the floor
    any LD_PRELOAD costs, the benchmark's reference."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "empty.c"
        src.write_text("int qpod_empty_preload;\n")
        subprocess.run([*cc(), "-O2", "-fPIC", "-shared", "-o", str(out), str(src)], check=True)
    return out


def _loads_silently(entry: str, env_extra: dict[str, str] | None = None) -> bool:
    env = {"PATH": "/usr/bin:/bin", "LD_PRELOAD": entry, **(env_extra or {})}
    proc = subprocess.run(["/bin/true"], env=env, capture_output=True, text=True)
    return proc.returncode == 0 and not proc.stderr


def probe_dst_lib(lib: Path) -> str | None:
    """How this machine's loader expands "$LIB" (tried, not guessed: a copy of the library is
    placed at each candidate in turn and must load without a warning)."""
    multiarch = sysconfig.get_config_var("MULTIARCH") or f"{platform.machine()}-linux-gnu"
    with tempfile.TemporaryDirectory() as tmp:
        for cand in [f"lib/{multiarch}", "lib64", "lib", f"usr/lib/{multiarch}"]:
            target = Path(tmp) / cand / LIB_NAME
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(lib, target)
            ok = _loads_silently(f"{tmp}/$LIB/{LIB_NAME}", {"QPOD_OFF": "1"})
            target.unlink()
            if ok:
                return cand
    return None


def compile_program(out: Path, *sources: Path, static: bool = False) -> Path:
    """Compile one program of the native-exec transport (the agent static: it runs inside any
    image, whatever its C library)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    flags = ["-O2", "-g0", "-Wall", "-Wextra", "-Wl,--gc-sections", "-ffunction-sections", "-fdata-sections"]
    cmd = [*cc(), *flags, *(["-static"] if static else []), "-o", str(tmp), *map(str, sources)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        hint = " (a static build needs the C library's static archive: apt-get install libc6-dev)" if static else ""
        raise RuntimeError(f"compiling {sources[0].name} failed{hint}:\n{' '.join(cmd)}\n{proc.stderr}")
    os.replace(tmp, out)  # a running container may have the old one mapped: never write in place
    return out


def build(lib_dir: Path) -> Path:
    """Build the library and its "$LIB" layout, the agent and the client into ``lib_dir``;
    returns the library's path."""
    compile_program(lib_dir / AGENT_DIR / AGENT_NAME, *AGENT_SOURCES, static=True)
    # static: no dynamic loading at its start (nor the preload library in it), a command's
    # start costs less (bench/bench_activation.py, redirected make -q: 1.48x the host's -> 1.41x)
    compile_program(lib_dir / CLIENT_NAME, *CLIENT_SOURCES, static=True)
    compile_library(lib_dir / CLIENT_SO_NAME, CLIENT_SOURCES, ["-DQP_CLIENT_SO"])
    lib = compile_library(lib_dir / LIB_NAME)
    for old in lib_dir.glob(f"*/**/{LIB_NAME}"):  # a layout from another machine's loader
        old.unlink()
    dst = probe_dst_lib(lib)
    if dst is None:  # LD_PRELOAD then names the library directly
        return lib
    main = lib_dir / dst / LIB_NAME
    main.parent.mkdir(parents=True, exist_ok=True)
    tmp = main.with_name(f".{LIB_NAME}.tmp")
    shutil.copyfile(lib, tmp)
    os.replace(tmp, main)
    if platform.machine() in ("x86_64", "amd64"):
        with tempfile.TemporaryDirectory() as t:
            stub = Path(t) / LIB_NAME
            try:
                compile_library(stub, [HERE / "stub32.c"], ["-m32", "-nostdlib"])
            except RuntimeError:
                stub = None  # the compiler cannot emit 32-bit code: 32-bit programs will warn
            for cand in LIB32_CANDIDATES:
                if stub is None or cand == dst:
                    continue
                target = lib_dir / cand / LIB_NAME
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(stub, target)
    return lib


if __name__ == "__main__":
    import sys

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parent / "qpod_engine" / "_lib"
    print(build(out))
