"""kdd99 prepare planned in blocks: the driver merges summaries, the shard tasks read their blocks.

Synthetic KDD-format data (a few thousand lines with rejects, common and rare attack
classes) checks that the planned path gives the in-memory reader's rows, carve and
statistics (``readers.kdd99.prepare_kdd99``, the previous release's algorithm), that
the output is the same for every block size, for the local and Ray executors, for a
glob of several files and for an ``s3://`` input; the real files are compared with the
in-memory path too.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import shardtrain
from shardtrain.core.errors import ShardtrainError
from shardtrain.readers import kdd99
from shardtrain.stages import kdd99 as stage
from tests.s3server import moto_endpoint, s3  # noqa: F401  (pytest fixtures)

TYPES = "back dos\nsmurf dos\nneptune dos\nsatan probe\nguess_passwd r2l\nrootkit u2r\nphf r2l\n"
ATTACKS = [("normal", 0.45), ("smurf", 0.3), ("neptune", 0.15), ("satan", 0.05), ("back", 0.04),
           ("guess_passwd", 0.005), ("rootkit", 0.003), ("phf", 0.002)]
SPLITS = ("train", "val", "test")


def _record(rng: np.random.Generator, label: str) -> str:
    """One random 42-field KDD line (numeric fields of several scales, three symbolic ones)."""
    nums = [str(int(v)) for v in rng.integers(0, 10, 38)]
    nums[kdd99.NUMERIC.index("src_bytes")] = str(int(rng.integers(0, 10**7)))
    nums[kdd99.NUMERIC.index("dst_bytes")] = str(int(rng.integers(0, 10**5)))
    nums[kdd99.NUMERIC.index("same_srv_rate")] = f"{rng.random():.2f}"
    nums[kdd99.NUMERIC.index("num_outbound_cmds")] = "0"  # constant: std 0 -> 1
    proto = ["tcp", "udp", "icmp"][int(rng.integers(0, 3))]
    service = ["http", "smtp", "ftp", "private", "ecr_i", "domain_u"][int(rng.integers(0, 6))]
    flag = ["SF", "S0", "REJ", "RSTO"][int(rng.integers(0, 4))]
    return ",".join([nums[0], proto, service, flag, *nums[1:], f"{label}."])


def _lines(n: int, seed: int, extra_attacks: tuple[str, ...] = ()) -> list[str]:
    """``n`` records with some rejects mixed in (bad field counts, non-numeric, empty, missing)."""
    rng = np.random.default_rng(seed)
    names = [a for a, _ in ATTACKS] + list(extra_attacks)
    p = np.array([w for _, w in ATTACKS] + [0.01] * len(extra_attacks))
    labels = rng.choice(names, size=n, p=p / p.sum())
    lines = [_record(rng, str(lab)) for lab in labels]
    lines[0] = lines[0].replace("phf.", "normal.")
    lines.append(_record(rng, "rare_one"))  # a class of one row: round(0.1) = 0 validation rows
    lines += [_record(rng, "rare_two"), _record(rng, "rare_two")]
    for i in rng.choice(np.arange(5, n), size=12, replace=False):
        kind = int(i) % 4
        lines[i] = ("garbage" if kind == 0 else "" if kind == 1 else
                    lines[i].replace(",", ",x", 1) if kind == 2 else lines[i].replace(",", ",,", 1))
    return lines


@pytest.fixture(scope="module")
def kdd(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """train.csv (3000 records + rejects, also as train.gz and as three part files), test.csv, the types."""
    root = tmp_path_factory.mktemp("kdd")
    train = _lines(3000, 0)
    text = "\n".join(train) + "\n"
    (root / "train.csv").write_text(text)
    import gzip

    (root / "train.gz").write_bytes(gzip.compress(text.encode()))
    (root / "parts").mkdir()
    for k, (lo, hi) in enumerate([(0, 700), (700, 701), (701, len(train))]):
        (root / "parts" / f"part-{k}.csv").write_text("\n".join(train[lo:hi]) + "\n")
    (root / "parts" / "part-3.csv").write_text("")  # an empty file adds no line
    (root / "test.csv").write_text("\n".join(_lines(800, 1, ("mailbomb", "brandnew"))) + "\n")
    (root / "kddcup99").mkdir()
    (root / "kddcup99" / "training_attack_types").write_text(TYPES)
    return {"root": root, "train": root / "train.csv", "gz": root / "train.gz", "test": root / "test.csv",
            "types": root / "kddcup99" / "training_attack_types"}


def _columns(jobs: list) -> dict[str, dict[str, np.ndarray]]:
    """Every split's rows, loaded from its Parts the way the shard tasks load them."""
    return {j.split: j.source.read(0, j.source.rows()) for j in jobs}


def _options(**kw) -> kdd99.Kdd99Options:
    return kdd99.Kdd99Options(max_reject_fraction=0.05, **kw)


def test_planned_equals_the_in_memory_reader_for_every_block_size(kdd: dict[str, Path]) -> None:
    old, meta = kdd99.prepare_kdd99(kdd["train"], kdd["test"], kdd["types"], _options(), seed=3)
    first = None
    for block_bytes in (2000, 9973, 64 << 10, 32 << 20):  # 2000: about 15 lines a block
        jobs = stage.kdd99_jobs(kdd["train"], kdd["test"], kdd["types"], _options(), 3, "local", block_bytes)
        got = _columns(jobs)
        for split in SPLITS:
            assert got[split]["sample_id"].tolist() == old[split]["sample_id"].tolist()
            assert np.array_equal(got[split]["label_attack"], old[split]["label_attack"])
            assert np.array_equal(got[split]["label_category"], old[split]["label_category"])
            np.testing.assert_allclose(got[split]["x"], old[split]["x"], rtol=0, atol=1e-6)
        extra = jobs[0].describe["extra"]
        np.testing.assert_allclose(extra["standardisation"]["mean"], meta["standardisation"]["mean"], rtol=1e-9)
        np.testing.assert_allclose(extra["standardisation"]["std"], meta["standardisation"]["std"], rtol=1e-9)
        for key in ("vocab", "counts", "attack_counts", "unknown_categories", "category_map"):
            assert json.dumps(extra[key]) == json.dumps(meta[key]), key  # same values, same key order
        pre = {j.split: j.pre_rejects for j in jobs}
        assert [r["sample_id"] for r in pre["train"]] == meta["rejects"]["train"]["rows"]["sample_id"].tolist()
        assert [r["detail"] for r in pre["train"]] == meta["rejects"]["train"]["rows"]["detail"].tolist()
        assert len(pre["test"]) == meta["rejects"]["test"]["count"] > 0
        if first is None:
            first = (got, extra)
        else:  # exactly the same output whatever the block size
            assert json.dumps(extra, sort_keys=True) == json.dumps(first[1], sort_keys=True)
            for split in SPLITS:
                for col, values in got[split].items():
                    assert np.array_equal(values, first[0][split][col]), (block_bytes, split, col)
    assert meta["counts"]["val"] > 0 and "rare_one" not in meta["attack_counts"]["val"]


def test_carve_is_the_in_memory_validation_mask_row_for_row(kdd: dict[str, Path]) -> None:
    cols, _ = kdd99.read_kdd_file(kdd["train"], max_reject_fraction=0.05)
    for seed, fraction in ((0, 0.1), (11, 0.37)):
        expected = kdd99.validation_mask(cols["attack"], cols["line_no"], fraction, seed)
        jobs = stage.kdd99_jobs(kdd["train"], kdd["test"], kdd["types"], _options(val_fraction=fraction), seed,
                                "local", 8192)
        val = next(j for j in jobs if j.split == "val").source
        assert val.read(0, val.rows())["sample_id"].tolist() == cols["line_no"][expected].tolist()
        assert len(val.parts) > 1  # read from several blocks


def test_a_glob_of_several_files_is_the_concatenated_file(kdd: dict[str, Path]) -> None:
    one = _columns(stage.kdd99_jobs(kdd["train"], kdd["test"], kdd["types"], _options(), 0, "local", 4096))
    from shardtrain.shards import storage

    parts = storage.expand(str(kdd["root"] / "parts" / "part-*.csv"))
    assert len(parts) == 4
    many = _columns(stage.kdd99_jobs(parts, kdd["test"], kdd["types"], _options(), 0, "local", 4096))
    gz = _columns(stage.kdd99_jobs(kdd["gz"], kdd["test"], kdd["types"], _options(), 0, "local", 4096))
    for other in (many, gz):
        for split in SPLITS:
            for col in one[split]:
                assert np.array_equal(one[split][col], other[split][col]), (split, col)


def _shard_digests(out: Path) -> dict[str, str]:
    """sha256 of every shard file (not the indexes, which hold timings) under ``out/shards/prepare``."""
    files = sorted(p for p in (out / "shards" / "prepare").rglob("*") if p.is_file() and not p.name.startswith("_"))
    assert files
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _config(train: str, test: str, block_bytes: int) -> dict:
    return {"dataset": {"name": "kdd99", "options": {"train_path": train, "test_path": test,
                                                     "max_reject_fraction": 0.05}},
            "prepare": {"block_bytes": block_bytes, "max_reject_fraction": 0.05}}


def test_prepare_shards_are_identical_on_local_and_ray_and_across_block_sizes(
        kdd: dict[str, Path], tmp_path: Path, ray_local, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARDTRAIN_OFFLINE", "1")
    glob = str(kdd["root"] / "parts" / "*.csv")
    runs = {("local", 1 << 20): (str(kdd["train"]), 1 << 20), ("local", 3000): (glob, 3000),
            ("ray", 3000): (glob, 3000), ("ray", 50000): (str(kdd["train"]), 50000)}
    digests = {}
    for (executor, block_bytes), (train, bb) in runs.items():
        out = tmp_path / f"{executor}-{block_bytes}"
        indexes = shardtrain.run(_config(train, str(kdd["test"]), bb), stage="prepare", out=out,
                                 executor=executor, data_dir=str(kdd["root"]))["prepare"]
        assert indexes["val"]["rows"] > 0
        digests[(executor, block_bytes)] = _shard_digests(out)
    values = list(digests.values())
    assert all(v == values[0] for v in values[1:]), digests


def test_an_s3_input_gives_the_same_shards(kdd: dict[str, Path], tmp_path: Path, s3,  # noqa: F811
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARDTRAIN_OFFLINE", "1")
    for p in sorted((kdd["root"] / "parts").iterdir()):
        s3.put(f"in/train/{p.name}", p.read_bytes())
    s3.put("in/test.csv", kdd["test"].read_bytes())
    local = tmp_path / "local"
    shardtrain.run(_config(str(kdd["train"]), str(kdd["test"]), 5000), stage="prepare", out=local,
                   executor="local", data_dir=str(kdd["root"]))
    remote = tmp_path / "remote"
    index = shardtrain.run(_config(s3.uri("in/train/"), s3.uri("in/test.csv"), 5000), stage="prepare", out=remote,
                           executor="local", data_dir=str(kdd["root"]))["prepare"]["train"]
    assert _shard_digests(local) == {k.replace("remote", "local"): v for k, v in _shard_digests(remote).items()}
    text = json.dumps(index)
    assert s3.secret not in text and s3.key_id not in text
    assert s3.uri("in/train/part-0.csv") in index["extra"]["inputs"]["train"]


def test_a_train_path_that_matches_nothing_is_one_config_error(kdd: dict[str, Path], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARDTRAIN_OFFLINE", "1")
    with pytest.raises(ShardtrainError, match=r"dataset.options.train_path': .*nothing-\*.csv matches"):
        shardtrain.run(_config(str(kdd["root"] / "nothing-*.csv"), str(kdd["test"]), 5000), stage="prepare",
                       out=tmp_path / "o", executor="local", data_dir=str(kdd["root"]))


@pytest.mark.dataset("kdd99")
def test_real_files_planned_equal_the_in_memory_reader(data_dir: Path) -> None:
    root = data_dir / "kddcup99"
    files = (root / "kddcup.data_10_percent.gz", root / "corrected.gz", root / "training_attack_types")
    old, meta = kdd99.prepare_kdd99(*files, kdd99.Kdd99Options(), seed=0)
    jobs = stage.kdd99_jobs(*files, kdd99.Kdd99Options(), 0, "local")
    extra = jobs[0].describe["extra"]
    np.testing.assert_allclose(extra["standardisation"]["std"], meta["standardisation"]["std"], rtol=1e-9)
    for job in jobs:
        got, want = job.source.read(0, job.source.rows()), old[job.split]
        assert np.array_equal(got["sample_id"], want["sample_id"])
        assert np.array_equal(got["label_attack"], want["label_attack"])
        assert np.array_equal(got["label_category"], want["label_category"])
        np.testing.assert_allclose(got["x"], want["x"], rtol=0, atol=1e-6)
    assert extra["counts"] == meta["counts"] and extra["attack_counts"] == meta["attack_counts"]


def test_drop_duplicates_still_reads_in_the_driver_with_the_same_rows(kdd: dict[str, Path], tmp_path: Path) -> None:
    lines = kdd["train"].read_text().splitlines()
    dup = tmp_path / "dup.csv"
    dup.write_text("\n".join(lines + lines[100:400]) + "\n")  # 300 exact copies of earlier records
    opts = _options(drop_duplicates=True)
    old, meta = kdd99.prepare_kdd99(dup, kdd["test"], kdd["types"], opts, seed=0)
    jobs = stage.kdd99_jobs([dup], kdd["test"], kdd["types"], opts, 0, "local", 4096)
    assert meta["duplicates_dropped"] >= 290  # (a reject among the copies is no record)
    for job in jobs:
        assert isinstance(job.source, dict)  # in memory: rows are compared across the whole input
        for col, values in old[job.split].items():
            assert np.array_equal(job.source[col], values), (job.split, col)
    assert jobs[0].describe["extra"]["duplicates_dropped"] == meta["duplicates_dropped"]
