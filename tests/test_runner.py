"""Stage runner: shard boundaries from the data, rejects, the reject limit, atomic index."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shardtrain.core.errors import ShardtrainError
from shardtrain.core.hashing import fingerprint
from shardtrain.stages.runner import SplitJob, is_up_to_date, run_stage
from shardtrain.shards import ShardSet


def double_and_reject_sevens(batch, ctx):
    """A stage function: doubles x, rejects rows whose id ends in 7 when ctx says so."""
    ids = batch["sample_id"]
    reasons = np.where((ids % 10 == 7) & ctx["reject"], "bad record: ends in 7", "")
    return {"sample_id": ids, "x": batch["x"] * 2, "label": batch["label"], "reject_reason": reasons}


def _job(n=95, reject=False):
    rng = np.random.default_rng(1)
    source = {"sample_id": np.arange(n, dtype=np.int64), "x": rng.random((n, 3)).astype(np.float32),
              "label": (np.arange(n) % 3).astype(np.int64)}
    return SplitJob("train", source, double_and_reject_sevens, {"reject": reject},
                    describe={"labels": {"label": {"classes": ["a", "b", "c"]}},
                              "features": {"x": {"kind": "dense", "dtype": "float32", "shape": [3]}}})


def _run(tmp_path, job, executor="local", max_reject=0.0, batch_rows=16):
    return run_stage("prepare", [job], tmp_path, rows_per_shard=40, batch_rows=batch_rows,
                     max_reject_fraction=max_reject, executor=executor, fp="fp1", config={}, dataset="toy")


def test_shards_follow_rows_per_shard_and_batching_does_not_matter(tmp_path):
    a = _run(tmp_path / "a", _job(), batch_rows=16)["train"]
    b = _run(tmp_path / "b", _job(), batch_rows=7)["train"]
    assert [s["rows"] for s in a["shards"]] == [40, 40, 15]
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    assert a["labels"]["label"]["counts"] == {"0": 32, "1": 32, "2": 31}
    ss = ShardSet(tmp_path / "a" / "train", verify=True)
    assert np.allclose(ss.concat("x"), _job().source["x"] * 2)
    assert is_up_to_date(tmp_path / "a", ["train"], "fp1")
    assert not is_up_to_date(tmp_path / "a", ["train"], "other")


def test_rejects_are_written_counted_and_limited(tmp_path):
    index = _run(tmp_path, _job(reject=True), max_reject=0.2)["train"]
    assert index["rows"] == 95 - 9
    assert index["rejects"]["count"] == 9
    lines = [json.loads(line) for line in (tmp_path / "train" / "_rejects.jsonl").read_text().splitlines()]
    assert sorted(r["sample_id"] for r in lines) == list(range(7, 95, 10))
    assert all(r["reason"] == "bad record: ends in 7" for r in lines)
    with pytest.raises(ShardtrainError, match="9 of 95 records rejected"):
        _run(tmp_path / "strict", _job(reject=True), max_reject=0.05)
    # A failed stage leaves no index behind.
    assert not (tmp_path / "strict" / "train" / "_index.json").exists()


def test_rerun_replaces_old_shards_and_index_is_last(tmp_path):
    _run(tmp_path, _job(n=200))
    assert len(list((tmp_path / "train").glob("part-*.arrow"))) == 5
    _run(tmp_path, _job(n=50))
    files = sorted(p.name for p in (tmp_path / "train").glob("part-*.arrow"))
    assert files == ["part-00000-of-00002.arrow", "part-00001-of-00002.arrow"]
    assert ShardSet(tmp_path / "train", verify=True).rows == 50


def test_fingerprint_is_stable_and_sensitive():
    assert fingerprint("a", {"x": 1, "y": [1, 2]}) == fingerprint("a", {"y": [1, 2], "x": 1})
    assert fingerprint("a", {"x": 1}) != fingerprint("a", {"x": 2})


@pytest.mark.ray
def test_ray_and_local_executors_write_identical_shards(tmp_path, ray_local):
    local = _run(tmp_path / "local", _job(reject=True), max_reject=0.2)["train"]
    remote = _run(tmp_path / "ray", _job(reject=True), executor="ray", max_reject=0.2)["train"]
    assert [s["sha256"] for s in local["shards"]] == [s["sha256"] for s in remote["shards"]]
    assert remote["rejects"]["count"] == 9


def test_a_file_uri_stage_dir_writes_the_same_bytes_as_its_path(tmp_path):
    a = _run(tmp_path / "a", _job(reject=True), max_reject=0.2)["train"]
    b = _run(f"file://{tmp_path / 'b'}", _job(reject=True), max_reject=0.2)["train"]
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    for name in ["_index.json", "_rejects.jsonl", *(s["file"] for s in a["shards"])]:
        assert (tmp_path / "a" / "train" / name).read_bytes() == (tmp_path / "b" / "train" / name).read_bytes()
    assert is_up_to_date(f"file://{tmp_path / 'b'}", ["train"], "fp1")
    assert ShardSet(f"file://{tmp_path / 'b' / 'train'}", verify=True).rows == 95 - 9
