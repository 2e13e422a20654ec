"""``qpod``'s entry point. ``qpod exec`` is handed straight to the native-exec client, before
anything else is imported: in a bound repository whose container is warm the command runs with
no more Python than this; the client comes back to the CLI (``--slow-exec``) for the rest.
Everything else is the CLI's (``qpod_engine.cli.main``)."""

import os
import sys

from qpod_engine.base import paths
from qpod_engine.base.environ import restore_locale


def main() -> int:
    argv = sys.argv[1:]
    restore_locale()  # the command gets the caller's environment, not Python's coerced one
    if argv[:1] == ["exec"]:
        import _signal  # the builtin: the signal module's enum costs milliseconds

        client = os.path.join(paths.LIB_DIR, "qpod-client")
        # Python ignores SIGPIPE and SIGXFSZ, and an exec keeps that: the command must get the
        # defaults it would have had
        _signal.signal(_signal.SIGPIPE, _signal.SIG_DFL)
        _signal.signal(_signal.SIGXFSZ, _signal.SIG_DFL)
        try:
            os.execv(client, [client, "--front", sys.executable, "--", *argv[1:]])
        except OSError:
            pass  # not built: the CLI's own path says what is wrong
    from qpod_engine.cli.main import main as cli_main

    return cli_main(argv)
