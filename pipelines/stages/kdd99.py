"""KDD Cup 99 stage functions and job building.

Both files are read columnar; vocabularies and standardisation statistics come from the
training file only. The output is standardised float32 ``x`` and two label columns
(``label_attack``, ``label_category``), so the multitask model trains on them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shardtrain.core.errors import ShardtrainError
from shardtrain.readers.kdd99 import Kdd99Options
from shardtrain.stages.dense import dense_describe, passthrough, passthrough_jobs, reject_records
from shardtrain.stages.runner import SplitJob


def kdd99_transform(meta: dict[str, Any]) -> dict[str, Any]:
    """What prepare fitted on the KDD training split, for predict: vocabularies, standardisation, categories."""
    return {"kind": "kdd99", "feature_names": list(meta["feature_names"]), "vocab": meta["vocab"],
            "standardisation": meta["standardisation"], "category_map": meta["category_map"]}


def kdd99_jobs(train: Path, test: Path, attack_types: Path, options: Kdd99Options, seed: int) -> list[SplitJob]:
    """Read and featurise both KDD files, then hand each split's rows to the runner to shard."""
    from shardtrain.readers.kdd99 import prepare_kdd99

    splits, meta = prepare_kdd99(train, test, attack_types, options, seed)
    extra = {k: v for k, v in meta.items() if k not in ("rejects", "labels", "feature_names")}
    rejects = {"train": reject_records(meta["rejects"]["train"].get("rows")),
               "test": reject_records(meta["rejects"]["test"].get("rows"))}
    sizes = {s: len(c["sample_id"]) + len(rejects.get(s, [])) for s, c in splits.items()}
    return passthrough_jobs(splits, meta, extra, rejects, sizes, kdd99_transform(meta))


def kdd99_predict_job(path: Path, options: Kdd99Options, fitted: dict[str, Any]) -> SplitJob:
    """The ``predict`` split of a KDD-format CSV (gzip or plain), encoded with the training split's transform.

    Numeric columns get the training log1p choice and mean/std, symbolic ones the training
    vocabularies (an unseen value is an all-zero one-hot, counted in ``extra.unknown``);
    the labels come from the file's label field with the training category map (a name
    it does not know has category -1). The file must hold the label field (42 fields).
    """
    from shardtrain.readers import kdd99

    transform = fitted.get("transform") or {}
    if transform.get("kind") != "kdd99" or "vocab" not in transform:
        raise ShardtrainError("the run's prepare index has no kdd99 transform (prepared before predict "
                              "existed?); prepare and train again")
    _require_labelled_kdd(path)
    cols, rejects = kdd99.read_kdd_file(path, options.max_reject_fraction, options.detail_chars)
    std = transform["standardisation"]
    log_cols = np.isin(np.array(std["columns"]), np.array(std["log1p_columns"], dtype=object))  # (38,)
    num = kdd99._numeric_by_column(cols["numeric"], log_cols)  # (38, N) float64
    x, unknown = kdd99._features(cols, num, np.asarray(std["mean"]), np.asarray(std["std"]), transform["vocab"])
    is_attack, category = kdd99.labels(cols["attack"], transform["category_map"])
    source = {"sample_id": cols["line_no"].astype(np.int64), "x": x, "label_attack": is_attack,
              "label_category": category}
    meta = {"feature_names": transform["feature_names"],
            "labels": {"label_attack": {"classes": ["normal", "attack"]},
                       "label_category": {"classes": list(kdd99.CATEGORIES)}}}
    pre = reject_records(rejects["rows"])
    extra = {"source": str(path), "unknown": unknown}
    return SplitJob("predict", source, passthrough, None, describe=dense_describe(meta, extra, transform),
                    pre_rejects=pre, input_rows=len(source["sample_id"]) + len(pre))


def _require_labelled_kdd(path: Path) -> None:
    """One line when the file's first record has 41 fields (no label): the reader needs the 42nd."""
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as f:
            first = next((ln for ln in f if ln.strip()), "")
    except (OSError, EOFError) as e:
        raise ShardtrainError(f"{path}: cannot read KDD records ({e})") from e
    if first.count(",") == 40:
        raise ShardtrainError(f"{path}:1: 41 fields: predict needs KDD records with their label field "
                              "(42 fields; a file without it is not read yet)")
