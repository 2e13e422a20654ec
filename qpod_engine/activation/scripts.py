"""The per-user activation files, written with this install's paths by ``qpod activate`` into
``<config>/activation/``: ``session.sh`` exports the library and qpod's variables (sourced by
the systemd user environment generator, or by ``~/.xsessionrc`` where there is no systemd), and
one hook per shell makes an interactive shell a qpod shell by starting the same shell again with
them. Every file does nothing, silently, when the library is gone (qpod moved or removed: no
ld.so "cannot be preloaded" line), in a container (the home is shared with it), under
``QPOD_OFF=1``, or when the process already carries the library (never a loop, never nested)."""

import shlex
from dataclasses import dataclass

from qpod_engine.routing import preload_lib

GENERATOR_NAME = "60-qpod"


@dataclass(frozen=True)
class Values:
    """What the files export: the library (a real file), its LD_PRELOAD entries (its own path,
    and the one with ``$LIB`` left for the loader to expand, chosen at each start: the second
    only when a loader of another ELF class is installed, ``preload_lib.entries``) and the
    variables qpod-shell gives its shell."""

    library: str
    entry: str
    entry_any_class: str
    rules: str
    config_dir: str
    state_dir: str
    loaders: tuple[str, ...]  # any of them present: entry_any_class

    def exports(self) -> list[tuple[str, str]]:
        return [
            ("QPOD_PRELOAD", self.library),
            ("QPOD_RULES", self.rules),
            ("QPOD_CONFIG_DIR", self.config_dir),
            ("QPOD_STATE_DIR", self.state_dir),
        ]


HEAD = "# qpod activation, written by 'qpod activate' for the qpod in {pkg}; 'qpod deactivate' removes it.\n"
OURS = f"*{preload_lib.LIB_NAME}*"
# not under QPOD_OFF=1 (the launcher's own commands), nor in a container (it shares the home)
USABLE = '[ "${QPOD_OFF-}" != 1 ] && [ ! -e /run/.containerenv ]'


def session_sh(v: Values, pkg: str) -> str:
    """Exports only (POSIX sh): LD_PRELOAD with the library first, once, then qpod's variables."""
    q = shlex.quote
    exports = " ".join(f"{k}={q(val)}" for k, val in v.exports())
    loaders = " ".join(q(p) for p in v.loaders)
    # the entries are single-quoted: $LIB must reach the loader as written
    return (
        HEAD.format(pkg=pkg)
        + "# Sourced by qpod's systemd user environment generator; in a session without systemd,\n"
        + "# source it from ~/.xsessionrc (X) or ~/.profile. Exports nothing when the library is gone.\n"
        + f"if [ -f {q(v.library)} ] && {USABLE}; then\n"
        + '  case ":${LD_PRELOAD-}:" in\n'
        + f"  {OURS}) ;;\n"
        + "  *)\n"
        + "    # through $LIB only where programs of another ELF class can start (it costs each program)\n"
        + f"    qpod_entry={q(v.entry)}\n"
        + f'    for qpod_l in {loaders}; do [ -e "$qpod_l" ] && qpod_entry={q(v.entry_any_class)}; done\n'
        + '    export LD_PRELOAD="$qpod_entry${LD_PRELOAD:+:$LD_PRELOAD}"\n'
        + "    unset qpod_entry qpod_l ;;\n"
        + "  esac\n"
        + f"  export {exports}\n"
        + "fi\n"
    )


def _again(v: Values, session: str, shell_test: str, restart: str) -> str:
    """A hook for sh-like shells: a shell that already carries the library only marks itself a
    qpod shell; else the session exports are taken and the same shell starts again with them."""
    q = shlex.quote
    return (
        f"if {shell_test} && [ -f {q(v.library)} ] && {USABLE}; then\n"
        f'  case ":${{LD_PRELOAD-}}:" in\n'
        f"  {OURS}) export QPOD_SHELL=1 ;;\n"
        f"  *)\n"
        f"    . {q(session)}\n"
        f'    case ":${{LD_PRELOAD-}}:" in {OURS}) export QPOD_SHELL=1; {restart} ;; esac\n'
        f"    ;;\n"
        f"  esac\n"
        f"fi\n"
    )


def bash_hook(v: Values, pkg: str, session: str) -> str:
    # parsed by sh too when the login file is ~/.profile: bash-only words run only under bash
    return (
        HEAD.format(pkg=pkg)
        + "# Sourced at the top of ~/.bashrc and of bash's login file: an interactive bash becomes a qpod shell.\n"
        + _again(
            v,
            session,
            '[ -n "${BASH_VERSION-}" ] && case $- in *i*) true ;; *) false ;; esac',
            'if shopt -q login_shell; then exec -l "$BASH"; else exec "$BASH"; fi',
        )
    )


def zsh_hook(v: Values, pkg: str, session: str) -> str:
    return (
        HEAD.format(pkg=pkg)
        + "# Sourced at the top of ~/.zshenv: an interactive zsh becomes a qpod shell.\n"
        + _again(
            v,
            session,
            "[[ -o interactive ]]",
            "if [[ -o login ]]; then exec -l ${${:-/proc/$$/exe}:A}; else exec ${${:-/proc/$$/exe}:A}; fi",
        )
    )


def _fish_quote(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def fish_hook(v: Values, pkg: str) -> str:
    f = _fish_quote
    sets = "".join(f"        set -gx {k} {f(val)}\n" for k, val in v.exports())
    return (
        HEAD.format(pkg=pkg)
        + "# Read by every fish from conf.d: an interactive fish becomes a qpod shell.\n"
        + f'if status is-interactive; and test -f {f(v.library)}; and test "$QPOD_OFF" != 1; '
        + "and not test -e /run/.containerenv\n"
        + f'    if string match -q -- {f(OURS)} "$LD_PRELOAD"\n'
        + "        set -gx QPOD_SHELL 1\n"
        + "    else\n"
        + f"        set -l qpod_entry {f(v.entry)}\n"
        + f"        for qpod_l in {' '.join(f(p) for p in v.loaders)}\n"
        + f"            test -e $qpod_l; and set qpod_entry {f(v.entry_any_class)}\n"
        + "        end\n"
        + "        set -gx LD_PRELOAD (string join : -- $qpod_entry $LD_PRELOAD)\n"
        + sets
        + "        set -gx QPOD_SHELL 1\n"
        # exec takes no command substitution: eval spells the running fish's path out
        + "        if status is-login\n"
        + "            eval exec (string escape -- (status fish-path)) -l\n"
        + "        else\n"
        + "            eval exec (string escape -- (status fish-path))\n"
        + "        end\n"
        + "    end\n"
        + "end\n"
    )
