"""qpod completion: the shell code argcomplete generates from qpod's own parser, exercised by bash
itself (``complete -p``, then the completion function driven as bash drives it on Tab)."""

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import REPO_ROOT, run_qpod

# What bash does on Tab: COMP_LINE/COMP_POINT/COMP_WORDS/COMP_CWORD set, then the function that
# 'complete -F' named is called with the command, the word being completed and the one before.
DRIVER = r"""
eval "$(qpod completion bash)" || exit 90
complete -p qpod qpod-shell
tab() {
    COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}
    read -ra COMP_WORDS <<< "$COMP_LINE"
    [[ "$COMP_LINE" == *" " ]] && COMP_WORDS+=("")
    COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
    COMPREPLY=()
    local fn; fn=$(complete -p "${COMP_WORDS[0]}" | sed -n 's/.* -F \([^ ]*\) .*/\1/p')
    "$fn" "${COMP_WORDS[0]}" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
    echo "$1|$(printf '%s\n' "${COMPREPLY[@]}" | sed 's/ *$//' | sort | paste -sd, -)"
}
while IFS= read -r line; do tab "$line"; done
"""


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """``qpod`` and ``qpod-shell`` on PATH, running this checkout."""
    d = tmp_path / "bin"
    d.mkdir()
    for name, module in (("qpod", "qpod_engine.cli"), ("qpod-shell", "qpod_engine.cli.shell")):
        (d / name).write_text(f'#!/bin/sh\nPYTHONPATH={REPO_ROOT} exec {sys.executable} -m {module} "$@"\n')
        (d / name).chmod(0o755)
    return d


@pytest.fixture
def tab(qpod_home: Path, bin_dir: Path) -> Callable[..., dict[str, list[str]]]:
    def run(*lines: str) -> dict[str, list[str]]:
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
        r = subprocess.run(
            ["bash", "--norc", "--noprofile", "-c", DRIVER],
            input="".join(f"{x}\n" for x in lines),
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr
        out = r.stdout.splitlines()
        assert out[0] == "complete -o bashdefault -o default -o nospace -F _python_argcomplete qpod", out
        assert out[1].endswith(" qpod-shell")
        got = {}
        for row in out[2:]:
            line, _, cands = row.rpartition("|")
            got[line] = cands.split(",") if cands else []
        return got

    return run


def test_bash_completes_every_subcommand_and_option(tab: Callable[..., dict[str, list[str]]]) -> None:
    got = tab(
        "qpod ",
        "qpod e",
        "qpod env ",
        "qpod env add x --",
        "qpod log --",
        "qpod completion ",
        "qpod stop --",
        "qpod-shell -",
    )
    assert {
        "env",
        "init",
        "unbind",
        "status",
        "repos",
        "which",
        "exec",
        "ps",
        "stop",
        "log",
        "doctor",
        "demo",
        "completion",
        "tui",
    } <= set(got["qpod "])
    assert got["qpod e"] == ["env", "exec"]
    assert got["qpod env "] == ["--help", "-h", "add", "list", "rm", "set", "show"]
    assert {
        "--image",
        "--mount",
        "--share",
        "--env",
        "--command",
        "--workdir-root",
        "--cap-add",
        "--seccomp",
        "--run-as",
        "--ulimit",
        "--podman-options",
        "--replace",
    } <= set(got["qpod env add x --"])
    assert {"--follow", "--repo", "--env", "--failed", "--json"} <= set(got["qpod log --"])
    assert set(got["qpod completion "]) == {"-h", "--help", "bash", "fish", "zsh"}
    assert "--all" in got["qpod stop --"]
    assert {"--shell", "-c"} <= set(got["qpod-shell -"])


def test_bash_completes_environments_and_repositories_from_the_config(
    tab: Callable[..., dict[str, list[str]]], make_repo: Callable[..., Path]
) -> None:
    for name in ("debian11", "centos7-gcc48", "centos7-gcc10"):
        assert run_qpod("env", "add", name, "--image", "localhost/none:1").returncode == 0
    repo = make_repo("legacy")
    assert run_qpod("init", "debian11", cwd=repo).returncode == 0
    got = tab(
        "qpod init ",
        "qpod init c",
        "qpod env show centos7-gcc4",
        "qpod exec --env d",
        "qpod log --env ",
        "qpod stop ",
        "qpod env rm d",
        f"qpod log --repo {str(repo)[:-3]}",
    )
    assert set(got["qpod init "]) >= {"debian11", "centos7-gcc48", "centos7-gcc10"}
    assert got["qpod init c"] == ["centos7-gcc10", "centos7-gcc48"]
    assert got["qpod env show centos7-gcc4"] == ["centos7-gcc48"]
    assert got["qpod exec --env d"] == ["debian11"]
    assert got["qpod log --env "] == ["centos7-gcc10", "centos7-gcc48", "debian11"]
    assert set(got["qpod stop "]) >= {"centos7-gcc10", "centos7-gcc48", "debian11"}
    assert got["qpod env rm d"] == ["debian11"]
    assert got[f"qpod log --repo {str(repo)[:-3]}"] == [str(repo)]


def test_completion_with_a_broken_config_still_completes_names(
    tab: Callable[..., dict[str, list[str]]], qpod_home: Path
) -> None:
    envs = qpod_home / "config" / "environments"
    envs.mkdir(parents=True)
    (envs / "half-written.yaml").write_text("image: [\n")
    (qpod_home / "config" / "repositories.yaml").write_text("repositories: {\n")
    got = tab("qpod init h", "qpod log --repo /")
    assert got["qpod init h"] == ["half-written"]
    assert got["qpod log --repo /"] == []  # nothing to offer, and no traceback in the terminal


def test_zsh_and_fish_code(bin_dir: Path, qpod_home: Path) -> None:
    zsh = run_qpod("completion", "zsh")
    assert zsh.returncode == 0 and zsh.stdout.startswith("#compdef qpod qpod-shell\n")
    assert "compdef _python_argcomplete qpod qpod-shell" in zsh.stdout
    fish = run_qpod("completion", "fish")
    assert fish.returncode == 0 and "complete --command qpod " in fish.stdout and "qpod-shell" in fish.stdout
    if shutil.which("zsh"):
        script = 'autoload -U compinit && compinit -u; eval "$(qpod completion zsh)" && print -r -- ok:$_comps[qpod]'
        r = subprocess.run(
            ["zsh", "-f", "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "ZDOTDIR": str(qpod_home)},
        )
        assert r.returncode == 0 and r.stdout.strip() == "ok:_python_argcomplete", r.stdout + r.stderr
    bad = run_qpod("completion", "tcsh")
    assert bad.returncode == 2 and "invalid choice: 'tcsh'" in bad.stderr
