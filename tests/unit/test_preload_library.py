"""The preload library: every hooked entry point routes exactly the right launches.

The rules' launcher line points at a recording stub (a legitimate test of the library's routing
and its argv/env contract); the real launcher and podman: tests/e2e/test_preload_in_a_container.py.
The library is compiled from the current source into a temp dir, with the same layout
``pip install .`` makes (conftest's ``built``).
"""

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from preload_driver import CHDIR_ENTRIES, ENTRIES, HOST_PATH, Built, build_module, skip_missing

from qpod_engine.config.rules import read_rules, seal_rules
from qpod_engine.routing import policy, preload_lib


class Sandbox:
    """A watched repository, a directory outside it, a rules file and a recording launcher."""

    def __init__(self, base: Path, built: Built) -> None:
        self.base, self.built = base, built
        self.repo, self.outside = base / "repo", base / "elsewhere"
        for d, who in ((self.repo, "repo"), (self.outside, "outside")):
            d.mkdir()
            (d / "Makefile").write_text(f"all:\n\t@echo make-on-host-{who}\n")
        self.rules_file = base / "rules"
        self.record = base / "launches.jsonl"
        self.stub = base / "stub_launcher.py"
        self.stub.write_text(
            textwrap.dedent(f"""\
            import json, os, sys
            keep = ("LD_PRELOAD", "QPOD_", "PATH", "OTHER")
            env = {{k: v for k, v in os.environ.items() if k.startswith(keep)}}
            with open({str(self.record)!r}, "a") as f:
                f.write(json.dumps({{"argv": sys.argv[1:], "env": env, "cwd": os.getcwd()}}) + "\\n")
            if "STUB_HOST_ROOT" in os.environ:  # like the launcher deciding "host"
                path, argv = sys.argv[2], sys.argv[5:]
                os.execve(path, argv, {{**os.environ, "QPOD_HOST_ROOT": os.environ["STUB_HOST_ROOT"]}})
            print("STUB-LAUNCHED")
            """)
        )
        self.write_rules([(str(self.repo), ["make", "waf", "gdb"])])

    def launcher(self) -> list[str]:
        return [sys.executable, "-S", str(self.stub)]

    def write_rules(
        self, roots: list[tuple[str, list[str]]], launcher: list[str] | None = None, header: str = "qpod-rules\t1"
    ) -> None:
        lines = [header, "\t".join(["launcher", *(launcher or self.launcher())])]
        lines += ["\t".join(["root", root, *names]) for root, names in roots]
        tmp = self.rules_file.with_name(f".rules.{uuid.uuid4().hex}")
        tmp.write_text(seal_rules("\n".join(lines) + "\n"))
        os.replace(tmp, self.rules_file)  # as the engine writes it

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "PATH": HOST_PATH,
            "HOME": str(self.base),
            "LANG": "C",
            "LD_PRELOAD": self.built.entry,
            "QPOD_PRELOAD": str(self.built.lib),
            "QPOD_RULES": str(self.rules_file),
            "QPOD_SHELL": "1",
            **extra,
        }

    def run(
        self, args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, cwd=cwd, env=env or self.env(), capture_output=True, text=True, timeout=timeout)

    def driver(self, entry: str, *argv: str, cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
        return self.run([str(self.built.driver), entry, *argv], cwd, self.env(**extra))

    def sh(self, script: str, cwd: Path, shell: str = "bash", **extra: str) -> subprocess.CompletedProcess[str]:
        return self.run([shell, "-c", script], cwd, self.env(**extra))

    def launches(self) -> list[dict]:
        if not self.record.exists():
            return []
        recs = [json.loads(x) for x in self.record.read_text().splitlines()]
        self.record.unlink()
        return recs


@pytest.fixture
def sb(tmp_path: Path, built: Built) -> Sandbox:
    return Sandbox(tmp_path, built)


MAKE = shutil.which("make", path=HOST_PATH)


# ---- every entry point -------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ENTRIES)
def test_make_in_watched_repo_goes_to_the_launcher(sb: Sandbox, entry: str) -> None:
    r = sb.driver(entry, "make", "-s", "all", cwd=sb.repo)
    skip_missing(r, entry)
    assert r.returncode == 0, r.stderr
    assert "STUB-LAUNCHED" in r.stdout and "make-on-host" not in r.stdout
    (rec,) = sb.launches()
    assert rec["argv"] == ["--shim", MAKE, str(sb.repo), "--", "make", "-s", "all"]
    # the launcher sees the qpod variables, put back where the caller dropped them
    assert rec["env"]["LD_PRELOAD"] == sb.built.entry
    assert rec["env"]["QPOD_RULES"] == str(sb.rules_file)
    assert rec["env"]["QPOD_PRELOAD"] == str(sb.built.lib)
    assert r.stderr == ""


@pytest.mark.parametrize("entry", ENTRIES)
def test_make_outside_runs_on_the_host(sb: Sandbox, entry: str) -> None:
    r = sb.driver(entry, "make", "-s", cwd=sb.outside)
    skip_missing(r, entry)
    assert (r.returncode, r.stdout.strip(), r.stderr) == (0, "make-on-host-outside", "")
    assert sb.launches() == []


@pytest.mark.parametrize("entry", CHDIR_ENTRIES)
def test_spawn_file_actions_chdir_decides_the_cwd(sb: Sandbox, entry: str) -> None:
    r = sb.driver(entry, "make", "-s", cwd=sb.outside, DRIVER_CHDIR=str(sb.repo))
    assert "STUB-LAUNCHED" in r.stdout, r.stderr
    assert sb.launches()[0]["argv"][:4] == ["--shim", MAKE, str(sb.repo), "--"]
    # relative, through "..": the same normalised directory
    sb.driver(entry, "make", "-s", cwd=sb.outside, DRIVER_CHDIR="../repo/.")
    assert sb.launches()[0]["argv"][2] == str(sb.repo)
    # and the reverse: started in the repository, running elsewhere
    r = sb.driver(entry, "make", "-s", cwd=sb.repo, DRIVER_CHDIR=str(sb.outside))
    assert r.stdout.strip() == "make-on-host-outside" and sb.launches() == []


# ---- what is routed ----------------------------------------------------------------------------


def test_program_inside_the_repo_is_routed_whatever_its_name(sb: Sandbox) -> None:
    tool = sb.repo / "tools" / "prog"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\necho prog-on-host\n")
    tool.chmod(0o755)
    r = sb.sh("./tools/prog a 'b c'", cwd=sb.repo)
    assert "STUB-LAUNCHED" in r.stdout
    assert sb.launches()[0]["argv"] == ["--shim", str(tool), str(sb.repo), "--", "./tools/prog", "a", "b c"]
    # from anywhere, by its path: the program's own repository decides, the cwd is kept
    r = sb.sh(f"{tool} x", cwd=sb.outside)
    assert "STUB-LAUNCHED" in r.stdout
    assert sb.launches()[0]["argv"] == ["--shim", str(tool), str(sb.outside), "--", str(tool), "x"]
    r = sb.sh("../repo/tools/../tools/prog", cwd=sb.outside)
    assert sb.launches()[0]["argv"][1] == str(tool)


def test_host_commands_in_the_repo_never_reach_the_launcher(sb: Sandbox) -> None:
    r = sb.sh("ls >/dev/null && cat Makefile | head -1 && true && printf ok", cwd=sb.repo)
    assert (r.returncode, r.stdout.splitlines()[-1], r.stderr) == (0, "ok", "")
    assert sb.launches() == []


def test_argv0_and_arguments_are_kept_apart_from_the_path(sb: Sandbox) -> None:
    r = sb.sh("exec -a fancy-make make '' 'two words' \"\\$HOME\"", cwd=sb.repo)
    assert "STUB-LAUNCHED" in r.stdout
    assert sb.launches()[0]["argv"] == ["--shim", MAKE, str(sb.repo), "--", "fancy-make", "", "two words", "$HOME"]


@pytest.mark.parametrize("named", ["directly", "through $LIB"])
def test_env_i_and_other_preloads(tmp_path: Path, built: Built, named: str) -> None:
    """Both ways LD_PRELOAD may name the library (preload_lib.entries: $LIB only where programs of
    another ELF class can run) are recognised and put back as they were."""
    own, any_class = preload_lib.entries(built.lib.parent)
    if named == "through $LIB" and "$LIB" not in any_class:
        pytest.skip("the build found no directory where this loader expands $LIB")
    built = replace(built, entry=own if named == "directly" else any_class)
    sb = Sandbox(tmp_path, built)
    other, other2 = sb.base / "libother.so", sb.base / "libother2.so"
    build_module().compile_empty(other)
    shutil.copy(other, other2)
    r = sb.sh("env -i PATH=/usr/bin:/bin make -s", cwd=sb.repo)
    assert "STUB-LAUNCHED" in r.stdout, r.stderr
    env = sb.launches()[0]["env"]
    assert env["LD_PRELOAD"] == built.entry and env["QPOD_RULES"] == str(sb.rules_file)
    # a program that set its own LD_PRELOAD: ours goes first, the others keep their order
    r = sb.sh(f"env -i PATH=/usr/bin:/bin LD_PRELOAD='{other} {other2}' OTHER=1 make -s", cwd=sb.repo)
    assert "STUB-LAUNCHED" in r.stdout
    env = sb.launches()[0]["env"]
    assert env["LD_PRELOAD"] == f"{built.entry}:{other} {other2}" and env["OTHER"] == "1"
    # both libraries preloaded from the start: left exactly as they are
    r = sb.sh("make -s", cwd=sb.repo, LD_PRELOAD=f"{other}:{built.entry}")
    assert sb.launches()[0]["env"]["LD_PRELOAD"] == f"{other}:{built.entry}"
    # host programs get them back too, so their children are still seen
    r = sb.sh("env -i PATH=/usr/bin:/bin /usr/bin/env", cwd=sb.outside)
    assert f"LD_PRELOAD={built.entry}" in r.stdout.splitlines()
    assert f"QPOD_RULES={sb.rules_file}" in r.stdout.splitlines()


def test_qpod_off_passes_through_untouched(sb: Sandbox) -> None:
    r = sb.sh("env -i QPOD_OFF=1 PATH=/usr/bin:/bin /usr/bin/env", cwd=sb.repo)
    assert sorted(r.stdout.split()) == ["PATH=/usr/bin:/bin", "QPOD_OFF=1"]
    r = sb.sh("make -s", cwd=sb.repo, QPOD_OFF="1")
    assert r.stdout.strip() == "make-on-host-repo" and sb.launches() == []


def test_launches_sent_back_to_the_host_are_not_redirected_again(sb: Sandbox) -> None:
    inner = sb.repo / "sub"
    inner.mkdir()
    (inner / "Makefile").write_text("all:\n\t@echo make-on-host-inner\n")
    r = sb.sh("make -s", cwd=sb.repo, QPOD_HOST_ROOT=str(sb.repo))
    assert r.stdout.strip() == "make-on-host-repo" and sb.launches() == []
    r = sb.sh("make -s", cwd=sb.repo, QPOD_HOST_ROOT=str(sb.outside))
    assert "STUB-LAUNCHED" in r.stdout and len(sb.launches()) == 1
    # nested repository bound on its own: a host run of the outer one does not cover it
    sb.write_rules([(str(sb.repo), ["make"]), (str(inner), ["make"])])
    r = sb.sh("make -s", cwd=inner, QPOD_HOST_ROOT=str(sb.repo))
    assert "STUB-LAUNCHED" in r.stdout
    assert sb.launches()[0]["argv"][2] == str(inner)


def test_the_launchers_own_host_exec_never_loops(sb: Sandbox) -> None:
    """Even when the launcher names another root in QPOD_HOST_ROOT than the one the library
    matched, its exec of the program itself is not redirected again."""
    r = sb.run(["bash", "-c", "make -s"], sb.repo, sb.env(STUB_HOST_ROOT="/somewhere/else"), timeout=30)
    assert (r.returncode, r.stdout.strip(), r.stderr) == (0, "make-on-host-repo", "")
    assert len(sb.launches()) == 1
    # the program's children are judged again (their launch is not the launcher's own)
    sb.write_rules([(str(sb.repo), ["make", "sh"])])
    (sb.repo / "Makefile").write_text("all:\n\t@sh -c 'echo child'\n")
    r = sb.run(["bash", "-c", "make -s"], sb.repo, sb.env(STUB_HOST_ROOT=str(sb.repo)), timeout=30)
    assert r.stdout.strip() == "child" and len(sb.launches()) == 1
    r = sb.run(["bash", "-c", "make -s"], sb.repo, sb.env(STUB_HOST_ROOT="/elsewhere"), timeout=30)
    assert r.stdout.strip() == "child" and len(sb.launches()) == 2


def test_innermost_root_wins(sb: Sandbox) -> None:
    inner = sb.repo / "vendor" / "lib"
    inner.mkdir(parents=True)
    (inner / "Makefile").write_text("all:\n\t@echo make-on-host-inner\n")
    prog = inner / "tool"
    prog.write_text("#!/bin/sh\necho tool-on-host\n")
    prog.chmod(0o755)
    sb.write_rules([(str(inner), ["gdb"]), (str(sb.repo), ["make"])])
    assert sb.sh("make -s", cwd=inner).stdout.strip() == "make-on-host-inner"  # not on the inner list
    assert "STUB-LAUNCHED" in sb.sh("make -s", cwd=sb.repo / "vendor").stdout
    sb.launches()
    assert "STUB-LAUNCHED" in sb.sh(str(prog), cwd=sb.outside).stdout
    assert sb.launches()[0]["argv"][1] == str(prog)
    # the root "/" watches everything (policy.is_within treats it so)
    sb.write_rules([("/", ["make"])])
    assert "STUB-LAUNCHED" in sb.sh("make -s", cwd=sb.outside).stdout


# ---- failures look native ----------------------------------------------------------------------


def test_missing_and_non_executable_commands_fail_as_usual(sb: Sandbox) -> None:
    sb.write_rules([(str(sb.repo), ["make", "qpod-no-such-tool"])])
    r = sb.sh("qpod-no-such-tool; echo status=$?", cwd=sb.repo)
    assert "command not found" in r.stderr and "status=127" in r.stdout
    for entry in ("execvp", "execlp", "execve"):
        r = sb.driver(entry, "qpod-no-such-tool", cwd=sb.repo)
        assert r.returncode == 127 and "errno 2 " in r.stderr, (entry, r.stderr)
    r = sb.driver("posix_spawnp", "qpod-no-such-tool", cwd=sb.repo)  # the error is the return value
    assert r.returncode == 127 and "posix_spawnp returned: errno 2 " in r.stderr
    noexec = sb.repo / "script"
    noexec.write_text("#!/bin/sh\necho ran\n")
    r = sb.sh("./script; echo status=$?", cwd=sb.repo)
    assert "Permission denied" in r.stderr and "status=126" in r.stdout
    r = sb.driver("execve", "./script", cwd=sb.repo)
    assert "errno 13 " in r.stderr
    r = sb.driver("posix_spawn", str(sb.repo), cwd=sb.repo)  # a directory
    assert "errno 13 " in r.stderr
    assert sb.launches() == []


def test_launcher_that_cannot_start_says_so(sb: Sandbox) -> None:
    sb.write_rules([(str(sb.repo), ["make"])], launcher=["/nonexistent/python3", "-S", "/x/launch.py"])
    r = sb.sh("make; echo status=$?", cwd=sb.repo)
    assert "qpod: cannot start the launcher /nonexistent/python3 for " + MAKE in r.stderr
    assert "status=127" in r.stdout
    r = sb.driver("posix_spawn", "make", cwd=sb.repo)
    assert "qpod: cannot start the launcher" in r.stderr and r.returncode == 127


@pytest.mark.parametrize("rules", ["missing", "wrong-version", "no-launcher", "garbage"])
def test_without_usable_rules_everything_runs_on_the_host_silently(sb: Sandbox, rules: str) -> None:
    if rules == "missing":
        sb.rules_file.unlink()
    elif rules == "wrong-version":
        sb.write_rules([(str(sb.repo), ["make"])], header="qpod-rules\t2")
    elif rules == "no-launcher":
        sb.rules_file.write_text(f"qpod-rules\t1\nroot\t{sb.repo}\tmake\n")
    else:
        sb.rules_file.write_bytes(os.urandom(5000))
    for entry in ("execve", "posix_spawnp", "system"):
        r = sb.driver(entry, "make", "-s", cwd=sb.repo)
        assert (r.returncode, r.stdout.strip(), r.stderr) == (0, "make-on-host-repo", "")
    assert sb.launches() == []


def test_rules_changes_reach_a_long_lived_process(sb: Sandbox) -> None:
    """The cache follows the file (inode, size, mtime); Python's subprocess uses vfork, so the
    cache is filled in the vfork child, in the parent's memory."""
    script = textwrap.dedent(f"""\
        import os, subprocess, sys, uuid
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from qpod_engine.config.rules import seal_rules as seal
        def rules(roots):
            tmp = {str(sb.base)!r} + "/.r" + uuid.uuid4().hex
            with open(tmp, "w") as f:
                f.write(seal("qpod-rules\\t1\\nlauncher\\t" + "\\t".join({sb.launcher()!r}) + "\\n" + roots))
            os.replace(tmp, {str(sb.rules_file)!r})
        out = []
        for roots in ["root\\t{sb.repo}\\tmake\\n", "", "root\\t{sb.repo}\\tmake\\n", "root\\t{sb.repo}\\n"]:
            rules(roots)
            out.append(subprocess.run(["make", "-s"], capture_output=True, text=True).stdout.strip())
        print(" ".join(out))
        """)
    r = sb.run([sys.executable, "-c", script], sb.repo)
    assert r.stdout.split() == ["STUB-LAUNCHED", "make-on-host-repo", "STUB-LAUNCHED", "make-on-host-repo"], r.stderr


def test_threads_spawning_while_the_rules_change(sb: Sandbox) -> None:
    """8 threads x 40 posix_spawnp while another process keeps replacing the rules file."""
    stop = sb.base / "stop"
    flip = textwrap.dedent(f"""\
        import os, sys, time
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from qpod_engine.config.rules import seal_rules as seal
        a = "qpod-rules\\t1\\nlauncher\\t/bin/true\\nroot\\t{sb.repo}\\ttrue\\n"
        b = "qpod-rules\\t1\\nlauncher\\t/bin/true\\n" + "root\\t/x\\tmake\\n" * 300
        i = 0
        while not os.path.exists({str(stop)!r}) and i < 100000:
            tmp = {str(sb.base)!r} + "/.flip"
            with open(tmp, "w") as f:
                f.write(seal(a) if i % 2 else seal(b))
            os.replace(tmp, {str(sb.rules_file)!r})
            i += 1
        """)
    flipper = subprocess.Popen([sys.executable, "-c", flip])
    try:
        r = sb.driver("threads", "true", cwd=sb.repo)
    finally:
        stop.touch()
        flipper.wait(timeout=60)
    assert (r.returncode, r.stdout.strip(), r.stderr) == (0, "threads: 0 failures", "")


# ---- programs the loader does not preload into -------------------------------------------------


HELLO_32 = textwrap.dedent("""\
    static const char msg[] = "static-ok\\n";
    void _start(void) {
        __asm__ volatile("int $0x80" :: "a"(4), "b"(1), "c"(msg), "d"(sizeof(msg) - 1));
        __asm__ volatile("int $0x80" :: "a"(1), "b"(0));
    }
    """)  # 32-bit x86 with raw system calls: needs no 32-bit libc
LOADER_32 = "/lib/ld-linux.so.2"


def _compile(sb: Sandbox, out: str, source: str, *flags: str) -> Path | None:
    """``source`` compiled to sb.base/out, or None with the compiler's complaint printed."""
    src = sb.base / f"{out}.c"
    src.write_text(source)
    r = subprocess.run(
        [*sb.built.cc, *flags, "-O1", "-o", str(sb.base / out), str(src)], capture_output=True, text=True
    )
    if r.returncode != 0:
        print(r.stderr)
        return None
    return sb.base / out


def _runs_normally(sb: Sandbox, prog: Path) -> None:
    for cwd in (sb.repo, sb.outside):
        r = sb.sh(f"{prog}; echo status=$?", cwd=cwd)
        assert (r.stdout.split(), r.stderr) == (["static-ok", "status=0"], ""), prog


def test_static_programs_run_normally(sb: Sandbox) -> None:
    """The loader preloads nothing into a static program: it runs as it would without qpod."""
    prog = _compile(
        sb, "hello-static", '#include <stdio.h>\nint main(void) { puts("static-ok"); return 0; }\n', "-static"
    )
    assert prog is not None, "could not build a static test program"
    _runs_normally(sb, prog)


def test_32bit_programs_run_normally_and_find_the_32bit_stub(sb: Sandbox) -> None:
    """A 32-bit static program runs as natively; a dynamic one finds the empty 32-bit stub the
    build installs where the loader expands $LIB (no "cannot be preloaded" warning)."""
    prog = _compile(sb, "hello-32", HELLO_32, "-m32", "-static", "-nostdlib", "-fno-pic", "-no-pie")
    if prog is None:
        pytest.skip("the C compiler cannot build 32-bit programs here (gcc-multilib): 32-bit is not checked")
    _runs_normally(sb, prog)
    if not os.path.exists(LOADER_32):
        pytest.skip(
            f"no 32-bit loader ({LOADER_32}, libc6:i386): no dynamic 32-bit program can run here, so the "
            "32-bit stub is not checked (the static 32-bit program above ran normally)"
        )
    dyn = _compile(
        sb, "hello-32-dynamic", HELLO_32, "-m32", "-nostdlib", "-fpie", "-pie", f"-Wl,--dynamic-linker={LOADER_32}"
    )
    assert dyn is not None, "a 32-bit loader is here but a dynamic 32-bit program does not link"
    r = sb.sh(f"{dyn}; echo status=$?", cwd=sb.outside)
    assert (r.stdout.split(), r.stderr) == (["static-ok", "status=0"], "")  # it found the 32-bit stub
    if "$LIB" in sb.built.entry:  # naming the 64-bit file directly is what would warn
        r = sb.sh(str(dyn), cwd=sb.outside, LD_PRELOAD=str(sb.built.lib))
        assert "cannot be preloaded" in r.stderr


@pytest.mark.rootless  # runs a program as nobody
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_setuid_program_runs_normally(built: Built) -> None:
    # a directory an unprivileged user can reach (pytest's tmp dirs are private to root)
    d = Path("/tmp") / f"qpod-suid-{uuid.uuid4().hex[:8]}"
    d.mkdir(mode=0o755)
    try:
        prog = d / "id"
        shutil.copy("/usr/bin/id", prog)
        prog.chmod(0o4755 | stat.S_IXUSR)
        env = {"PATH": HOST_PATH, "LD_PRELOAD": built.entry, "QPOD_PRELOAD": str(built.lib)}
        r = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(prog), "-u"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert (r.returncode, r.stdout.strip(), r.stderr) == (0, "0", "")  # euid root: the setuid bit worked
    finally:
        shutil.rmtree(d)


# ---- one source of truth: the C decision, shim_root() and the policy agree ------------------------


def test_c_decision_agrees_with_the_policy(sb: Sandbox, tmp_path: Path) -> None:
    from qpod_engine.config import snapshot
    from qpod_engine.config.snapshot import Target
    from qpod_engine.routing.policy import decide

    a = tmp_path / "a"
    b = a / "third_party" / "b"
    c = tmp_path / "c"
    bindir = tmp_path / "hostbin"
    for d in (a / "src", b / "src", c, bindir, a / ".git" / "hooks", b / ".git" / "hooks"):
        d.mkdir(parents=True, exist_ok=True)
    for d, names in (
        (bindir, ["make", "waf", "gdb", "true"]),
        (a / "src", ["gen"]),
        (b, ["tool"]),
        (c, ["run"]),
        (a / ".git" / "hooks", ["pre-commit"]),
        (b / ".git" / "hooks", ["post-checkout"]),
    ):
        for n in names:
            (d / n).write_text("#!/bin/sh\necho host-$0\n")
            (d / n).chmod(0o755)
    snap = {
        "repos": [
            {"root": str(a), "environment": "e1", "branches": []},
            {"root": str(b), "environment": "e2", "branches": []},
            {"root": str(c), "environment": None, "branches": [("release/*", "e1")]},
        ],
        "envs": {"e1": {"commands": ["make", "gdb"]}, "e2": {"commands": ["waf"]}},
    }
    text = "".join(f"{ln}\n" for ln in snapshot.rules_text(snap).splitlines() if ln.startswith("root\t"))
    sb.rules_file.write_text(seal_rules(f"qpod-rules\t1\nlauncher\t{chr(9).join(sb.launcher())}\n{text}"))
    rules = read_rules(sb.rules_file)
    assert rules is not None and len(rules.roots) == 3
    # C knows no branches: c is routed on any branch, the launcher says "host" off release/*
    targets = [
        Target(str(a), "e1", ("make", "gdb"), ""),
        Target(str(b), "e2", ("waf",), ""),
        Target(str(c), None, (), "bound only for branches release/*"),
    ]
    # git's own hooks are git's: never the repository's programs (b is nested in a); a link to a
    # host program (a venv's bin/python3) is the host's, a link within the repositories is theirs
    (a / ".venv" / "bin").mkdir(parents=True)
    (a / ".venv" / "bin" / "python3").symlink_to(bindir / "true")
    (a / "src" / "alias").symlink_to("gen")
    (c / "to-b").symlink_to(b / "tool")
    programs = [bindir / n for n in ("make", "waf", "gdb", "true")] + [
        a / "src/gen",
        b / "tool",
        c / "run",
        a / ".git/hooks/pre-commit",
        b / ".git/hooks/post-checkout",
        a / ".venv/bin/python3",
        a / "src/alias",
        c / "to-b",
    ]
    cwds = [a, a / "src", b, b / "src", c, tmp_path]
    for cwd in cwds:
        for prog in programs:
            r = sb.driver("execve", str(prog), cwd=cwd)
            redirected = "STUB-LAUNCHED" in r.stdout
            assert redirected == (preload_lib.shim_root(str(prog), str(cwd), rules.roots) is not None), (prog, cwd)
            d = decide(str(prog), [str(prog)], str(cwd), targets)
            if d.in_container:
                assert redirected, (prog, cwd, d.reason)
            if not redirected:
                assert not d.in_container and f"host-{prog}" in r.stdout
                continue
            # the root the launcher names when it sends this launch back is the one the library matched
            back = policy.redirected_root(str(prog), str(cwd), [root for root, _ in rules.roots])
            assert back is not None
            r = sb.driver("execve", str(prog), cwd=cwd, QPOD_HOST_ROOT=back)
            assert f"host-{prog}" in r.stdout, (prog, cwd, back)
    # an interpreter's script decides where it runs (python3 ./waf), as the policy says
    for d, names in ((bindir, ["python3", "sh", "perl5.36"]),):
        for n in names:
            (d / n).write_text("#!/bin/sh\necho host-$0\n")
            (d / n).chmod(0o755)
    launches = [
        [bindir / "python3", "src/gen"],
        [bindir / "python3", "-u", str(b / "tool")],
        [bindir / "python3", "-c", "print()", "src/gen"],
        [bindir / "sh", "-e", "./tool"],
        [bindir / "sh", "-ec", "true", "./tool"],
        [bindir / "perl5.36", "--", "run"],
        [bindir / "sh", "no-such-script"],
        [bindir / "python3", str(a / ".git/hooks/pre-commit")],
        [a / ".venv/bin/python3", str(a / "src/gen")],
    ]
    scripts_routed = 0
    for cwd in cwds:
        for prog, *args in launches:
            r = sb.driver("execve", str(prog), *map(str, args), cwd=cwd)
            redirected = "STUB-LAUNCHED" in r.stdout
            scripts_routed += redirected
            argv = [str(prog), *map(str, args)]
            assert redirected == (preload_lib.shim_root(str(prog), str(cwd), rules.roots, argv) is not None), (
                argv,
                cwd,
            )
            d = decide(str(prog), argv, str(cwd), targets)
            assert redirected or not d.in_container, (argv, cwd, d.reason)
            if redirected:
                back = policy.redirected_root(str(prog), str(cwd), [root for root, _ in rules.roots], argv)
                assert back is not None
                r = sb.driver("execve", str(prog), *map(str, args), cwd=cwd, QPOD_HOST_ROOT=back)
                assert f"host-{prog}" in r.stdout, (argv, cwd, back)
    assert scripts_routed >= 6  # python3 src/gen from a, python3 -u b/tool from anywhere, sh -e ./tool from b
    sb.launches()


# ---- the installed library and the doctor ------------------------------------------------------


def test_installed_library_and_doctor_checks(qpod_home: Path) -> None:
    lib = preload_lib.library_path()
    if not lib.is_file():
        pytest.skip("qpod is not installed with its library (pip install -e .)")
    from qpod_engine.config import snapshot

    problems = preload_lib.check()
    assert any("rules file" in p and "missing" in p for p in problems), problems
    snapshot.load()
    assert preload_lib.check() == []
    rules = Path(os.environ["QPOD_STATE_DIR"]) / "rules"
    rules.write_bytes(rules.read_bytes())  # rewritten since: not the rules the snapshot names
    assert any("not the one the snapshot was compiled with" in p for p in preload_lib.check())


def test_installed_library_exports_every_hook() -> None:
    lib = preload_lib.library_path()
    if not lib.is_file():
        pytest.skip("qpod is not installed with its library (pip install -e .)")
    import ctypes

    handle = ctypes.CDLL(str(lib))
    assert [n for n in preload_lib.HOOKS if not hasattr(handle, n)] == []
