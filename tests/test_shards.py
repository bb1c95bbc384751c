"""Shard format: atomic writes, index, verification, zero-copy reads, refusal of bad sets."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from shardtrain.core.errors import ShardtrainError
from shardtrain.shards import ShardSet, shard_name, verify_shards, write_index, write_shard
from shardtrain.shards import format as fmt
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
        "format": "shardtrain-shards", "version": 3, "stage": "prepare", "dataset": "t", "split": "train",
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
    # x is (50,)[28][28]: two nested fixed-size lists over one uint8 buffer.
    arrow_buffer = ss.tables[0].column("x").chunk(0).values.values.buffers()[1]
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
    index = json.loads((tmp_path / fmt.INDEX_NAME).read_text())
    index["version"] = 99
    (tmp_path / fmt.INDEX_NAME).write_text(json.dumps(index))
    with pytest.raises(ShardtrainError, match="unknown shard format version 99"):
        ShardSet(tmp_path)
    (tmp_path / fmt.INDEX_NAME).unlink()
    with pytest.raises(ShardtrainError, match="missing"):
        ShardSet(tmp_path)


def test_sparse_columns_round_trip(tmp_path):
    offsets = pa.array([0, 2, 2, 5], pa.int32())
    ids = pa.ListArray.from_arrays(offsets, pa.array([1, 7, 3, 4, 9], pa.int32()))
    weights = pa.ListArray.from_arrays(offsets, pa.array([0.5, 0.5, 1, 1, 1], pa.float32()))
    entry = write_shard(tmp_path / shard_name(0, 1), {"sample_id": np.arange(3), "x_ids": ids, "x_weights": weights})
    write_index(tmp_path, {"format": "shardtrain-shards", "version": 3, "rows": 3, "shards": [entry]})
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


def test_v3_shards_carry_their_shape_in_the_type_and_hf_features(tmp_path):
    entry = write_shard(tmp_path / "a.arrow", {"sample_id": np.arange(4), "x": np.zeros((4, 2, 3), np.uint8),
                                               "label": np.array([0, 1, -1, 1])}, (0, 1), {"label": ["no", "yes"]})
    schema = pa.ipc.open_file(pa.memory_map(str(tmp_path / "a.arrow"))).schema
    assert schema.field("x").type == pa.list_(pa.list_(pa.uint8(), 3), 2)
    assert schema.metadata[b"shardtrain.version"] == b"3"
    features = json.loads(schema.metadata[b"huggingface"])["info"]["features"]
    assert features["label"] == {"_type": "ClassLabel", "names": ["no", "yes"]}
    assert features["x"]["length"] == 2 and features["x"]["feature"]["length"] == 3
    assert entry["rows"] == 4


def _write_v2_the_old_way(directory, n=30):
    """A version 2 split as shardtrain wrote it before version 3: flat x, index.json, rejects.jsonl."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (n, 4, 5), dtype=np.uint8)
    ids = pa.ListArray.from_arrays(pa.array(np.arange(0, 2 * n + 1, 2), pa.int32()), pa.array(np.arange(2 * n), pa.int32()))
    table = pa.table({"sample_id": np.arange(n), "x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 20),
                      "x_ids": ids, "label": np.arange(n) % 2})
    table = table.replace_schema_metadata({b"shardtrain.format": b"shardtrain-shards", b"shardtrain.version": b"2",
                                           b"shardtrain.shard": b"0/1", b"shardtrain.x_shape": b"[4, 5]"})
    path = directory / shard_name(0, 1)
    with pa.ipc.new_file(str(path), table.schema) as writer:
        writer.write_table(table)
    from shardtrain.core.hashing import file_digest

    (directory / "rejects.jsonl").write_text('{"sample_id": 99, "reason": "bad", "detail": ""}\n')
    (directory / "index.json").write_text(json.dumps({
        "format": "shardtrain-shards", "version": 2, "rows": n,
        "features": {"x": {"kind": "dense", "dtype": "uint8", "shape": [4, 5]}},
        "labels": {"label": {"classes": ["a", "b"], "counts": {}}},
        "shards": [{"file": path.name, "rows": n, "bytes": path.stat().st_size, "sha256": file_digest(path)}],
        "rejects": {"count": 1, "file": "rejects.jsonl", "reasons": {"bad": 1}}}))
    return x


def test_a_version_2_directory_written_the_old_way_still_reads(tmp_path):
    x = _write_v2_the_old_way(tmp_path / "v2")
    ss = ShardSet(tmp_path / "v2", verify=True)
    assert ss.index["version"] == 2 and ss.rows == 30
    np.testing.assert_array_equal(ss.concat("x"), x)
    (off, vals), = ss.sparse_column("x_ids")
    assert off[-1] == 60 and vals[:3].tolist() == [0, 1, 2]
    res = run_cli("inspect", str(tmp_path / "v2"), "--verify")
    assert res.returncode == 0 and "v2" in res.stdout and "OK" in res.stdout, res.stdout + res.stderr


def test_legacy_index_name_is_only_trusted_for_versions_1_and_2(tmp_path):
    _write_v2_the_old_way(tmp_path / "v2")
    path = tmp_path / "v2" / fmt.LEGACY_INDEX_NAME
    path.write_text(path.read_text().replace('"version": 2', '"version": 3'))
    with pytest.raises(ShardtrainError, match="names its index _index.json"):
        ShardSet(tmp_path / "v2")
