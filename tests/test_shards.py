"""Shard format: atomic writes, index, verification, zero-copy reads, refusal of bad sets."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from shardtrain.core.errors import ShardtrainError
from shardtrain.shards import ShardSet, shard_name, verify_shards, write_index, write_shard
from tests.conftest import run_cli


def _write_set(directory, sizes=(100, 37), seed=0):
    rng = np.random.default_rng(seed)
    entries, start = [], 0
    for i, n in enumerate(sizes):
        cols = {
            "sample_id": np.arange(start, start + n, dtype=np.int64),
            "x": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
            "label": rng.integers(0, 10, n).astype(np.int64),
        }
        entries.append(write_shard(directory / shard_name(i, len(sizes)), cols, (i, len(sizes))))
        start += n
    schema = [{"name": "sample_id", "type": "int64"}, {"name": "x", "type": "fsl"}, {"name": "label", "type": "int64"}]
    write_index(directory, {
        "format": "shardtrain-shards", "version": 1, "stage": "prepare", "dataset": "t", "split": "train",
        "rows": sum(sizes), "schema": schema,
        "features": {"x": {"kind": "dense", "dtype": "uint8", "shape": [28, 28], "scale": 1 / 255, "offset": 0.0}},
        "labels": {"label": {"classes": [str(i) for i in range(10)], "counts": {}}},
        "shards": entries, "rejects": {"count": 0}, "fingerprint": "x",
    })
    return entries


def test_write_is_deterministic_and_leaves_no_temp_files(tmp_path):
    cols = {"sample_id": np.arange(10), "x": np.ones((10, 4), np.float32)}
    a = write_shard(tmp_path / "a.arrow", cols, (0, 1))
    b = write_shard(tmp_path / "b.arrow", {k: v.copy() for k, v in cols.items()}, (0, 1))
    assert a["sha256"] == b["sha256"] and a["bytes"] == b["bytes"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.arrow", "b.arrow"]
    table = pa.ipc.open_file(pa.memory_map(str(tmp_path / "a.arrow"))).read_all()
    assert table.schema.metadata[b"shardtrain.format"] == b"shardtrain-shards"
    assert table.schema.metadata[b"shardtrain.shard"] == b"0/1"


def test_read_back_values_and_shapes(tmp_path):
    _write_set(tmp_path)
    ss = ShardSet(tmp_path, verify=True)
    assert ss.rows == 137
    xs = ss.column("x")
    assert [x.shape for x in xs] == [(100, 28, 28), (37, 28, 28)]
    ids = np.concatenate(ss.column("sample_id"))
    assert (ids == np.arange(137)).all()
    rng = np.random.default_rng(0)
    expected = rng.integers(0, 256, (100, 28, 28), dtype=np.uint8)
    assert (xs[0] == expected).all()


def test_torch_view_shares_memory_with_the_mapped_file(tmp_path):
    _write_set(tmp_path, sizes=(50,))
    ss = ShardSet(tmp_path)
    tensor = ss.torch_column("x")[0]
    arrow_buffer = ss.tables[0].column("x").chunk(0).values.buffers()[1]
    # Same address: the tensor reads the memory-mapped Arrow buffer, nothing was copied.
    assert tensor.data_ptr() == arrow_buffer.address
    assert tensor.shape == (50, 28, 28)
    labels = ss.torch_column("label")[0]
    assert labels.data_ptr() == ss.tables[0].column("label").chunk(0).buffers()[1].address


def test_verify_catches_a_flipped_byte_and_a_missing_shard(tmp_path):
    entries = _write_set(tmp_path)
    assert verify_shards(tmp_path) == []
    path = tmp_path / entries[1]["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    problems = verify_shards(tmp_path)
    assert problems and "sha256 mismatch" in problems[0]
    with pytest.raises(ShardtrainError, match="verification failed"):
        ShardSet(tmp_path, verify=True)
    path.unlink()
    assert "missing shard file" in verify_shards(tmp_path)[0]


def test_reader_refuses_missing_index_and_unknown_version(tmp_path):
    _write_set(tmp_path)
    index = json.loads((tmp_path / "index.json").read_text())
    index["version"] = 99
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(ShardtrainError, match="unknown shard format version 99"):
        ShardSet(tmp_path)
    (tmp_path / "index.json").unlink()
    with pytest.raises(ShardtrainError, match="missing"):
        ShardSet(tmp_path)


def test_sparse_columns_round_trip(tmp_path):
    offsets = pa.array([0, 2, 2, 5], pa.int32())
    ids = pa.ListArray.from_arrays(offsets, pa.array([1, 7, 3, 4, 9], pa.int32()))
    weights = pa.ListArray.from_arrays(offsets, pa.array([0.5, 0.5, 1, 1, 1], pa.float32()))
    entry = write_shard(tmp_path / shard_name(0, 1), {"sample_id": np.arange(3), "x_ids": ids, "x_weights": weights})
    write_index(tmp_path, {"format": "shardtrain-shards", "version": 2, "rows": 3, "shards": [entry]})
    ss = ShardSet(tmp_path, verify=True)
    (off, vals), = ss.sparse_column("x_ids")
    assert off.tolist() == [0, 2, 2, 5] and vals.tolist() == [1, 7, 3, 4, 9]


def test_inspect_cli_text_json_and_verify(tmp_path):
    entries = _write_set(tmp_path)
    res = run_cli("inspect", str(tmp_path), "--verify")
    assert res.returncode == 0, res.stderr
    assert "137" in res.stdout and "OK" in res.stdout
    res = run_cli("inspect", str(tmp_path), "--json")
    report = json.loads(res.stdout)
    assert report["rows"] == 137 and report["shards"] == 2
    path = tmp_path / entries[0]["file"]
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01
    path.write_bytes(bytes(data))
    res = run_cli("inspect", str(tmp_path), "--verify")
    assert res.returncode == 1
    assert "sha256 mismatch" in res.stdout
