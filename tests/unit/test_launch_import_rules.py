"""The hot path's import rules, checked in a fresh interpreter (not kept by comments): what the
preload library's launcher and ``qpod exec``'s entry import is the standard library and qpod's
own light modules, never PyYAML, podman-py, pygit2 or the UI."""

import json
import subprocess
import sys

from conftest import REPO_ROOT

PROBE = """
import json, sys
sys.path.insert(0, {root!r})
{imports}
third = sorted(m for m in sys.modules
               if m.partition(".")[0] not in (*sys.stdlib_module_names, "qpod_engine", "__main__"))
print(json.dumps({{"third": third, "qpod": sorted(m for m in sys.modules if m.startswith("qpod_engine"))}}))
"""


def loaded(imports: str, site: bool = False) -> dict[str, list[str]]:
    # -S: the launcher runs without site (see launch.py), so nothing third-party is preloaded
    flags = [] if site else ["-S"]
    r = subprocess.run(
        [sys.executable, *flags, "-c", PROBE.format(root=str(REPO_ROOT), imports=imports)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(r.stdout)


def test_launcher_path_is_stdlib_only() -> None:
    got = loaded("import qpod_engine.launch.launcher, qpod_engine.launch.spec")
    assert got["third"] == []
    heavy = (
        "qpod_engine.cli",
        "qpod_engine.api",
        "qpod_engine.podman.lifecycle",
        "qpod_engine.config.environments",
        "qpod_engine.base.yamlio",
    )
    assert not any(m.startswith(heavy) for m in got["qpod"]), got["qpod"]


def test_qpod_exec_entry_imports_nothing_of_qpod_but_itself() -> None:
    got = loaded("import qpod_engine.cli.front")
    assert got["third"] == [] and got["qpod"] == [
        "qpod_engine",
        "qpod_engine.base",
        "qpod_engine.base.environ",
        "qpod_engine.base.paths",
        "qpod_engine.cli",
        "qpod_engine.cli.front",
    ]


def test_engine_never_imports_the_ui() -> None:
    # with site: textual is importable here, so only the engine's own restraint keeps it out
    got = loaded(
        "import qpod_engine.cli.main, qpod_engine.api, qpod_engine.cli.doctor, qpod_engine.cli.shell", site=True
    )
    assert not [m for m in got["third"] if m.startswith(("textual", "qpod_tui", "rich"))], got["third"]
