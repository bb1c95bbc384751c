"""The URI layer (shardtrain.shards.storage) on local paths, file:// and fsspec's memory://.

The S3 side (moto on 127.0.0.1) is in tests/test_s3.py; these need no server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shardtrain.core.errors import ShardtrainError
from shardtrain.shards import (
    ShardSet,
    clear_split,
    index_fingerprint,
    read_index,
    shard_name,
    verify_shards,
    write_index,
    write_rejects,
    write_shard,
)
from shardtrain.shards import cache, storage
from shardtrain.shards import format as fmt
from shardtrain.shards.inspection import describe


def write_split(directory, sizes=(40, 17), seed=0, config=None) -> list[dict]:
    """Write a small dense split (shards, then the index) to a local path or a URI."""
    rng = np.random.default_rng(seed)
    entries, start = [], 0
    for i, n in enumerate(sizes):
        cols = {
            "sample_id": np.arange(start, start + n, dtype=np.int64),
            "x": rng.integers(0, 256, (n, 4, 4), dtype=np.uint8),
            "label": rng.integers(0, 3, n).astype(np.int64),
        }
        entries.append(write_shard(storage.join(directory, shard_name(i, len(sizes))), cols, (i, len(sizes)),
                                   {"label": ["a", "b", "c"]}))
        start += n
    write_index(directory, {
        "format": fmt.FORMAT_NAME, "version": fmt.CURRENT_VERSION, "stage": "prepare", "dataset": "t",
        "split": "train", "rows": sum(sizes),
        "schema": [{"name": "sample_id", "type": "int64"}, {"name": "x", "type": "fsl"},
                   {"name": "label", "type": "int64"}],
        "features": {"x": {"kind": "dense", "dtype": "uint8", "shape": [4, 4], "scale": 1 / 255, "offset": 0.0}},
        "labels": {"label": {"classes": ["a", "b", "c"], "counts": {}}},
        "shards": entries, "rejects": {"count": 0}, "config": config or {}, "fingerprint": f"fp{seed}",
    })
    return entries


def test_is_uri_scheme_and_local_path(tmp_path: Path) -> None:
    assert not storage.is_uri("out/shards") and not storage.is_uri(tmp_path) and not storage.is_uri("C:\\data")
    assert storage.is_uri("s3://b/k") and storage.scheme("S3://b/k") == "s3" and storage.scheme("rel/p") == ""
    assert storage.local_path("rel/p") == Path("rel/p")
    assert storage.local_path(f"file://{tmp_path}/a b") == tmp_path / "a b"
    assert storage.local_path("file://localhost/tmp/x") == Path("/tmp/x")
    assert storage.local_path("s3://b/k") is None and not storage.is_local("gs://b/k")
    with pytest.raises(ShardtrainError, match="names no host"):
        storage.local_path("file://otherhost/tmp/x")
    with pytest.raises(ShardtrainError, match="s3:/bucket/x/_index.json: a URI folded by pathlib"):
        read_index(Path("s3://bucket/x"))  # a caller's Path() around a URI is an error, not a local dir


def test_join_keeps_uris_intact() -> None:
    assert storage.join("s3://bucket/out/", "shards", "/prepare/", "train") == "s3://bucket/out/shards/prepare/train"
    assert storage.join("s3://bucket", "a") == "s3://bucket/a"
    assert (storage.join("s3://bucket/o?endpoint_override=localhost:9000&scheme=http", "x.arrow")
            == "s3://bucket/o/x.arrow?endpoint_override=localhost:9000&scheme=http")
    assert storage.join("gs://b/p", "q") == "gs://b/p/q"
    assert storage.join("out", "shards") == Path("out/shards")
    assert isinstance(storage.join(Path("/tmp"), "x"), Path)
    assert storage.basename("s3://bucket/o/part-00000-of-00002.arrow") == "part-00000-of-00002.arrow"


def test_redact_strips_userinfo_and_secret_query_values(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "verySecretValue/0123456789ABCDEF"
    uri = f"s3://AKIAEXAMPLE:{secret}@bucket/out?region=eu-west-1&secret_key={secret}&session_token=tok123"
    shown = storage.redact(uri)
    assert shown == "s3://bucket/out?region=eu-west-1"
    assert storage.redact("gs://b/x?access_token=abc&project=p") == "gs://b/x?project=p"
    assert storage.redact("/plain/path") == "/plain/path"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    text = storage.redact_text(f"failed on {uri!r}: signature with {secret} rejected")
    assert secret not in text and "AKIAEXAMPLE" not in text and "s3://bucket/out?region=eu-west-1" in text
    nested = storage.redact_obj({"out": uri, "list": [uri, 3], uri: Path("/x")})
    assert secret not in json.dumps(nested) and nested["list"][1] == 3
    assert nested["s3://bucket/out?region=eu-west-1"] == "/x"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")  # moto's default: too short to mask ordinary words
    assert storage.redact_text("the test split") == "the test split"


def test_local_write_is_atomic_and_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "f.bin"
    storage.write_bytes(target, b"old")
    storage.write_bytes(str(target), b"new")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["f.bin"]

    def fail(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        storage.write_bytes(target, b"half")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["f.bin"]


def test_file_helpers_on_paths_and_file_uris(tmp_path: Path) -> None:
    for base in (tmp_path / "p", f"file://{tmp_path}/u"):
        storage.makedirs(base)
        loc = storage.join(base, "a.txt")
        assert not storage.exists(loc) and storage.file_size(loc) is None
        storage.write_bytes(loc, b"abc")
        assert storage.read_bytes(loc) == b"abc" and storage.exists(loc) and storage.file_size(loc) == 3
        assert storage.listdir(base) == ["a.txt"] and storage.digest(loc)[0] == 3
        with storage.open_input(loc) as fh:
            assert fh.read() == b"abc"
        storage.delete(loc)
        storage.delete(loc)  # missing_ok
        assert storage.listdir(base) == [] and storage.listdir(storage.join(base, "none")) == []
    fs, path = storage.resolve(f"file://{tmp_path}/u")
    assert type(fs).__name__ == "LocalFileSystem" and path == str(tmp_path / "u")


def test_file_uri_split_reads_in_place(tmp_path: Path) -> None:
    """A file:// split is written, verified and memory-mapped where it is (no cache copy)."""
    uri = f"file://{tmp_path}/train"
    storage.makedirs(uri)
    assert index_fingerprint(uri) is None
    entries = write_split(uri)
    assert read_index(uri)["shards"] == entries and index_fingerprint(uri) == "fp0"
    assert verify_shards(uri) == []
    ss = ShardSet(uri, verify=True, cache_dir=tmp_path / "cache")
    assert ss.directory == tmp_path / "train" and not (tmp_path / "cache").exists()
    assert np.concatenate(ss.column("sample_id")).tolist() == list(range(57))
    assert ss.column("x")[0].shape == (40, 4, 4)
    assert describe(uri, verify=True)["verified"] is True


def test_clear_split_deletes_the_index_first_and_keeps_foreign_files(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    split = tmp_path / "train"
    split.mkdir()
    write_split(split)
    write_rejects(split, [{"sample_id": 3, "reason": "non_numeric", "detail": "f.csv:4"}])
    for name in (".part-00000-of-00002.arrow.tmp-abc", "._index.json.tmp-1", "_preview.png", "index.json",
                 "rejects.jsonl", "notes.txt"):
        (split / name).write_bytes(b"x")
    deleted = []
    real = storage.delete
    monkeypatch.setattr(storage, "delete", lambda loc, missing_ok=True: (deleted.append(storage.basename(loc)),
                                                                          real(loc, missing_ok))[1])
    clear_split(split)
    assert deleted[:2] == [fmt.INDEX_NAME, fmt.LEGACY_INDEX_NAME]
    assert sorted(os.listdir(split)) == ["notes.txt"]
    clear_split(tmp_path / "new" / "split")  # a missing directory is created
    assert (tmp_path / "new" / "split").is_dir()


def test_write_rejects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert write_rejects(tmp_path, []) is None and not (tmp_path / fmt.REJECTS_NAME).exists()
    rejects = [{"sample_id": 1, "reason": "unknown_label", "detail": "x.csv:2 'zebra'"},
               {"sample_id": 5, "reason": "missing_value", "detail": "s3://AKIA:topsecret@b/x.csv:6"}]
    assert write_rejects(tmp_path, rejects) == fmt.REJECTS_NAME
    lines = [json.loads(line) for line in (tmp_path / fmt.REJECTS_NAME).read_text().splitlines()]
    assert lines[0] == rejects[0] and lines[1]["detail"] == "s3://b/x.csv:6"


def test_memory_uri_goes_through_fsspec_and_the_cache(tmp_path: Path) -> None:
    """memory:// is neither local nor pyarrow's: fsspec serves it, and ShardSet maps a cached copy."""
    pytest.importorskip("fsspec")
    uri = "memory://shardtrain-test/run1/train"
    fs, _ = storage.resolve(uri)
    assert type(fs).__name__ == "PyFileSystem"
    entries = write_split(uri, seed=3)
    assert storage.listdir(uri) == sorted([fmt.INDEX_NAME] + [e["file"] for e in entries])
    assert verify_shards(uri) == []
    ss = ShardSet(uri, cache_dir=tmp_path / "cache")
    assert ss.directory.parent == tmp_path / "cache" and ss.location == uri
    assert ss.rows == 57 and np.concatenate(ss.column("sample_id")).tolist() == list(range(57))
    assert not ss.column("x")[0].flags.writeable  # a read-only memory map, not a copy
    clear_split(uri)
    assert storage.listdir(uri) == []
    with pytest.raises(ShardtrainError, match="no such shard directory"):
        read_index(uri)


def test_other_schemes_go_through_pyarrow_and_unknown_ones_are_one_line_errors() -> None:
    pytest.importorskip("pyarrow._gcsfs")
    fs, path = storage.resolve("gs://bucket/out/shards")  # constructed without touching the network
    assert type(fs).__name__ == "GcsFileSystem" and path == "bucket/out/shards"
    with pytest.raises(ShardtrainError, match="^nosuchscheme://b/x: unsupported URI [^\n]*$"):
        storage.resolve("nosuchscheme://b/x")


def test_cache_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert cache.parse_size("1048576") == 1 << 20 and cache.parse_size("512M") == 512 << 20
    assert cache.parse_size("2GiB") == 2 << 30 and cache.parse_size("1.5k") == 1536
    with pytest.raises(ShardtrainError, match="SHARDTRAIN_CACHE_MAX_BYTES: 'lots'"):
        cache.parse_size("lots")
    monkeypatch.setenv(cache.MAX_BYTES_ENV, "10G")
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "c"))
    assert cache.max_cache_bytes() == 10 << 30 and cache.max_cache_bytes(5) == 5
    assert cache.cache_root() == tmp_path / "c" and cache.cache_root(tmp_path / "d") == tmp_path / "d"
    monkeypatch.delenv(cache.CACHE_ENV)
    assert cache.cache_root() == Path.home() / ".cache" / "shardtrain" / "shards"
    assert cache.local_split(tmp_path / "local") == tmp_path / "local"  # local passes through


def test_importing_the_shard_layer_loads_no_object_store_client(tmp_path: Path) -> None:
    code = ("import sys, shardtrain.shards, shardtrain.shards.storage, shardtrain.shards.cache\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'boto3', 'botocore', 'moto', 's3fs', 'fsspec'}))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
