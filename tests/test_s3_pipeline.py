"""The pipeline with ``--out`` on S3 (moto on 127.0.0.1, tests/s3server.py): stages, training, runs.

- prepare -> augment -> train -> evaluate on the demo digits preset with ``out=s3://...``:
  shards, indexes, the augment preview and the run files are objects in the bucket, the
  shards verify, ``--stage evaluate`` alone finds the run in the bucket (from an empty
  cache), and the fake secret is in no object and no log line;
- the same config written locally gives shards with the same sha256 as on S3;
- a driver killed mid-stage leaves no index in the bucket, and a rerun completes;
- a worker node killed mid-stage (``ray.cluster_utils.Cluster``, marked ``cluster``) with
  S3 output: the stage completes with every sample id exactly once.

The data is local (remote inputs are tested with the dataset kinds).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import shardtrain
from shardtrain.shards import ShardSet, storage
from shardtrain.shards.inspection import describe
from tests.conftest import REPO
from tests.s3server import FAKE_KEY_ID, FAKE_SECRET, moto_endpoint, s3  # noqa: F401  (pytest fixtures)

OVERRIDES = ["train.max_epochs=2", "augment.preview=4"]
SPLITS = ("shards/prepare/train", "shards/prepare/test", "shards/augment/train")  # val is carved from train


def _no_secret(s3, text: str) -> None:
    """Neither fake credential appears in ``text``."""
    assert FAKE_SECRET not in text and FAKE_KEY_ID not in text


def test_whole_pipeline_on_s3_then_evaluate_from_the_bucket(s3, tmp_path, monkeypatch, capfd, caplog):
    caplog.set_level(logging.INFO, logger="shardtrain")
    monkeypatch.setenv("SHARDTRAIN_CACHE", str(tmp_path / "cache"))
    # The endpoint comes from the config's storage section, not the environment.
    monkeypatch.delenv("SHARDTRAIN_S3_ENDPOINT")
    overrides = [*OVERRIDES, f"storage.endpoint_override={s3.endpoint}"]
    out = s3.uri("exp")
    result = shardtrain.run("demo", out=out, overrides=overrides)

    keys = set(s3.keys("exp"))
    for split in SPLITS:
        index = json.loads(s3.get(f"exp/{split}/_index.json"))
        assert {f"exp/{split}/{s['file']}" for s in index["shards"]} <= keys
        ss = ShardSet(s3.uri(f"exp/{split}"), verify=True)
        assert ss.rows == index["rows"] > 0
        assert describe(s3.uri(f"exp/{split}"), verify=True).get("problems") in (None, [])
    assert "exp/shards/augment/train/_preview.png" in keys
    runs = {k.split("/")[2] for k in keys if k.startswith("exp/runs/")}
    assert len(runs) == 1
    run = runs.pop()
    for name in ("config.yaml", "metrics.json", "run.json", "epochs.csv", "prepare_index.json", "_COMPLETE",
                 "learning_curves.png", "checkpoints/best.ckpt", "checkpoints/last.ckpt"):
        assert f"exp/runs/{run}/{name}" in keys, name
    metrics = json.loads(s3.get(f"exp/runs/{run}/metrics.json"))
    assert metrics["test"] == result["evaluate"]["test"]
    assert 0.5 < metrics["test"]["accuracy"] <= 1.0
    info = json.loads(s3.get(f"exp/runs/{run}/run.json"))
    assert info["shard_dirs"]["train"] == s3.uri("exp/shards/augment/train")
    assert info["checkpoint"].startswith(s3.uri(f"exp/runs/{run}/checkpoints/"))

    # --stage evaluate alone, on another machine (an empty cache): the run comes from the bucket.
    monkeypatch.setenv("SHARDTRAIN_CACHE", str(tmp_path / "cache-2"))
    again = shardtrain.run("demo", "evaluate", out=out, overrides=overrides)
    assert again["evaluate"]["test"] == metrics["test"]
    assert json.loads(s3.get(f"exp/runs/{run}/metrics.json"))["test"] == metrics["test"]

    # The CLI's inspect --verify reads the bucket; predict takes the run by name under the s3:// root.
    env = {**os.environ, **s3.env, "SHARDTRAIN_S3_ENDPOINT": s3.endpoint}
    cli = [sys.executable, "-m", "shardtrain.cli"]
    res = subprocess.run([*cli, "inspect", s3.uri("exp/shards/prepare/test"), "--verify"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    _no_secret(s3, res.stdout + res.stderr)
    from shardtrain.predict import predict

    monkeypatch.setenv("SHARDTRAIN_S3_ENDPOINT", s3.endpoint)
    pred = predict(run, s3.uri("exp/shards/prepare/test"), tmp_path / "preds.parquet", out_dir=out)
    assert pred.metrics["accuracy"] == metrics["test"]["accuracy"]
    monkeypatch.delenv("SHARDTRAIN_S3_ENDPOINT")

    # No credential in any object (shards, indexes, configs, metrics, checkpoints) or log line.
    for key in s3.keys():
        data = s3.get(key)
        assert FAKE_SECRET.encode() not in data and FAKE_KEY_ID.encode() not in data, key
    captured = capfd.readouterr()
    _no_secret(s3, captured.out + captured.err + caplog.text)
    assert s3.bucket in caplog.text  # the log does name the (redacted) locations

    # The same config written locally: every shard has the same sha256 as its S3 twin.
    local = tmp_path / "local-out"
    shardtrain.run("demo", "prepare", out=local, overrides=OVERRIDES)
    shardtrain.run("demo", "augment", out=local, overrides=OVERRIDES)
    for split in SPLITS:
        remote = json.loads(s3.get(f"exp/{split}/_index.json"))
        mine = json.loads((local / split / "_index.json").read_text())
        assert [(s["file"], s["sha256"]) for s in mine["shards"]] == \
               [(s["file"], s["sha256"]) for s in remote["shards"]], split


def test_resume_last_continues_the_run_in_the_bucket(s3, tmp_path, monkeypatch):
    monkeypatch.setenv("SHARDTRAIN_CACHE", str(tmp_path / "cache"))
    base = ["augment.copies=0", "train.schedule=none"]
    out = s3.uri("r")
    shardtrain.run("demo", out=out, overrides=[*base, "train.max_epochs=1"])
    (run,) = storage.listdir(s3.uri("r/runs"))
    # Another machine (an empty cache) resumes it: the run is pulled, trained on, mirrored back.
    monkeypatch.setenv("SHARDTRAIN_CACHE", str(tmp_path / "cache-2"))
    shardtrain.run("demo", "train", out=out, overrides=[*base, "train.max_epochs=2", "train.resume=last"])
    assert storage.listdir(s3.uri("r/runs")) == [run]
    epochs = s3.get(f"r/runs/{run}/epochs.csv").decode().splitlines()
    assert [line.split(",")[0] for line in epochs[1:]] == ["1", "2"]
    assert f"r/runs/{run}/_COMPLETE" in s3.keys("r/runs")


# --- the driver killed mid-stage -----------------------------------------------------------------

DRIVER = textwrap.dedent("""
    import sys
    from shardtrain.stages.runner import SplitJob, run_stage
    from tests.test_faults_driver import ROWS_PER_SHARD, BATCH_ROWS, slow_square, source

    out, sleep_s = sys.argv[1], float(sys.argv[2])
    job = SplitJob("train", source(), slow_square, {"sleep_s": sleep_s},
                   describe={"labels": {"label": {"classes": ["a", "b", "c", "d"]}},
                             "features": {"x": {"kind": "dense", "dtype": "float32", "shape": [5]}}})
    run_stage("prepare", [job], out, rows_per_shard=ROWS_PER_SHARD, batch_rows=BATCH_ROWS,
              max_reject_fraction=0.0, executor="local", fp="fp-driver", config={}, dataset="toy")
    print("stage done")
""")


def _driver(tmp_path: Path, s3, out: str, sleep_s: float) -> subprocess.Popen:
    """The driver script in its own process group, pointed at the test's S3 server."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**os.environ, **s3.env, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(script), out, str(sleep_s)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _shard_keys(s3, prefix: str) -> list[str]:
    """The shard objects under a prefix of the bucket."""
    return [k for k in s3.keys(prefix) if k.rsplit("/", 1)[-1].startswith("part-")]


def test_driver_killed_mid_stage_on_s3_leaves_no_index_and_rerun_completes(s3, tmp_path):
    from tests.test_faults_driver import ROWS, ROWS_PER_SHARD, source

    stage, split = s3.uri("o/shards/prepare"), "o/shards/prepare/train"
    proc = _driver(tmp_path, s3, stage, sleep_s=0.4)
    deadline = time.monotonic() + 120
    while not _shard_keys(s3, split):
        if proc.poll() is not None:
            pytest.fail(f"driver ended before writing a shard:\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("driver wrote no shard in time")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    assert proc.returncode == -signal.SIGKILL
    written = _shard_keys(s3, split)
    assert 0 < len(written) < ROWS // ROWS_PER_SHARD
    assert f"{split}/_index.json" not in s3.keys(split)
    assert describe(s3.uri(split), verify=True).get("problems"), "a split without an index must not pass"

    rerun = _driver(tmp_path, s3, stage, sleep_s=0.0)
    assert rerun.wait(timeout=120) == 0, rerun.stdout.read()
    assert len(_shard_keys(s3, split)) == ROWS // ROWS_PER_SHARD
    ss = ShardSet(s3.uri(split), verify=True)
    assert np.array_equal(ss.concat("sample_id"), np.arange(ROWS))
    assert np.allclose(ss.concat("x"), source()["x"] ** 2)


# --- a worker node killed mid-stage, S3 output ---------------------------------------------------

def _kill_after_first_object(cluster, split: str, log: Path, seen: dict, timeout: float = 120.0) -> None:
    """Once a shard object exists in the bucket, SIGKILL the node of the next task to start."""
    from tests.test_faults_worker import _kill_after_first_shard

    _kill_after_first_shard(cluster, Path(), log, seen, timeout,
                            count=lambda: sum(n.startswith("part-") for n in storage.listdir(split)))


def run_with_kill_s3(tmp: Path, stage: str) -> dict:
    """``tests.test_faults_worker.run_with_kill`` with the stage written to ``stage`` (an s3:// URI)."""
    import ray

    from shardtrain.cluster.local import local_cluster
    from shardtrain.stages.runner import run_stage
    from tests.test_faults_worker import BATCH_ROWS, ROWS_PER_SHARD, _job

    log = tmp / "batches.log"
    seen: dict = {}
    with local_cluster(workers=2, head_cpus=0, worker_cpus=1) as cluster:
        ray.init(address=cluster.address, log_to_driver=False)
        killer = threading.Thread(target=_kill_after_first_object,
                                  args=(cluster, str(storage.join(stage, "train")), log, seen), daemon=True)
        killer.start()
        index = run_stage("prepare", [_job(log)], stage, rows_per_shard=ROWS_PER_SHARD,
                          batch_rows=BATCH_ROWS, max_reject_fraction=0.0, executor="ray", fp="fp-kill",
                          config={}, dataset="toy")["train"]
        killer.join(timeout=30)
        seen["alive_nodes"] = sum(1 for n in ray.nodes() if n["Alive"])
    seen["index"] = index
    return seen


@pytest.mark.cluster
def test_worker_node_killed_mid_stage_with_s3_output_writes_every_row_once(s3, tmp_path):
    from tests.test_faults_worker import ROWS, ROWS_PER_SHARD, _job

    stage = s3.uri("w/shards/prepare")
    code = ("import json, sys; from pathlib import Path; from tests.test_s3_pipeline import run_with_kill_s3; "
            "print('RESULT ' + json.dumps(run_with_kill_s3(Path(sys.argv[1]), sys.argv[2])))")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    env.update(s3.env, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16), PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path), stage], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=400)
    results = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and results, proc.stdout[-3000:] + proc.stderr[-3000:]
    seen = json.loads(results[-1][len("RESULT "):])
    assert "killed_pid" in seen, "the worker node was never killed"
    assert seen["shards_at_kill"] < ROWS // ROWS_PER_SHARD
    assert seen["alive_nodes"] == 2
    lines = [line.split() for line in (tmp_path / "batches.log").read_text().splitlines()]
    assert max(np.unique([int(f) for _, f in lines], return_counts=True)[1]) > 1, "no batch was re-run"

    index = json.loads(s3.get("w/shards/prepare/train/_index.json"))
    assert index["rows"] == ROWS and index == seen["index"]
    assert _shard_keys(s3, "w/shards/prepare/train") == [f"w/shards/prepare/train/{s['file']}"
                                                         for s in index["shards"]]
    ss = ShardSet(s3.uri("w/shards/prepare/train"), verify=True)
    ids = ss.concat("sample_id")
    job = _job(tmp_path / "unused.log")
    assert len(ids) == ROWS and len(np.unique(ids)) == ROWS
    assert np.array_equal(np.sort(ids), job.source["sample_id"])
    assert np.allclose(ss.concat("x")[np.argsort(ids)], job.source["x"] * 2)
