"""The driver killed (SIGKILL) in the middle of a stage: no index is left behind, and a re-run completes.

The driver is a small script around ``run_stage`` with a slow stage function, run in a
subprocess and killed as soon as its first shard file appears. The index is written
only after every shard is durable, so the half-done split has none (nothing will ever
read it); running the stage again replaces the orphan shards and ``shardtrain inspect
--verify`` then passes. With ``--executor ray`` the private local Ray the driver started
goes down with it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, run_cli

ROWS, ROWS_PER_SHARD, BATCH_ROWS = 200, 20, 10  # 10 shards of 2 batches


def _psutil():
    """psutil, which Ray vendors (``ray/thirdparty_files``, put on sys.path by ``import ray``)."""
    import ray  # noqa: F401

    import psutil

    return psutil


def slow_square(batch: dict, ctx: dict) -> dict:
    """Stage function: x ** 2 after ``ctx['sleep_s']`` seconds per batch."""
    time.sleep(ctx["sleep_s"])
    return {"sample_id": batch["sample_id"], "x": batch["x"] ** 2, "label": batch["label"]}


def source() -> dict:
    """The synthetic split: 200 rows of 5 float32 features and 4 classes."""
    rng = np.random.default_rng(3)
    return {"sample_id": np.arange(ROWS, dtype=np.int64), "x": rng.random((ROWS, 5)).astype(np.float32),
            "label": (np.arange(ROWS) % 4).astype(np.int64)}


DRIVER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from shardtrain.stages.runner import SplitJob, run_stage
    from tests.test_faults_driver import ROWS_PER_SHARD, BATCH_ROWS, slow_square, source

    out, executor, sleep_s = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    if executor == "ray":
        from shardtrain.stages.ray_exec import ensure_ray
        ensure_ray(num_cpus=1)
    job = SplitJob("train", source(), slow_square, {"sleep_s": sleep_s},
                   describe={"labels": {"label": {"classes": ["a", "b", "c", "d"]}},
                             "features": {"x": {"kind": "dense", "dtype": "float32", "shape": [5]}}})
    run_stage("prepare", [job], out, rows_per_shard=ROWS_PER_SHARD, batch_rows=BATCH_ROWS,
              max_reject_fraction=0.0, executor=executor, fp="fp-driver", config={}, dataset="toy")
    print("stage done")
""")


def _driver(tmp_path: Path, out: Path, executor: str, sleep_s: float) -> subprocess.Popen:
    """Start the driver script in its own process group (so a kill reaches nothing else)."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(script), str(out), executor, str(sleep_s)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _wait_for_first_shard(proc: subprocess.Popen, split_dir: Path, timeout: float = 120.0) -> int:
    """Block until a shard file exists (or fail with the driver's output); returns how many."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = list(split_dir.glob("part-*.arrow"))
        if files:
            return len(files)
        if proc.poll() is not None:
            pytest.fail(f"driver ended before writing a shard:\n{proc.stdout.read()}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("driver wrote no shard in time")


def _running(proc) -> bool:
    """True when a process still exists and is not a zombie."""
    psutil = _psutil()

    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _name(proc) -> str:
    """A process's name, or "" once it is gone."""
    psutil = _psutil()

    try:
        return proc.name()
    except psutil.NoSuchProcess:
        return ""


@pytest.mark.parametrize("executor", ["local", pytest.param("ray", marks=pytest.mark.ray)])
def test_driver_killed_mid_stage_leaves_no_index_and_rerun_completes(tmp_path, executor):
    psutil = _psutil()

    out = tmp_path / "shards" / "prepare"
    split = out / "train"
    proc = _driver(tmp_path, out, executor, sleep_s=0.4)
    written = _wait_for_first_shard(proc, split)
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    assert proc.returncode == -signal.SIGKILL
    assert written < ROWS // ROWS_PER_SHARD
    assert not (split / "_index.json").exists()
    assert list(split.glob("part-*.arrow")), "the killed run should have left orphan shards"
    # The stage's readers refuse the half-done split.
    assert run_cli("inspect", str(split), "--verify", timeout=120).returncode == 1
    # The local Ray of --executor ray dies with its driver: GCS, raylet and workers within a
    # minute. (Its dashboard/runtime-env agents follow once their GCS calls time out; not waited for.)
    core = [p for p in children if "Agent" not in _name(p)]
    _, alive = psutil.wait_procs(core, timeout=60)
    alive = [p for p in alive if _running(p)]  # zombies only wait for a reaper: they are gone
    assert not alive, f"left running: {[_name(p) for p in alive]}"

    rerun = _driver(tmp_path, out, "local", sleep_s=0.0)
    assert rerun.wait(timeout=120) == 0, rerun.stdout.read()
    index_files = sorted(p.name for p in split.glob("part-*.arrow"))
    assert len(index_files) == ROWS // ROWS_PER_SHARD
    assert not list(split.glob(".part-*")), "temporary shard files left behind"
    check = run_cli("inspect", str(split), "--verify", timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "verified every shard's sha256: OK" in check.stdout

    from shardtrain.shards import ShardSet

    ss = ShardSet(split, verify=True)
    assert np.array_equal(ss.concat("sample_id"), np.arange(ROWS))
    assert np.allclose(ss.concat("x"), source()["x"] ** 2)
