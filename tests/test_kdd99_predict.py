"""kdd99 predict: a new KDD-format file encoded with the training split's transform."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shardtrain.core.errors import ShardtrainError
from shardtrain.config import from_dict
from tests.s3server import moto_endpoint, s3  # noqa: F401  (pytest fixtures)


def _kdd_record(service: str = "http", src_bytes: int = 181, label: str = "normal", proto: str = "tcp") -> str:
    """One 42-field KDD line (other numeric fields 0)."""
    from shardtrain.readers import kdd99

    nums = ["0"] * 38
    nums[kdd99.NUMERIC.index("src_bytes")] = str(src_bytes)
    return ",".join([nums[0], proto, service, "SF", *nums[1:], f"{label}."])


def test_kdd99_predict_job_encodes_with_the_training_transform(tmp_path: Path) -> None:
    from shardtrain.readers.kdd99 import Kdd99Options
    from shardtrain.stages import kdd99 as stage

    rng = np.random.default_rng(0)
    train = [_kdd_record("http", int(b)) for b in rng.integers(100, 5000, 60)]
    train += [_kdd_record("ecr_i", 1032, "smurf", "icmp") for _ in range(30)]
    test = [_kdd_record("http", 300), _kdd_record("gopher", 10), _kdd_record("smtp", 10**6, "mailbomb"),
            _kdd_record("http", 50, "brandnew")]
    (tmp_path / "train.csv").write_text("\n".join(train) + "\n")
    (tmp_path / "test.csv").write_text("\n".join(test) + "\n")
    (tmp_path / "types").write_text("smurf dos\n")
    jobs = {j.split: j for j in stage.kdd99_jobs(tmp_path / "train.csv", tmp_path / "test.csv", tmp_path / "types",
                                                 Kdd99Options(), seed=0)}
    fitted = {"transform": jobs["train"].describe["transform"], "labels": jobs["train"].describe["labels"]}
    assert fitted["transform"]["vocab"]["service"] == ["ecr_i", "http"]
    cfg = from_dict({"dataset": {"name": "kdd99", "options": {"max_reject_fraction": 0.5}}})
    (tmp_path / "new.csv").write_text("\n".join(test[:2] + ["1,2,3"] + test[2:]) + "\n")
    job = cfg.dataset.predict_job(cfg, fitted, tmp_path / "new.csv")
    assert job.split == "predict" and list(job.source["sample_id"]) == [1, 2, 4, 5]
    test_rows = jobs["test"].source.read(0, jobs["test"].source.rows())  # prepare's shard tasks load it so
    assert np.array_equal(job.source["x"], test_rows["x"])  # the same encoding as prepare's test split
    assert list(job.source["label_attack"]) == [0, 0, 1, 1] and job.source["label_category"][-1] == -1
    assert [(r["sample_id"], r["reason"]) for r in job.pre_rejects] == [(3, "wrong_field_count")]
    assert job.describe["extra"]["unknown"]["service"] == {"gopher": 1, "smtp": 1}
    (tmp_path / "unlabelled.csv").write_text(test[0].rsplit(",", 1)[0] + "\n")
    with pytest.raises(ShardtrainError, match="unlabelled.csv:1: 41 fields"):
        cfg.dataset.predict_job(cfg, fitted, tmp_path / "unlabelled.csv")
    with pytest.raises(ShardtrainError, match="no kdd99 transform"):
        cfg.dataset.predict_job(cfg, {}, tmp_path / "new.csv")
    with pytest.raises(ShardtrainError, match="--input .*missing.csv: no such file"):
        cfg.dataset.predict_job(cfg, fitted, str(tmp_path / "missing.csv"))


def test_kdd99_predict_job_reads_a_uri(tmp_path: Path, s3) -> None:  # noqa: F811
    from shardtrain.readers.kdd99 import Kdd99Options
    from shardtrain.stages import kdd99 as stage

    train = [_kdd_record("http", 100 + i) for i in range(40)] + [_kdd_record("ecr_i", 1032, "smurf", "icmp")] * 20
    (tmp_path / "train.csv").write_text("\n".join(train) + "\n")
    (tmp_path / "types").write_text("smurf dos\n")
    jobs = {j.split: j for j in stage.kdd99_jobs(tmp_path / "train.csv", tmp_path / "train.csv",
                                                 tmp_path / "types", Kdd99Options(), seed=0)}
    fitted = {"transform": jobs["train"].describe["transform"]}
    import gzip

    s3.put("new.csv.gz", gzip.compress(("\n".join(train[:5]) + "\n").encode()))
    cfg = from_dict({"dataset": {"name": "kdd99"}})
    job = cfg.dataset.predict_job(cfg, fitted, s3.uri("new.csv.gz"))
    local = cfg.dataset.predict_job(cfg, fitted, tmp_path / "train.csv")
    assert list(job.source["sample_id"]) == [1, 2, 3, 4, 5]
    assert np.array_equal(job.source["x"], local.source["x"][:5])
    assert job.describe["extra"]["source"] == s3.uri("new.csv.gz")
