"""The shard layer on a real S3 API: moto's server on 127.0.0.1 (tests/s3server.py).

Shards and indexes written to s3://, read back (index, ShardSet through the cache,
verify, inspect), the commit protocol (no index until the end; an overwritten or partial
object is named), the cache (fill, reuse, corruption, eviction, two fillers) and no
credential in any index, error or log text.
"""

from __future__ import annotations

import json
import logging
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
    read_index,
    shard_name,
    storage,
    verify_shards,
    write_rejects,
    write_shard,
)
from shardtrain.shards import cache
from shardtrain.shards import format as fmt
from shardtrain.shards.inspection import describe, format_text
from tests.s3server import S3Bucket, moto_endpoint, s3  # noqa: F401  (pytest fixtures)
from tests.test_storage import write_split


def _entries(root: Path) -> list[str]:
    """Cache entries and leftovers (temporary or trash directories) under ``root``."""
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_write_read_verify_inspect_on_s3(s3: S3Bucket, tmp_path: Path) -> None:
    uri = s3.uri("out/shards/prepare/train")
    entries = write_split(uri)
    assert s3.keys("out") == sorted(f"out/shards/prepare/train/{n}" for n in
                                    [fmt.INDEX_NAME] + [e["file"] for e in entries])
    index = read_index(uri)
    assert index["rows"] == 57 and index["shards"] == entries
    assert verify_shards(uri) == []
    local = tmp_path / "local"
    local.mkdir()
    assert write_split(local) == entries  # the same bytes on S3 as on local disk
    assert s3.get(f"out/shards/prepare/train/{entries[0]['file']}") == (local / entries[0]["file"]).read_bytes()
    ss = ShardSet(uri, verify=True, cache_dir=tmp_path / "cache")
    assert ss.location == uri and ss.directory.parent == tmp_path / "cache"
    assert np.concatenate(ss.column("sample_id")).tolist() == list(range(57))
    assert (ss.column("x")[1] == ShardSet(local).column("x")[1]).all()
    assert not ss.column("x")[0].flags.writeable  # memory-mapped from the cache, zero copy
    report = describe(uri, verify=True)
    assert report["verified"] and report["rows"] == 57 and report["dir"] == uri
    assert "verified every shard's sha256: OK" in format_text(report)


def test_no_index_until_the_end_and_a_rerun_completes(s3: S3Bucket, tmp_path: Path) -> None:
    """A stage killed before its index (shards only) is refused; a rerun clears and commits."""
    uri = s3.uri("o/train")
    write_split(uri, sizes=(30, 30, 30), seed=1)
    s3.put("o/train/_rejects.jsonl", b'{"sample_id": 0}\n')
    clear_split(uri)  # the rerun's first step: index gone first, then shards and rejects
    assert s3.keys("o") == []
    # The "killed" run: two of three shards written, then the driver dies before the index.
    for i in range(2):
        write_shard(storage.join(uri, shard_name(i, 3)), {"sample_id": np.arange(i * 5, i * 5 + 5)}, (i, 3))
    with pytest.raises(ShardtrainError, match=r"_index.json: missing \(the stage did not finish"):
        read_index(uri)
    with pytest.raises(ShardtrainError, match="missing"):
        ShardSet(uri, cache_dir=tmp_path / "cache")
    assert verify_shards(uri)[0].endswith("missing (the stage did not finish; re-run it)")
    assert not describe(uri).get("format")
    # The rerun: clear (index first), write every shard, then the index.
    clear_split(uri)
    entries = write_split(uri, sizes=(20, 20), seed=2)
    assert s3.keys("o") == sorted([f"o/train/{fmt.INDEX_NAME}"] + [f"o/train/{e['file']}" for e in entries])
    assert verify_shards(uri) == [] and ShardSet(uri, cache_dir=tmp_path / "cache").rows == 40


def test_overwritten_or_partial_object_is_named(s3: S3Bucket, tmp_path: Path) -> None:
    uri = s3.uri("o/train")
    entries = write_split(uri)
    first, second = (f"o/train/{e['file']}" for e in entries)
    good = s3.get(second)
    s3.put(second, good[: len(good) // 2])  # partial
    problems = verify_shards(uri)
    assert problems == [f"{uri}/{entries[1]['file']}: {len(good) // 2} bytes, index says {entries[1]['bytes']}"]
    root = tmp_path / "cache"
    with pytest.raises(ShardtrainError, match=f"{entries[1]['file']}: .*overwritten or partial; the copy was removed"):
        ShardSet(uri, cache_dir=root)
    assert _entries(root) == []  # nothing of the bad fill is kept
    s3.put(second, good)
    original = s3.get(first)
    blob = bytearray(original)
    blob[-20] ^= 0xFF  # same size, other bytes: a zombie writer's different shard
    s3.put(first, bytes(blob))
    assert verify_shards(uri) == [f"{uri}/{entries[0]['file']}: sha256 mismatch"]
    with pytest.raises(ShardtrainError, match=entries[0]["file"]):
        cache.local_split(uri, cache_dir=root)
    assert _entries(root) == []
    s3.put(first, original)
    assert verify_shards(uri) == [] and ShardSet(uri, cache_dir=root).rows == 57


def test_cache_fill_reuse_refill_and_two_fillers(s3: S3Bucket, tmp_path: Path) -> None:
    uri = s3.uri("o/train")
    entries = write_split(uri)
    root = tmp_path / "cache"
    local = cache.local_split(uri, cache_dir=root)
    assert sorted(p.name for p in local.iterdir()) == sorted([fmt.INDEX_NAME, cache.ENTRY_META]
                                                             + [e["file"] for e in entries])
    assert json.loads((local / cache.ENTRY_META).read_text())["uri"] == uri
    # Reused while the index is unchanged: no shard object is read again.
    for e in entries:
        storage.delete(storage.join(uri, e["file"]))
    assert cache.local_split(uri, cache_dir=root) == local
    # A locally damaged entry is filled again (here from the re-written split).
    write_split(uri)
    (local / entries[0]["file"]).write_bytes(b"short")
    assert cache.local_split(uri, cache_dir=root) == local
    assert (local / entries[0]["file"]).stat().st_size == entries[0]["bytes"]
    # A new index (re-run with other data) is a new entry; the stale one is dropped.
    write_split(uri, seed=5)
    newer = cache.local_split(uri, cache_dir=root)
    assert newer != local and _entries(root) == [newer.name]
    # Two processes fill one entry at once: both end with the one verified copy.
    cache._remove(newer)
    code = ("import sys; from shardtrain.shards import cache; "
            "print(cache.local_split(sys.argv[1], cache_dir=sys.argv[2]))")
    env = {**os.environ, **s3.env}
    procs = [subprocess.Popen([sys.executable, "-c", code, uri, str(root)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    assert [Path(out.strip()) for out, _ in outputs] == [newer, newer] and _entries(root) == [newer.name]
    index, raw, where = fmt.load_index(uri)
    # The loser's path, deterministically: its rename finds the winner's entry and uses it.
    assert cache._fill(uri, root, newer.name, index, raw, fmt.INDEX_NAME, 1) == newer
    assert _entries(root) == [newer.name] and ShardSet(uri, cache_dir=root).rows == 57


def test_cache_size_limit_evicts_least_recently_used(s3: S3Bucket, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "cache"
    uris = [s3.uri(f"o{i}/train") for i in range(3)]
    for i, uri in enumerate(uris):
        write_split(uri, seed=i)
    size = fmt.load_index(uris[0])[1].__len__() + sum(e["bytes"] for e in read_index(uris[0])["shards"])
    monkeypatch.setenv(cache.MAX_BYTES_ENV, str(int(size * 2.5)))  # room for two entries
    a = cache.local_split(uris[0], cache_dir=root)
    b = cache.local_split(uris[1], cache_dir=root)
    os.utime(a / cache.ENTRY_META, (1_000, 1_000))  # a used long ago ...
    os.utime(b / cache.ENTRY_META, (2_000, 2_000))  # ... b less long ago
    assert cache.local_split(uris[0], cache_dir=root) == a  # using a makes b the least recent
    c = cache.local_split(uris[2], cache_dir=root)
    assert _entries(root) == sorted([a.name, c.name])
    with pytest.raises(ShardtrainError, match=rf"{uris[1]}: the split is {size:,} bytes, more than the shard "
                                              rf"cache's limit of 100 bytes"):
        cache.local_split(uris[1], cache_dir=root, max_bytes=100)


def test_no_credential_in_index_rejects_errors_logs_or_cache(s3: S3Bucket, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture,
                                                              capfd: pytest.CaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with_creds = f"s3://{s3.key_id}:{s3.secret}@{s3.bucket}/o/train"
    uri = s3.uri("o/train")
    texts = []
    # Credentials in the URI itself are used (moto accepts them) and never written down.
    write_split(with_creds, config={"out": with_creds, "note": f"key {s3.secret}"})
    write_rejects(with_creds, [{"sample_id": 1, "reason": "missing_value", "detail": f"{with_creds}/in.csv:3"}])
    for key in s3.keys("o"):
        texts.append(s3.get(key).decode("latin-1"))
    index = read_index(with_creds)
    assert index["config"]["out"] == uri and index["config"]["note"] == "key ***"
    ss = ShardSet(with_creds, cache_dir=tmp_path / "cache")
    texts += [ss.location, str(ss.directory)]
    for path in (tmp_path / "cache").rglob("*"):
        if path.is_file():
            texts.append(path.read_bytes().decode("latin-1"))
    texts.append(json.dumps(describe(with_creds, verify=True)))
    # Errors: a missing split, a missing bucket, a bad shard, an unknown scheme.
    for bad in (f"s3://{s3.key_id}:{s3.secret}@{s3.bucket}/nothing/here",
                f"s3://{s3.key_id}:{s3.secret}@no-such-bucket-{s3.bucket}/x"):
        with pytest.raises(ShardtrainError) as err:
            read_index(bad)
        texts.append(str(err.value))
        texts += verify_shards(bad)
        texts.append(format_text(describe(bad)))
    s3.put(f"o/train/{index['shards'][0]['file']}", b"garbage")
    problems = verify_shards(with_creds)
    with pytest.raises(ShardtrainError) as err:
        cache.local_split(with_creds, cache_dir=tmp_path / "cache2")
    assert problems[0].startswith(f"{uri}/{index['shards'][0]['file']}: 7 bytes")
    assert str(err.value).startswith(f"{uri}/{index['shards'][0]['file']}: 7 bytes with sha256")
    texts += problems + [str(err.value)]
    with pytest.raises(ShardtrainError) as err:
        storage.resolve(f"nosuch://{s3.key_id}:{s3.secret}@h/x")
    texts.append(str(err.value))
    out, errtext = capfd.readouterr()
    texts += [out, errtext, caplog.text]
    joined = "\n".join(texts)
    assert s3.secret not in joined and s3.key_id not in joined


def test_an_object_larger_than_one_upload_part_round_trips(s3: S3Bucket) -> None:
    """Above pyarrow's part size (10 MiB) the upload is multipart; it still lands whole."""
    import hashlib

    data = np.random.default_rng(0).integers(0, 256, 11 << 20, dtype=np.uint8).tobytes()
    storage.write_bytes(s3.uri("big/blob.bin"), data)
    assert storage.file_size(s3.uri("big/blob.bin")) == len(data)
    assert storage.digest(s3.uri("big/blob.bin")) == (len(data), hashlib.sha256(data).hexdigest())
    assert storage.listdir(s3.uri("big")) == ["blob.bin"]
