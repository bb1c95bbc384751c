"""Import rules: the import-linter contracts in pyproject.toml hold, and the light entry points
(``shardtrain``, ``shardtrain.augment.text``/``.image``) load neither Ray nor Lightning."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shardtrain.cluster.jobs import stage_package
from tests.conftest import REPO

HEAVY = ("ray", "pytorch_lightning", "lightning")


def _env_without_pythonpath() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.mark.skipif(importlib.util.find_spec("importlinter") is None, reason="needs import-linter (the dev extra)")
def test_lint_imports_keeps_every_contract(tmp_path: Path) -> None:
    """``lint-imports`` with the repository's contracts, on the package in its wheel layout.

    grimp reads a package from one directory tree, which an editable install (package-dir
    mapping several folders into one namespace) is not; the staged copy is the wheel's layout
    whatever the install, and comes first on PYTHONPATH.
    """
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    stage_package(tmp_path)
    proc = subprocess.run([exe, str(REPO / "pyproject.toml")], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={**_env_without_pythonpath(), "PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken." in proc.stdout


@pytest.mark.parametrize("module", ["shardtrain", "shardtrain.augment.text", "shardtrain.augment.image"])
def test_light_modules_load_neither_ray_nor_lightning(tmp_path: Path, module: str) -> None:
    """Each in a fresh interpreter: after the import no Ray or Lightning module is loaded."""
    code = (f"import sys, {module}\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=_env_without_pythonpath())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]", f"import {module} loaded {proc.stdout.strip()}"
