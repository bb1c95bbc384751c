"""Connection datasets as stage jobs: NASA HTTP access logs and KDD Cup 99 records.

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

from shardtrain.config import Config
from shardtrain.datasets import file_fingerprint, locate
from shardtrain.core.errors import ShardtrainError
from shardtrain.stages.runner import SplitJob


def passthrough(batch: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Stage function for rows whose features were computed globally: write them as they are."""
    return batch


def _http_options(cfg: Config) -> Any:
    """``dataset.options`` as ``HttpLogOptions`` (the stage's reject limit applies unless set)."""
    from shardtrain.readers.httplog import HttpLogOptions

    opts = dict(cfg.dataset.options)
    opts.setdefault("max_reject_fraction", cfg.prepare.max_reject_fraction)
    return HttpLogOptions.from_mapping({k: v for k, v in opts.items() if k != "path"})


def _kdd_options(cfg: Config) -> Any:
    """``dataset.options`` as ``Kdd99Options``."""
    from shardtrain.readers.kdd99 import Kdd99Options

    opts = dict(cfg.dataset.options)
    opts.setdefault("max_reject_fraction", cfg.prepare.max_reject_fraction)
    return Kdd99Options.from_mapping(opts)


def prepare_inputs(cfg: Config) -> dict[str, Any]:
    """Locate the raw files (``dataset.options.path`` may name any CLF log) and fingerprint them."""
    name = cfg.dataset.name
    if name == "nasa-http":
        path = cfg.dataset.options.get("path")
        if path is not None and not isinstance(path, str):
            raise ShardtrainError(f"config key 'dataset.options.path': expected a string, got {path!r}")
        _http_options(cfg)  # validate early
        log_path = Path(path) if path else locate(name, cfg.dataset.data_dir)["NASA_access_log_Aug95.first20000.log"]
        if not log_path.is_file():
            raise ShardtrainError(f"{log_path}: log file not found")
        files = {"log": log_path}
    elif name == "kdd99":
        _kdd_options(cfg)
        files = locate(name, cfg.dataset.data_dir)
    else:
        raise ShardtrainError(f"dataset {name!r} is not a connection dataset")
    return {"files": files, "splits": ["train", "val", "test"],
            "fingerprint": sorted(file_fingerprint(p) for p in files.values())}


def _parse_http(path: Path, options: Any, executor: str) -> dict[str, Any]:
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


def prepare_jobs(cfg: Config, inputs: dict[str, Any]) -> list[SplitJob]:
    """Read, parse and featurise, then hand each split's rows to the runner to shard."""
    if cfg.dataset.name == "nasa-http":
        from shardtrain.readers.httplog import build_http_dataset

        options = _http_options(cfg)
        path = inputs["files"]["log"]
        parsed = _parse_http(path, options, inputs.get("executor", "local"))
        splits, meta = build_http_dataset(parsed, options, cfg.seed, source=str(path))
        extra = {k: v for k, v in meta.items() if k not in ("rejects", "labels", "feature_names")}
        rejects = {"train": _rejects(meta["rejects"]["rows"])}
        n_train = len(splits["train"]["sample_id"])
        return _jobs(splits, meta, extra, rejects, {"train": n_train + len(rejects["train"])})
    from shardtrain.readers.kdd99 import prepare_kdd99

    files = inputs["files"]
    splits, meta = prepare_kdd99(files["kddcup.data_10_percent.gz"], files["corrected.gz"],
                                 files["training_attack_types"], _kdd_options(cfg), cfg.seed)
    extra = {k: v for k, v in meta.items() if k not in ("rejects", "labels", "feature_names")}
    rejects = {"train": _rejects(meta["rejects"]["train"].get("rows")),
               "test": _rejects(meta["rejects"]["test"].get("rows"))}
    sizes = {s: len(c["sample_id"]) + len(rejects.get(s, [])) for s, c in splits.items()}
    return _jobs(splits, meta, extra, rejects, sizes)


def augment_jobs(cfg: Config, prepare_dir: Path, target: Path) -> list[SplitJob]:
    """Connection features are not augmented offline (no meaningful label-preserving transform)."""
    raise ShardtrainError(f"dataset {cfg.dataset.name}: the augment stage is not defined for connection features "
                          "(set augment.copies: 0)")

