"""KDD Cup 99 reader: synthetic gzip files with known rows, rejects, labels, splits; the real 10% file."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from shardtrain.core.errors import ShardtrainError
from shardtrain.core.validation import validate
from shardtrain.readers import kdd99

TYPES = "back dos\nsmurf dos\nneptune dos\nsatan probe\nguess_passwd r2l\nrootkit u2r\n"


def record(proto: str = "tcp", service: str = "http", flag: str = "SF", src_bytes: int = 181,
           label: str = "normal", count: int = 8) -> str:
    """One 42-field KDD line; every other numeric field is 0 (rates 0.00)."""
    nums = ["0"] * 38
    nums[kdd99.NUMERIC.index("src_bytes")] = str(src_bytes)
    nums[kdd99.NUMERIC.index("count")] = str(count)
    nums[kdd99.NUMERIC.index("same_srv_rate")] = "1.00"
    fields = [nums[0], proto, service, flag, *nums[1:], f"{label}."]
    assert len(fields) == 42
    return ",".join(fields)


def write_gz(path: Path, lines: list[str]) -> Path:
    with gzip.open(path, "wt") as f:
        f.write("\n".join(lines) + "\n")
    return path


@pytest.fixture()
def kdd_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(0)
    train = [record("tcp", "http", "SF", int(b), "normal") for b in rng.integers(100, 5000, 60)]
    train += [record("icmp", "ecr_i", "SF", 1032, "smurf") for _ in range(30)]
    train += [record("tcp", "private", "S0", 0, "neptune") for _ in range(20)]
    train += [record("tcp", "ftp", "RSTO", 20, "guess_passwd")]
    test = [
        record("tcp", "http", "SF", 300, "normal"),
        record("tcp", "gopher", "SF", 10, "normal"),  # service never seen in train
        record("tcp", "smtp", "SF", 10**6, "mailbomb"),  # test-only attack, known category dos
        record("tcp", "http", "SF", 50, "httptunnel"),  # disputed category
        record("udp", "private", "SH", 0, "brandnew"),  # unknown attack; udp and SH unseen
        record("icmp", "ecr_i", "SF", 1032, "smurf"),
    ]
    types = tmp_path / "training_attack_types"
    types.write_text(TYPES)
    return write_gz(tmp_path / "train.gz", train), write_gz(tmp_path / "test.gz", test), types


def test_synthetic_files_give_known_features_and_labels(kdd_files: tuple[Path, Path, Path]) -> None:
    splits, meta = kdd99.prepare_kdd99(*kdd_files, kdd99.Kdd99Options(val_fraction=0.1), seed=0)
    assert meta["counts"] == {"train": 100, "val": 11, "test": 6}  # round(0.1 * 60, 30, 20, 1) = 6+3+2+0
    assert meta["attack_counts"]["val"] == {"normal": 6, "smurf": 3, "neptune": 2}
    # vocabulary from the train split only
    assert meta["vocab"] == {"protocol_type": ["icmp", "tcp"], "service": ["ecr_i", "ftp", "http", "private"],
                             "flag": ["RSTO", "S0", "SF"]}
    assert meta["unknown_categories"]["test"] == {
        "protocol_type": {"udp": 1}, "service": {"gopher": 1, "smtp": 1}, "flag": {"SH": 1}}
    te = splits["test"]
    assert te["sample_id"].tolist() == [1, 2, 3, 4, 5, 6]
    assert te["label_attack"].tolist() == [0, 0, 1, 1, 1, 1]
    assert te["label_category"].tolist() == [0, 0, 1, -1, -1, 1]
    names = meta["feature_names"]
    assert len(names) == te["x"].shape[1] == 38 + 2 + 4 + 3 and te["x"].dtype == np.float32
    service = [i for i, n in enumerate(names) if n.startswith("service=")]
    assert te["x"][1, service].sum() == 0 and te["x"][0, service].tolist() == [0, 0, 1, 0]
    proto_flag = [i for i, n in enumerate(names) if n.startswith(("protocol_type=", "flag="))]
    assert te["x"][4, proto_flag].sum() == 0
    # standardisation statistics from the train split only (signed log1p first)
    train_ids = splits["train"]["sample_id"]
    j = kdd99.NUMERIC.index("src_bytes")
    assert names[j] == "log1p_src_bytes"
    raw = np.array([float(line.split(",")[4]) for line in gzip.open(kdd_files[0], "rt").read().splitlines()])
    col = np.log1p(raw[train_ids - 1])
    assert meta["standardisation"]["mean"][j] == pytest.approx(col.mean())
    assert splits["train"]["x"][:, j] == pytest.approx((col - col.mean()) / col.std(), abs=1e-5)
    assert te["x"][2, j] == pytest.approx((np.log1p(10**6) - col.mean()) / col.std(), rel=1e-5)


def test_validation_split_is_stratified_and_seeded(kdd_files: tuple[Path, Path, Path]) -> None:
    a, _ = kdd99.prepare_kdd99(*kdd_files, seed=0)
    b, _ = kdd99.prepare_kdd99(*kdd_files, seed=0)
    c, _ = kdd99.prepare_kdd99(*kdd_files, seed=7)
    assert np.array_equal(a["val"]["sample_id"], b["val"]["sample_id"])
    assert not np.array_equal(a["val"]["sample_id"], c["val"]["sample_id"])
    assert len(c["val"]["sample_id"]) == 11
    both = np.concatenate([a["train"]["sample_id"], a["val"]["sample_id"]])
    assert sorted(both.tolist()) == list(range(1, 112))


def test_bad_records_are_rejected_with_reason_and_line(tmp_path: Path) -> None:
    good = [record(src_bytes=i) for i in range(20)]
    lines = good[:3] + [
        "complete garbage",  # line 4
        record()[:60],  # 5: truncated
        record().replace(",http,", ",http,extra,"),  # 6: 43 fields
        record().replace(",181,", ",18x1,"),  # 7: non-numeric src_bytes
        "",  # 8: empty line
        record().replace(",181,", ",,"),  # 9: missing numeric
        record().replace(",http,", ",,"),  # 10: missing service
        record().replace(",181,", ",nan,"),  # 11: not a finite number
    ] + good[3:]
    cols, rej = kdd99.read_kdd_file(write_gz(tmp_path / "bad.gz", lines), max_reject_fraction=0.5)
    assert rej["rows"]["sample_id"].tolist() == [4, 5, 6, 7, 8, 9, 10, 11]
    assert rej["rows"]["reason"].tolist() == [
        "wrong_field_count", "wrong_field_count", "wrong_field_count", "non_numeric_field",
        "empty_line", "missing_field", "missing_field", "non_numeric_field"]
    assert rej["rows"]["detail"][0] == "complete garbage" and rej["rows"]["detail"][3] == "src_bytes='18x1'"
    assert rej["rows"]["detail"][6] == "service is empty"
    assert rej["reasons"] == {"wrong_field_count": 3, "non_numeric_field": 2, "empty_line": 1,
                              "missing_field": 2}
    assert cols["line_no"].tolist() == [1, 2, 3, *range(12, 29)]  # nothing else lost
    assert cols["numeric"][:, kdd99.NUMERIC.index("src_bytes")].tolist() == list(range(20))
    assert cols["attack"].to_pylist() == ["normal"] * 20


def test_mostly_garbage_file_fails_with_one_line_error(tmp_path: Path,
                                                       kdd_files: tuple[Path, Path, Path]) -> None:
    bad = write_gz(tmp_path / "junk.gz", [record()] + ["<html>not kdd</html>"] * 9)
    expected = r"junk\.gz: 9 of 10 lines rejected.*line 2 wrong_field_count"
    with pytest.raises(ShardtrainError, match=expected) as e:
        kdd99.prepare_kdd99(kdd_files[0], bad, kdd_files[2])
    assert "\n" not in str(e.value)
    with pytest.raises(ShardtrainError, match="not_there.gz"):
        kdd99.read_kdd_file(tmp_path / "not_there.gz")


def test_attack_types_and_options_are_validated(tmp_path: Path) -> None:
    types = tmp_path / "types"
    types.write_text("back dos\nsmurf denial\n")
    with pytest.raises(ShardtrainError, match=r"types:2"):
        kdd99.read_attack_types(types)
    with pytest.raises(ShardtrainError, match="dataset.options.log1p_columns"):
        kdd99.Kdd99Options(log1p_columns=("service",))
    with pytest.raises(ShardtrainError, match="dataset.options.val_fractio"):
        validate(kdd99.Kdd99Options, {"val_fractio": 0.2}, "dataset.options")


@pytest.mark.dataset("kdd99")
def test_real_10_percent_file(data_dir: Path) -> None:
    root = data_dir / "kddcup99"
    cols, rej = kdd99.read_kdd_file(root / "kddcup.data_10_percent.gz")
    assert rej["count"] == 0 and len(cols["line_no"]) == 494021 and cols["numeric"].shape == (494021, 38)
    counts = {d["values"]: d["counts"] for d in cols["attack"].value_counts().to_pylist()}
    assert counts["smurf"] == 280790 and counts["normal"] == 97278 and len(counts) == 23
    categories = kdd99.category_map(kdd99.read_attack_types(root / "training_attack_types"))
    is_attack, category = kdd99.labels(cols["attack"], categories)
    assert is_attack.sum() == 494021 - 97278 and (category >= 0).all()
