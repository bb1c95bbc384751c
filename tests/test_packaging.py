"""shardtrain as a package: a user's own top-level ``models``/``pipelines`` never collide with it,
nothing installs a top-level ``models``, the wheel holds only ``shardtrain/`` (with its data
files and every module of the source tree), and a bare source tree runs the benchmarks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

SOURCE_DIRS = ("pipelines", "models", "augment", "cluster")


def _env(**extra: str) -> dict[str, str]:
    """This environment without PYTHONPATH (the suite puts the repository on it), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, **extra}


def _package_dirs() -> dict[str, str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["package-dir"]


def test_user_project_with_its_own_models_and_pipelines_runs_the_demo(tmp_path: Path) -> None:
    """A project with ``models/metrics.py`` and ``pipelines/__init__.py`` of its own, on PYTHONPATH
    and as the working directory: ``shardtrain demo`` still runs (only ``shardtrain.*`` is imported)."""
    project = tmp_path / "project"
    for rel, text in (("models/__init__.py", ""), ("models/metrics.py", "raise ImportError('the user\\'s models')\n"),
                      ("pipelines/__init__.py", "raise ImportError('the user\\'s pipelines')\n")):
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text(text)
    exe = shutil.which("shardtrain", path=str(Path(sys.executable).parent)) or "shardtrain"
    proc = subprocess.run([exe, "demo", "--executor", "local", "--out", str(tmp_path / "out")], cwd=project,
                          capture_output=True, text=True, timeout=600,
                          env=_env(PYTHONPATH=str(project), SHARDTRAIN_DATA="/nonexistent"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert list((tmp_path / "out" / "runs").glob("*demo*/metrics.json"))


@pytest.mark.parametrize("name", ["models", "pipelines", "augment", "cluster"])
def test_no_top_level_repository_folders_are_importable(tmp_path: Path, name: str) -> None:
    """Outside the repository nothing but ``shardtrain`` is installed."""
    proc = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env=_env())
    assert proc.returncode != 0
    assert f"No module named '{name}'" in proc.stderr


def test_wheel_holds_only_shardtrain_with_its_data_files(tmp_path: Path) -> None:
    """``pip wheel .``: top-level ``shardtrain/`` and metadata only; presets, FORMAT.md, every module."""
    src = tmp_path / "src"  # build from a copy: the build writes build/ and *.egg-info beside the sources
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCE_DIRS:
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "dist"), "."], cwd=src, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("shardtrain-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"shardtrain"}, sorted(tops)
    presets = {p.name for p in (REPO / "pipelines" / "presets").glob("*.yaml")}
    assert presets and {f"shardtrain/presets/{p}" for p in presets} <= names
    assert "shardtrain/shards/FORMAT.md" in names and "shardtrain/cluster/runtime_env.yaml" in names
    # Every module of the source tree, at the place package-dir maps it to (a package missing
    # from [tool.setuptools] packages would be missing here).
    mapped = {folder: pkg.replace(".", "/") for pkg, folder in _package_dirs().items()}
    expected = {f"{mapped[folder]}/{p.relative_to(REPO / folder).as_posix()}"
                for folder in SOURCE_DIRS for p in (REPO / folder).rglob("*.py")}
    assert expected - names == set()


def test_benchmarks_map_the_source_tree_like_package_dir() -> None:
    from benchmarks import PACKAGE_DIRS

    assert PACKAGE_DIRS == _package_dirs()


def test_bare_source_tree_runs_the_benchmarks(tmp_path: Path) -> None:
    """No shardtrain installed (the GPU machines): ``python -m benchmarks`` maps the source tree.

    The interpreter gets this environment's site-packages minus shardtrain (a farm of links,
    no ``.pth`` hooks, so no editable finder either) and runs in a copy of the source folders.
    """
    site = Path(sysconfig.get_paths()["purelib"])
    farm = tmp_path / "site"
    farm.mkdir()
    for entry in site.iterdir():
        if not entry.name.lower().startswith(("shardtrain", "__editable__")) and entry.suffix != ".pth":
            (farm / entry.name).symlink_to(entry)
    tree = tmp_path / "tree"  # the tracked source folders only: no *.egg-info or build/ beside them
    for name in (*SOURCE_DIRS, "benchmarks"):
        shutil.copytree(REPO / name, tree / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(REPO / "pyproject.toml", tree / "pyproject.toml")
    env = _env(PYTHONPATH=os.pathsep.join([str(tree), str(farm)]))
    listing = subprocess.run([sys.executable, "-S", "-m", "benchmarks", "run", "--list"], cwd=tree,
                             capture_output=True, text=True, timeout=300, env=env)
    assert listing.returncode == 0, listing.stdout[-3000:] + listing.stderr[-3000:]
    assert "time_to_89_gpu" in listing.stdout
    code = ("import importlib.util as u, sys; assert u.find_spec('shardtrain') is None, 'shardtrain is installed here'; "
            "import benchmarks, shardtrain, shardtrain.models, shardtrain.data.datamodule, shardtrain.api; "
            "import importlib.metadata as md; assert md.version('shardtrain') == shardtrain.__version__; "
            "print('FROM', shardtrain.__file__, shardtrain.models.__file__, 'ray' in sys.modules)")
    proc = subprocess.run([sys.executable, "-S", "-c", code], cwd=tree, capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1].split()
    assert last == ["FROM", str(tree / "pipelines" / "__init__.py"), str(tree / "models" / "__init__.py"), "False"]
