"""Launcher entry for the preload library: ``python -I -S entry.py --shim PATH CWD -- ARGV...``.

Run as a script with ``-S`` (no site: saves ~15 ms per redirected command), so it puts the
package's parent directory on sys.path itself, in place of this script's own directory.
Site-packages are added back lazily only if a slow path (YAML, podman-py) needs them.
"""

import os
import sys

# this file is qpod_engine/launch/entry.py: the directory holding the qpod_engine package
sys.path[0] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if sys.flags.no_site:  # make third-party imports possible for the slow paths without paying for site up front
    import importlib.machinery

    _THIRD_PARTY = {"yaml", "_yaml", "podman", "pygit2", "requests", "urllib3"}

    class _LateSite:  # a plain finder: importing importlib.abc alone costs ~15 ms
        def find_spec(self, name, path=None, target=None):  # type: ignore[no-untyped-def]
            if name.partition(".")[0] not in _THIRD_PARTY:
                return None  # stdlib probes for optional modules fail here, as they should
            sys.meta_path.remove(self)
            import site

            site.main()
            return importlib.machinery.PathFinder.find_spec(name, path, target)

    sys.meta_path.append(_LateSite())

from qpod_engine.launch.launcher import shim_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(shim_main(sys.argv[1:]))
