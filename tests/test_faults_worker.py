"""A worker node killed in the middle of a Ray stage: the stage still completes, exactly once per row.

The head has no CPUs, so every shard task runs on one of two worker nodes; a thread
kills one of them (SIGKILL, no graceful shutdown) as soon as the first shard file
appears, while both are busy. Ray re-runs the lost tasks on the surviving node,
and since a task rewrites its whole shard through a temporary file and a rename, the
result is a complete, verifiable shard set with every sample id exactly once.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from shardtrain.cluster.local import is_loopback
from shardtrain.stages.runner import SplitJob, run_stage
from shardtrain.shards import ShardSet
from shardtrain.shards.reader import verify_shards
from tests.conftest import REPO

ROWS, ROWS_PER_SHARD, BATCH_ROWS = 240, 20, 10  # 12 shard tasks of 2 batches each


def slow_double(batch: dict, ctx: dict) -> dict:
    """Stage function: x * 2, after a pause; logs (pid, first sample id) first, so the test sees retries."""
    ids = batch["sample_id"]
    with open(ctx["log"], "a") as fh:  # one short line per batch: O_APPEND keeps lines whole
        fh.write(f"{os.getpid()} {int(ids[0])}\n")
    time.sleep(ctx["sleep_s"])
    return {"sample_id": ids, "x": batch["x"] * 2, "label": batch["label"]}


def _job(log: Path) -> SplitJob:
    rng = np.random.default_rng(7)
    source = {"sample_id": np.arange(1000, 1000 + ROWS, dtype=np.int64),
              "x": rng.random((ROWS, 4)).astype(np.float32),
              "label": (np.arange(ROWS) % 3).astype(np.int64)}
    return SplitJob("train", source, slow_double, {"sleep_s": 0.5, "log": str(log)},
                    describe={"labels": {"label": {"classes": ["a", "b", "c"]}},
                              "features": {"x": {"kind": "dense", "dtype": "float32", "shape": [4]}}})


def _node_running(cluster, pid: int):
    """The worker node whose raylet started process ``pid`` (a Ray worker), or None."""
    from ray._private import ray_constants

    from shardtrain.cluster.local import ray_process_tree

    for node in cluster.worker_nodes:
        raylet = node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
        if pid in {p.pid for p in ray_process_tree(raylet)}:
            return node
    return None


def _kill_after_first_shard(cluster, split_dir: Path, log: Path, seen: dict, timeout: float = 120.0,
                            count: Callable[[], int] | None = None) -> None:
    """Once a shard exists, SIGKILL the node of the next task to start (it is then mid-shard).

    ``count`` counts the written shards (default: ``part-*.arrow`` files in ``split_dir``;
    the S3 test counts objects); ``seen["shards_at_kill"]`` records it at the kill.
    """
    count = count or (lambda: len(list(split_dir.glob("part-*.arrow"))))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not count():
        time.sleep(0.05)
    done = len(log.read_text().splitlines()) if log.exists() else 0
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines()[done:]:
            pid, first = (int(v) for v in line.split())
            if (first - 1000) % ROWS_PER_SHARD == 0:  # the first batch of a shard task
                node = _node_running(cluster, pid)
                if node is not None:
                    seen["shards_at_kill"] = count()
                    cluster.remove_node(node, allow_graceful=False)
                    seen["killed_pid"] = pid
                    return
        time.sleep(0.02)


def run_with_kill(tmp: Path) -> dict:
    """Run the stage on a head + 2 workers, killing one worker mid-stage; returns what happened.

    Runs in a subprocess of the test (see below) so that this Ray cluster and the
    test session's own local Ray never meet in one process.
    """
    import ray

    from shardtrain.cluster.local import listening_addresses, local_cluster, ray_process_tree

    log, stage_dir = tmp / "batches.log", tmp / "shards" / "prepare"
    seen: dict = {}
    with local_cluster(workers=2, head_cpus=0, worker_cpus=1) as cluster:
        ray.init(address=cluster.address, log_to_driver=False)
        killer = threading.Thread(target=_kill_after_first_shard,
                                  args=(cluster, stage_dir / "train", log, seen), daemon=True)
        killer.start()
        index = run_stage("prepare", [_job(log)], stage_dir, rows_per_shard=ROWS_PER_SHARD,
                          batch_rows=BATCH_ROWS, max_reject_fraction=0.0, executor="ray", fp="fp-kill",
                          config={}, dataset="toy")["train"]
        killer.join(timeout=30)
        seen["alive_nodes"] = sum(1 for n in ray.nodes() if n["Alive"])
        seen["listening"] = listening_addresses(ray_process_tree())
    seen["index"] = index
    return seen


@pytest.mark.cluster
def test_worker_node_killed_mid_stage_still_writes_every_row_once(tmp_path):
    code = ("import json, sys; from pathlib import Path; from tests.test_faults_worker import run_with_kill; "
            "print('RESULT ' + json.dumps(run_with_kill(Path(sys.argv[1]))))")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16))  # every node checks it
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=400)
    results = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and results, proc.stdout[-3000:] + proc.stderr[-3000:]
    seen = json.loads(results[-1][len("RESULT "):])
    index, log, stage_dir = seen["index"], tmp_path / "batches.log", tmp_path / "shards" / "prepare"
    job = _job(log)

    # The kill happened while the stage was running, and it cost work that had to be redone.
    assert "killed_pid" in seen, "the worker node was never killed"
    assert seen["shards_at_kill"] < ROWS // ROWS_PER_SHARD
    assert seen["alive_nodes"] == 2  # head + the surviving worker
    assert {"gcs_server", "raylet"} <= {name for _, _, name in seen["listening"]}
    assert all(is_loopback(ip) for ip, _, _ in seen["listening"]), seen["listening"]
    lines = [line.split() for line in log.read_text().splitlines()]
    starts = Counter(int(first) for _, first in lines)
    assert set(starts) == set(range(1000, 1000 + ROWS, BATCH_ROWS))
    assert max(starts.values()) > 1, "no batch was re-run: the kill hit no running task"
    # The killed process's unfinished shard was redone by a process of the surviving node.
    lost = {int(first) for pid, first in lines if int(pid) == seen["killed_pid"]}
    assert any(int(pid) != seen["killed_pid"] for pid, first in lines if int(first) in lost)

    # The index accounts for every input row exactly once, and every shard verifies.
    assert index["rows"] == ROWS
    assert [s["rows"] for s in index["shards"]] == [ROWS_PER_SHARD] * (ROWS // ROWS_PER_SHARD)
    assert verify_shards(stage_dir / "train") == []
    files = sorted(p.name for p in (stage_dir / "train").glob("part-*.arrow"))
    assert files == [s["file"] for s in index["shards"]]
    ss = ShardSet(stage_dir / "train", verify=True)
    ids = ss.concat("sample_id")
    assert len(ids) == ROWS and len(np.unique(ids)) == ROWS
    assert np.array_equal(np.sort(ids), job.source["sample_id"])
    order = np.argsort(ids)
    assert np.allclose(ss.concat("x")[order], job.source["x"] * 2)
