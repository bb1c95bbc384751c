"""Shared pieces of the stages whose features are computed before sharding (HTTP logs, KDD Cup 99).

Their rows reach the runner already featurised, so the stage function passes them
through; every split shares one description (dense float32 ``x`` with feature names,
the label vocabularies, the fitted ``transform``), and reader rejects become the
runner's reject records.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shardtrain.stages.runner import SplitJob


def passthrough(batch: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Stage function for rows whose features were computed globally: write them as they are."""
    return batch


def reject_records(rows: dict[str, np.ndarray] | None) -> list[dict[str, Any]]:
    """Reader rejects (numpy columns) as the runner's reject records."""
    if not rows or len(rows["sample_id"]) == 0:
        return []
    return [{"sample_id": int(i), "reason": str(r), "detail": str(d)}
            for i, r, d in zip(rows["sample_id"], rows["reason"], rows["detail"])]


def dense_describe(meta: dict[str, Any], extra: dict[str, Any], transform: dict[str, Any] | None) -> dict[str, Any]:
    """The index description shared by every split: dense x with its names, labels, the fitted transform."""
    names = meta["feature_names"]
    feature = {"kind": "dense", "dtype": "float32", "shape": [len(names)], "dim": len(names),
               "scale": 1.0, "offset": 0.0, "names": names}
    describe = {"features": {"x": feature}, "labels": meta["labels"], "extra": extra}
    if transform is not None:
        describe["transform"] = transform
    return describe


def passthrough_jobs(splits: dict[str, dict[str, np.ndarray]], meta: dict[str, Any], extra: dict[str, Any],
          rejects: dict[str, list], input_rows: dict[str, int | None],
          transform: dict[str, Any] | None = None) -> list[SplitJob]:
    """One pass-through job per split with the shared feature/label description."""
    describe = dense_describe(meta, extra, transform)
    return [SplitJob(split, cols, passthrough, None, describe=describe, pre_rejects=rejects.get(split, []),
                     input_rows=input_rows.get(split)) for split, cols in splits.items()]
