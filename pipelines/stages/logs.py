"""Connection stage functions and job building: NASA HTTP access logs and KDD Cup 99 records.

HTTP logs: lines are parsed block by block (on Ray workers with ``--executor ray``,
in process otherwise: same result), then sessionised into connections per host
globally in the driver, so a session cut by a block boundary is joined again; the
connection features and forward-looking labels come from ``shardtrain.features.logs``.
KDD Cup 99: both files are read columnar; vocabularies and standardisation statistics
come from the training file only. Both produce standardised float32 ``x`` and two
label columns, so the multitask model trains on them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shardtrain.readers.httplog import HttpLogOptions
from shardtrain.readers.kdd99 import Kdd99Options
from shardtrain.stages.runner import SplitJob


def passthrough(batch: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Stage function for rows whose features were computed globally: write them as they are."""
    return batch


def _parse_http(path: Path, options: HttpLogOptions, executor: str) -> dict[str, Any]:
    """Parse every line of a CLF file into columns; blocks go to Ray workers when asked."""
    from shardtrain.readers.httplog import concat_parsed, iter_line_blocks, parse_clf

    blocks = iter_line_blocks(path, options.block_lines)
    if executor != "ray":
        return concat_parsed([parse_clf(lines, first, options.detail_chars) for first, lines in blocks])
    import ray

    @ray.remote(num_cpus=1)
    def parse_block(lines: Any, first: int, detail: int) -> dict[str, Any]:
        return parse_clf(lines, first, detail)

    refs = [parse_block.remote(lines, first, options.detail_chars) for first, lines in blocks]
    return concat_parsed(ray.get(refs))


def _rejects(rows: dict[str, np.ndarray] | None) -> list[dict[str, Any]]:
    """Reader rejects (numpy columns) as the runner's reject records."""
    if not rows or len(rows["sample_id"]) == 0:
        return []
    return [{"sample_id": int(i), "reason": str(r), "detail": str(d)}
            for i, r, d in zip(rows["sample_id"], rows["reason"], rows["detail"])]


def _jobs(splits: dict[str, dict[str, np.ndarray]], meta: dict[str, Any], extra: dict[str, Any],
          rejects: dict[str, list], input_rows: dict[str, int | None]) -> list[SplitJob]:
    """One pass-through job per split with the shared feature/label description."""
    names = meta["feature_names"]
    feature = {"kind": "dense", "dtype": "float32", "shape": [len(names)], "dim": len(names),
               "scale": 1.0, "offset": 0.0, "names": names}
    describe = {"features": {"x": feature}, "labels": meta["labels"], "extra": extra}
    return [SplitJob(split, cols, passthrough, None, describe=describe, pre_rejects=rejects.get(split, []),
                     input_rows=input_rows.get(split)) for split, cols in splits.items()]


def http_jobs(path: Path, options: HttpLogOptions, seed: int, executor: str) -> list[SplitJob]:
    """Parse, sessionise and featurise a CLF log, then hand each split's rows to the runner to shard."""
    from shardtrain.readers.httplog import build_http_dataset

    parsed = _parse_http(path, options, executor)
    splits, meta = build_http_dataset(parsed, options, seed, source=str(path))
    extra = {k: v for k, v in meta.items() if k not in ("rejects", "labels", "feature_names")}
    rejects = {"train": _rejects(meta["rejects"]["rows"])}
    n_train = len(splits["train"]["sample_id"])
    return _jobs(splits, meta, extra, rejects, {"train": n_train + len(rejects["train"])})


def kdd99_jobs(train: Path, test: Path, attack_types: Path, options: Kdd99Options, seed: int) -> list[SplitJob]:
    """Read and featurise both KDD files, then hand each split's rows to the runner to shard."""
    from shardtrain.readers.kdd99 import prepare_kdd99

    splits, meta = prepare_kdd99(train, test, attack_types, options, seed)
    extra = {k: v for k, v in meta.items() if k not in ("rejects", "labels", "feature_names")}
    rejects = {"train": _rejects(meta["rejects"]["train"].get("rows")),
               "test": _rejects(meta["rejects"]["test"].get("rows"))}
    sizes = {s: len(c["sample_id"]) + len(rejects.get(s, [])) for s, c in splits.items()}
    return _jobs(splits, meta, extra, rejects, sizes)
