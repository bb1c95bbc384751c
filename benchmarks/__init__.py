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
import importlib.util
import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
# The same mapping as [tool.setuptools] package-dir in pyproject.toml (tests/test_packaging.py checks it).
PACKAGE_DIRS = {"shardtrain": "pipelines", "shardtrain.models": "models", "shardtrain.augment": "augment",
                "shardtrain.cluster": "cluster"}


class _SourceTree(importlib.abc.MetaPathFinder):
    """Finds the four mapped packages in the source tree; their submodules load the ordinary way."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        folder = PACKAGE_DIRS.get(fullname)
        if folder is None:
            return None
        init = _REPO / folder / "__init__.py"
        return importlib.util.spec_from_file_location(fullname, init, submodule_search_locations=[str(init.parent)])


if importlib.util.find_spec("shardtrain") is None:  # not installed: run from this source tree
    sys.meta_path.insert(0, _SourceTree())

from shardtrain.core import offline as _offline  # noqa: E402,F401  (must run before ray/albumentations import)
