"""Build step: ship the data folders in the wheel.

``devices/``, ``tables/``, ``predictors/`` and ``datasets/`` are top-level data folders of the checkout (never Python
packages). A wheel has no checkout, so the build copies them into ``latbench/_data/<kind>/``, where
:mod:`latbench.paths` looks when no checkout is found. Everything else is in ``pyproject.toml``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DATA_KINDS = ("devices", "tables", "predictors", "datasets")
DATA_SUFFIXES = {".toml", ".json", ".md", ".csv"}


def data_files(root: Path, kind: str) -> list[Path]:
    """The files of data folder ``kind`` that ship (no hidden files, temporaries or stray suffixes)."""
    base = root / kind
    return sorted(
        f
        for f in base.rglob("*")
        if f.is_file()
        and f.suffix in DATA_SUFFIXES
        and not any(part.startswith(".") for part in f.relative_to(base).parts)
    )


class BuildPyWithData(build_py):
    """``build_py`` that also copies the data folders into ``<build_lib>/latbench/_data``."""

    def run(self) -> None:
        super().run()
        root = Path(__file__).resolve().parent
        for kind in DATA_KINDS:
            for f in data_files(root, kind):
                target = Path(self.build_lib) / "latbench" / "_data" / kind / f.relative_to(root / kind)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, target)


setup(cmdclass={"build_py": BuildPyWithData})
