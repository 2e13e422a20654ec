"""``qpod activate`` and ``qpod deactivate``: every new terminal and desktop program of the user
is in qpod mode, or none is (qpod-shell stays for a single shell)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse


def cmd_activate(a: argparse.Namespace) -> int:
    from qpod_engine.activation import state
    from qpod_engine.base.textsafe import visible

    for line in state.activate():
        print(f"hooked {visible(line)}")
    st = state.status()
    print("new terminals (bash, zsh, fish as installed) start in qpod mode; the ones open now do not")
    if st.generator:
        print(f"desktop programs get the library from your next login ({visible(st.generator)})")
    else:
        print(
            "desktop programs are not reached: systemd's user environment generator is not installed "
            "(sudo bash scripts/setup.sh installs it; without systemd: README, 'Activation')"
        )
    return 0


def cmd_deactivate(a: argparse.Namespace) -> int:
    from qpod_engine.activation import state
    from qpod_engine.base.textsafe import visible

    removed = state.deactivate()
    for path in removed:
        print(f"removed {visible(path)}")
    print(
        "activation is off: new terminals, and desktop programs from your next login, build on the host"
        if removed
        else "activation was not on"
    )
    return 0


def add_parsers(sub: Any) -> None:
    sub.add_parser(
        "activate", help="every new terminal and desktop program of yours in qpod mode (no qpod-shell needed)"
    ).set_defaults(func=cmd_activate)
    sub.add_parser("deactivate", help="undo qpod activate").set_defaults(func=cmd_deactivate)
