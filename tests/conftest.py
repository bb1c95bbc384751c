"""Shared fixtures: where the real data lives, and a session-scoped local Ray."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO.parent / "shared" / "data"

# Tests never download anything.
os.environ.setdefault("SHARDTRAIN_OFFLINE", "1")
# Ray workers inherit this, so they can import test modules holding stage functions.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The read-only real datasets (``../shared/data`` beside the repo); CI has them too."""
    assert DATA_DIR.is_dir(), f"real data expected at {DATA_DIR}"
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
