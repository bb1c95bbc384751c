"""The http-log prepare as two shuffles: same shards on either executor, any block size, and as the in-memory path.

The oracle is the previous release's in-memory algorithm, still in the reader
(``prepare_http_log``: every line parsed into one table, sessionised and split globally).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import shardtrain
from shardtrain.config import from_dict
from shardtrain.readers.httplog import HttpLogOptions, prepare_http_log
from shardtrain.shards import ShardSet
from shardtrain.stages import httplog_shuffle as shuffle
from tests.s3server import moto_endpoint, s3  # noqa: F401  (pytest fixtures)
from tests.test_httplog_kind import BAD_STATUS, GARBAGE, combined_log, line

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6000-odd line Combined log with two bad lines (6 and 51)."""
    path = tmp_path_factory.mktemp("shuffle") / "access.log"
    combined_log(path, seed=3, sessions=500, bad=((5, GARBAGE), (50, BAD_STATUS)))
    return path


def prepare(path: str | Path, out: Path, executor: str = "local", **section) -> dict:
    """Run the prepare stage on one log; ``section`` goes to ``prepare`` (block_bytes, shuffle_partitions)."""
    cfg = {"dataset": {"name": "http-log", "options": {"path": str(path)}},
           "prepare": {"rows_per_shard": 250, **section}}
    return shardtrain.run(cfg, stage="prepare", out=out, executor=executor)["prepare"]


def shard_bytes(out: Path) -> dict[str, bytes]:
    """Every shard file of the prepare stage, by its path under the stage directory."""
    root = out / "shards/prepare"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.arrow"))}


def columns(out: Path, split: str) -> dict[str, np.ndarray]:
    """One split's written columns."""
    ss = ShardSet(out / f"shards/prepare/{split}")
    return {k: ss.concat(k) for k in ("sample_id", "x", "label_error", "label_long")}


def test_block_sizes_and_partitions_give_byte_identical_shards(log: Path, tmp_path: Path) -> None:
    base = prepare(log, tmp_path / "one", block_bytes=1 << 30)
    for block, partitions in ((4096, 16), (777, 16), (5000, 1), (3000, 7)):
        name = f"b{block}p{partitions}"
        other = prepare(log, tmp_path / name, block_bytes=block, shuffle_partitions=partitions)
        assert shard_bytes(tmp_path / name) == shard_bytes(tmp_path / "one"), name
        assert all(other[s]["rows"] == base[s]["rows"] for s in SPLITS)
        assert other["train"]["transform"] == base["train"]["transform"]
    assert len(shard_bytes(tmp_path / "one")) > 3  # several shards per split: the comparison has teeth


def test_the_same_connections_and_labels_as_the_in_memory_path(log: Path, tmp_path: Path) -> None:
    for partitions in (1, 5):
        out = tmp_path / f"p{partitions}"
        indexes = prepare(log, out, block_bytes=3000, shuffle_partitions=partitions)
        old, meta = prepare_http_log(log, HttpLogOptions(), seed=0)
        for split in SPLITS:
            new = columns(out, split)
            assert np.array_equal(new["sample_id"], old[split]["sample_id"])  # same rows, same order
            assert np.array_equal(new["label_error"], old[split]["label_error"])
            assert np.array_equal(new["label_long"], old[split]["label_long"])
            assert np.abs(new["x"] - old[split]["x"]).max() < 1e-6
        extra = indexes["train"]["extra"]
        assert extra["split"]["counts"] == meta["split"]["counts"]
        assert extra["split"]["label_counts"] == meta["split"]["label_counts"]
        assert np.allclose(extra["split"]["standardisation"]["mean"], meta["split"]["standardisation"]["mean"],
                           rtol=1e-12, atol=1e-12)
        for key in ("lines", "requests", "connections", "dropped_short", "dropped_tail"):
            assert extra[key] == meta[key], key
        assert indexes["train"]["rejects"]["reasons"] == {"garbage_line": 1, "bad_status": 1}


def test_hash_rule_and_a_test_log_match_the_in_memory_path(log: Path, tmp_path: Path) -> None:
    test_log = tmp_path / "later.log"
    combined_log(test_log, seed=4, sessions=150, start=807249600 + 3 * 86400)
    opts = {"path": str(log), "test_path": str(test_log), "split_rule": "hash"}
    cfg = {"dataset": {"name": "http-log", "options": opts}, "seed": 5, "prepare": {"block_bytes": 2000}}
    shardtrain.run(cfg, stage="prepare", out=tmp_path / "o", executor="local")
    from shardtrain.readers.httplog import build_http_dataset
    from shardtrain.stages.logs import parse_logs

    options = HttpLogOptions(split_rule="hash")
    old, _ = build_http_dataset(parse_logs([log], options, "local"), options, 5,
                                test=parse_logs([test_log], options, "local"))
    for split in SPLITS:
        new = columns(tmp_path / "o", split)
        assert np.array_equal(new["sample_id"], old[split]["sample_id"])
        assert np.array_equal(new["label_error"], old[split]["label_error"])
        assert np.abs(new["x"] - old[split]["x"]).max() < 1e-6


def test_a_host_whose_lines_span_two_blocks_is_one_connection(tmp_path: Path) -> None:
    t0 = 807249600
    lines = [line("a.example", t0 + i) for i in range(6)] + [line("b.example", t0 + 10 + i) for i in range(4)]
    path = tmp_path / "two.log"
    path.write_text("\n".join(lines) + "\n")
    options = HttpLogOptions(min_requests=1, tail_horizon_seconds=0, censor_tail=False)
    size = path.stat().st_size
    for block_bytes, blocks in ((size, 1), (size // 3, 4)):  # host a's 6 lines cut across blocks
        log = shuffle.connections([str(path)], options, "local", block_bytes, 2, "two.log")
        assert len(log["shared"]["first"]) == blocks
        conn = [c for c in log["handles"] if c["sample_id"].size]
        got = sorted((int(i), int(n)) for c in conn for i, n in zip(c["sample_id"], c["x"][:, 0]))
        assert got == [(1, 3), (7, 3)]  # two connections (first lines 1 and 7), n_seen = first_k
        assert log["stats"]["connections"] == 2


def test_ray_and_local_give_byte_identical_shards(log: Path, tmp_path: Path, ray_local) -> None:
    prepare(log, tmp_path / "local", "local", block_bytes=5000, shuffle_partitions=4)
    indexes = prepare(log, tmp_path / "ray", "ray", block_bytes=5000, shuffle_partitions=4)
    assert shard_bytes(tmp_path / "ray") == shard_bytes(tmp_path / "local")
    assert indexes["train"]["rejects"]["reasons"] == {"garbage_line": 1, "bad_status": 1}


def test_a_log_on_s3_prepares_and_predicts_as_the_local_file(log: Path, tmp_path: Path, s3) -> None:  # noqa: F811
    s3.put("logs/access.log", log.read_bytes())
    prepare(log, tmp_path / "local", block_bytes=4096)
    prepare(s3.uri("logs/*.log"), tmp_path / "s3", block_bytes=4096)
    assert shard_bytes(tmp_path / "s3") == shard_bytes(tmp_path / "local")
    rejects = [json.loads(r) for r in (tmp_path / "s3/shards/prepare/train/_rejects.jsonl").read_text().splitlines()]
    assert [(r["sample_id"], r["detail"]) for r in rejects][0] == (6, f"access.log:6: {GARBAGE}")
    cfg = from_dict({"dataset": {"name": "http-log", "options": {"path": s3.uri("logs/access.log")}}})
    fitted = json.loads((tmp_path / "s3/shards/prepare/train/_index.json").read_text())
    remote = cfg.dataset.predict_job(cfg, fitted, s3.uri("logs/access.log"))
    local = cfg.dataset.predict_job(cfg, fitted, log)
    assert np.array_equal(remote.source["x"], local.source["x"]) and remote.source["x"].shape[0] > 100


@pytest.mark.dataset("nasa-http")
def test_nasa_http_matches_the_in_memory_path(data_dir: Path, tmp_path: Path) -> None:
    path = data_dir / "nasa-http/NASA_access_log_Aug95.first20000.log"
    cfg = {"dataset": {"name": "nasa-http"}, "prepare": {"block_bytes": 300_000}}
    indexes = shardtrain.run(cfg, stage="prepare", out=tmp_path / "o", executor="local",
                             data_dir=str(data_dir))["prepare"]
    old, meta = prepare_http_log(path, HttpLogOptions(), seed=indexes["train"]["extra"]["split"]["seed"])
    for split in SPLITS:
        new = columns(tmp_path / "o", split)
        assert np.array_equal(new["sample_id"], old[split]["sample_id"]) and len(new["sample_id"]) > 100
        assert np.array_equal(new["label_error"], old[split]["label_error"])
        assert np.array_equal(new["label_long"], old[split]["label_long"])
        assert np.abs(new["x"] - old[split]["x"]).max() < 1e-6
    assert indexes["train"]["extra"]["connections"] == meta["connections"] == 1942


def test_too_many_rejects_fail_before_any_reduce_naming_the_first_line(tmp_path: Path) -> None:
    from shardtrain.core.errors import ShardtrainError

    path = tmp_path / "bad.log"
    good = [line("h.example", 807249600 + i) for i in range(30)]
    path.write_text("\n".join(good[:20] + [GARBAGE] * 3 + good[20:]) + "\n")
    with pytest.raises(ShardtrainError, match=r"bad.log: 3 of 33 lines rejected .*first: line 21 garbage_line"):
        shuffle.connections([str(path)], HttpLogOptions(), "local", 200, 3, "bad.log")


def test_a_gzipped_log_and_two_files_give_the_plain_logs_shards(log: Path, tmp_path: Path) -> None:
    import gzip

    text = log.read_bytes()
    (tmp_path / "gz").mkdir()
    (tmp_path / "gz/access.log.gz").write_bytes(gzip.compress(text))
    (tmp_path / "two").mkdir()
    cut = text.index(b"\n", len(text) // 2) + 1
    (tmp_path / "two/a.log").write_bytes(text[:cut])
    (tmp_path / "two/b.log").write_bytes(text[cut:])
    prepare(log, tmp_path / "plain", block_bytes=3000)
    for name in ("gz", "two"):
        prepare(tmp_path / name, tmp_path / f"out-{name}", block_bytes=3000)  # a directory: its files, one log
        assert shard_bytes(tmp_path / f"out-{name}") == shard_bytes(tmp_path / "plain"), name
