"""Shared fixtures: where the real data is found (and skips naming it), and a session-scoped local Ray.

Real data is found the way users find it: ``$SHARDTRAIN_DATA`` (``.ci/run`` points it at
``../shared/data`` beside the clone), else the user cache, where the dataset registry
downloads it (checksummed) unless ``SHARDTRAIN_OFFLINE=1``. A test that needs a dataset says
so with ``@pytest.mark.dataset("fashion-mnist")`` (then uses the ``data_dir`` fixture, the
root holding ``<subdir>/<files>``) or calls ``dataset_dir("sms-spam")`` in a fixture; when the
dataset cannot be had it is skipped with ``needs dataset NAME (set SHARDTRAIN_DATA)``.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Downloads are the user's call: only the dataset look-up below may download, and only when
# SHARDTRAIN_OFFLINE was not set by the user; everything else a test runs is offline.
USER_OFFLINE = os.environ.get("SHARDTRAIN_OFFLINE", "") not in ("", "0")
os.environ.setdefault("SHARDTRAIN_OFFLINE", "1")
_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "shardtrain"  # where downloads land
DATA_DIR = Path(os.environ["SHARDTRAIN_DATA"]).expanduser() if os.environ.get("SHARDTRAIN_DATA") else _CACHE
# Ray workers inherit this, so they can import test modules holding stage functions (shardtrain
# itself comes from the install: the repository root holds pipelines/, not shardtrain/).
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)


@functools.cache
def _find_dataset(name: str) -> str | None:
    """None when dataset ``name`` is under ``DATA_DIR`` (downloaded there if allowed), else why not."""
    from shardtrain.core.errors import ShardtrainError
    from shardtrain.datasets import locate

    # With SHARDTRAIN_DATA set, that directory is the data: never download beside it.
    offline = USER_OFFLINE or bool(os.environ.get("SHARDTRAIN_DATA"))
    saved = os.environ.get("SHARDTRAIN_OFFLINE")
    os.environ["SHARDTRAIN_OFFLINE"] = "1" if offline else "0"
    try:
        found = locate(name)
    except (ShardtrainError, OSError) as exc:
        return str(exc).splitlines()[0]
    finally:
        os.environ["SHARDTRAIN_OFFLINE"] = saved if saved is not None else "1"
    outside = [str(p) for p in found.values() if not Path(p).resolve().is_relative_to(DATA_DIR.resolve())]
    return f"found outside {DATA_DIR}: {', '.join(outside)}" if outside else None


def dataset_dir(name: str) -> Path:
    """The data root holding registry dataset ``name`` (``<root>/<subdir>/...``), or skip naming it."""
    why = _find_dataset(name)
    if why is not None:
        pytest.skip(f"needs dataset {name} (set SHARDTRAIN_DATA): {why}")
    return DATA_DIR


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a test marked ``@pytest.mark.dataset(NAME, ...)`` before its fixtures run, naming the dataset."""
    for mark in item.iter_markers("dataset"):
        for name in mark.args:
            dataset_dir(name)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The data root (``$SHARDTRAIN_DATA`` or the user cache); mark the test with the datasets it needs."""
    if not DATA_DIR.is_dir():
        pytest.skip(f"needs real data (set SHARDTRAIN_DATA; {DATA_DIR} does not exist)")
    return DATA_DIR


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole session, bound to 127.0.0.1, 2 CPUs, no dashboard."""
    import ray

    from shardtrain.stages.ray_exec import ensure_ray

    ensure_ray(num_cpus=2)
    yield ray
    ray.shutdown()


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600, env: dict | None = None):
    """Run ``python -m shardtrain.cli ARGS`` in a subprocess; returns the CompletedProcess."""
    import subprocess

    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "shardtrain.cli", *args], cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=timeout, env=full_env)
