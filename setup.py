"""Hooks the setuptools build so that ``pip install .`` and ``pip install -e .`` compile the
preload library (``preload/*.c``) into ``qpod_engine/_lib`` with the system C compiler, and
install the native client as the venv's ``bin/qpod``. Everything else is declared in
pyproject.toml."""

import importlib.util
import os
import shutil
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py
from setuptools.command.develop import develop
from setuptools.command.egg_info import egg_info
from setuptools.command.install_scripts import install_scripts

HERE = Path(__file__).resolve().parent


def _build_preload(lib_dir: Path) -> None:
    spec = importlib.util.spec_from_file_location("qpod_preload_build", HERE / "preload" / "build.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.build(lib_dir)


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        # editable installs import the package from the source tree: build the library there
        if getattr(self, "editable_mode", False):
            _build_preload(HERE / "qpod_engine" / "_lib")
        else:
            _build_preload(Path(self.build_lib) / "qpod_engine" / "_lib")


class Develop(develop):
    def run(self) -> None:
        _build_preload(HERE / "qpod_engine" / "_lib")
        super().run()


# The venv's `qpod` is the native client itself (a copy of _lib/qpod-client), as setup.sh's link
# in /usr/local/bin is: `qpod exec` runs without starting Python (about 3 ms instead of 19), and
# anything else execs the venv's own bin/python -I -m qpod_engine.cli (the client finds it beside
# itself). pyproject.toml's console script of that name would hide it (pip skips a wheel's script
# named like a console script), so it is left out of the metadata here; `qpod-shell` stays one.
CLIENT_SCRIPT = "qpod"


class EggInfo(egg_info):
    def run(self) -> None:
        eps = self.distribution.entry_points or {}
        scripts = eps.get("console_scripts")
        if isinstance(scripts, dict):
            scripts.pop(CLIENT_SCRIPT, None)
        elif scripts:
            eps["console_scripts"] = [e for e in scripts if e.split("=")[0].strip() != CLIENT_SCRIPT]
        super().run()


class InstallScripts(install_scripts):
    def run(self) -> None:
        super().run()
        build = self.get_finalized_command("build_py")
        lib = HERE / "qpod_engine" / "_lib" if getattr(build, "editable_mode", False) else None
        lib = lib or Path(build.build_lib) / "qpod_engine" / "_lib"
        out = Path(self.install_dir) / CLIENT_SCRIPT
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lib / "qpod-client", out)
        os.chmod(out, 0o755)
        self.outfiles = [*(self.outfiles or []), str(out)]


class BinaryDistribution(Distribution):
    """The wheel carries a compiled library: tag it for this platform; and a script, the client."""

    def has_ext_modules(self) -> bool:
        return True

    def has_scripts(self) -> bool:
        return True


setup(
    cmdclass={"build_py": BuildPy, "develop": Develop, "egg_info": EggInfo, "install_scripts": InstallScripts},
    distclass=BinaryDistribution,
    scripts=[],  # the client is copied in by InstallScripts; none from the source tree
)
