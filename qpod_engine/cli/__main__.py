"""``python -m qpod_engine.cli``: the command line (what the installed ``qpod`` runs)."""

import sys

from qpod_engine.cli.main import main

sys.exit(main())
