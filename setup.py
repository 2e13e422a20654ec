"""Hooks the setuptools build so that ``pip install .`` and ``pip install -e .`` compile the
preload library (``preload/*.c``) into ``qpod_engine/_lib`` with the system C compiler.
Everything else is declared in pyproject.toml."""

import importlib.util
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py
from setuptools.command.develop import develop

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


class BinaryDistribution(Distribution):
    """The wheel carries a compiled library: tag it for this platform."""

    def has_ext_modules(self) -> bool:
        return True


setup(cmdclass={"build_py": BuildPy, "develop": Develop}, distclass=BinaryDistribution)
