"""shardtrain benchmarks: side-by-side measurements of ours vs a baseline (never run as tests).

    python -m benchmarks run [--quick] [--json FILE] [--only NAME ...] [--list]

From the repository root. shardtrain comes from the install when there is one; in a bare
source tree (the GPU machines: torch and Lightning, no Ray, no package index) the
repository's folders are mapped into the ``shardtrain`` namespace the way ``package-dir``
in ``pyproject.toml`` maps them for an install (``_SourceTree`` below), so nothing needs
installing.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.metadata
import importlib.util
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
# The same mapping as [tool.setuptools] package-dir in pyproject.toml (tests/test_packaging.py checks it).
PACKAGE_DIRS = {"shardtrain": "pipelines", "shardtrain.models": "models", "shardtrain.augment": "augment",
                "shardtrain.cluster": "cluster"}


class _SourceDistribution(importlib.metadata.Distribution):
    """The source tree's metadata (name and version from pyproject.toml), so that
    ``importlib.metadata.version("shardtrain")`` answers as it does for an install."""

    def read_text(self, filename: str) -> str | None:
        if filename != "METADATA":
            return None
        text = (_REPO / "pyproject.toml").read_text(encoding="utf-8")
        found = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
        return f"Metadata-Version: 2.1\nName: shardtrain\nVersion: {found.group(1) if found else '0'}\n"

    def locate_file(self, path: str | os.PathLike[str]) -> Path:
        return _REPO / path


class _SourceTree(importlib.abc.MetaPathFinder):
    """Finds the four mapped packages in the source tree (their submodules load the ordinary
    way) and the package's metadata."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        folder = PACKAGE_DIRS.get(fullname)
        if folder is None:
            return None
        init = _REPO / folder / "__init__.py"
        return importlib.util.spec_from_file_location(fullname, init, submodule_search_locations=[str(init.parent)])

    def find_distributions(self, context: importlib.metadata.DistributionFinder.Context = None) -> Iterator:
        name = getattr(context, "name", None)
        return iter([_SourceDistribution()] if name in (None, "shardtrain") else [])


if importlib.util.find_spec("shardtrain") is None:  # not installed: run from this source tree
    sys.meta_path.insert(0, _SourceTree())

from shardtrain.core import offline as _offline  # noqa: E402,F401  (must run before ray/albumentations import)
