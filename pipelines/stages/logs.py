"""Connection stage functions and job building: HTTP access logs and KDD Cup 99 records.

HTTP logs (``http-log``, ``nasa-http``): lines are parsed block by block (on Ray workers
with ``--executor ray``, in process otherwise: same result), then sessionised into
connections per host globally in the driver, so a session cut by a block boundary is
joined again; the connection features and forward-looking labels come from
``shardtrain.features.logs``. Several files (a glob or a directory) are one log, their
lines numbered on from file to file (``sample_id`` of a reject is that number; its
``detail`` names the file and its own line). The standardisation fitted on train is
the train index's ``transform``, which ``http_predict_job`` applies to a new log.
KDD Cup 99: both files are read columnar; vocabularies and standardisation statistics
come from the training file only. Both produce standardised float32 ``x`` and two
label columns, so the multitask model trains on them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shardtrain.core.errors import ShardtrainError
from shardtrain.features.logs import LABEL_CLASSES
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


def parse_logs(paths: list[Path], options: HttpLogOptions, executor: str) -> dict[str, Any]:
    """Parse one log held in one or more files, line numbers running on across them.

    A rejected line's detail becomes ``file:line: text`` (the file's own line number).
    """
    from shardtrain.readers.httplog import concat_parsed

    parts, offset = [], 0
    for path in paths:
        parsed = _parse_http(path, options, executor)
        n = len(parsed["line_no"])
        bad = np.flatnonzero(np.asarray(parsed["reject_reason"], dtype=object) != "")
        detail = np.asarray(parsed["reject_detail"], dtype=object).copy()
        detail[bad] = [f"{path.name}:{parsed['line_no'][i]}: {detail[i]}" for i in bad]
        parsed["reject_detail"] = detail
        parsed["sample_id"] = parsed["sample_id"] + offset
        parsed["line_no"] = parsed["line_no"] + offset
        parts.append(parsed)
        offset += n
    return concat_parsed(parts)


def _rejects(rows: dict[str, np.ndarray] | None) -> list[dict[str, Any]]:
    """Reader rejects (numpy columns) as the runner's reject records."""
    if not rows or len(rows["sample_id"]) == 0:
        return []
    return [{"sample_id": int(i), "reason": str(r), "detail": str(d)}
            for i, r, d in zip(rows["sample_id"], rows["reason"], rows["detail"])]


def _describe(meta: dict[str, Any], extra: dict[str, Any], transform: dict[str, Any] | None) -> dict[str, Any]:
    """The index description shared by every split: dense x with its names, labels, the fitted transform."""
    names = meta["feature_names"]
    feature = {"kind": "dense", "dtype": "float32", "shape": [len(names)], "dim": len(names),
               "scale": 1.0, "offset": 0.0, "names": names}
    describe = {"features": {"x": feature}, "labels": meta["labels"], "extra": extra}
    if transform is not None:
        describe["transform"] = transform
    return describe


def _jobs(splits: dict[str, dict[str, np.ndarray]], meta: dict[str, Any], extra: dict[str, Any],
          rejects: dict[str, list], input_rows: dict[str, int | None],
          transform: dict[str, Any] | None = None) -> list[SplitJob]:
    """One pass-through job per split with the shared feature/label description."""
    describe = _describe(meta, extra, transform)
    return [SplitJob(split, cols, passthrough, None, describe=describe, pre_rejects=rejects.get(split, []),
                     input_rows=input_rows.get(split)) for split, cols in splits.items()]


def http_transform(meta: dict[str, Any], options: HttpLogOptions) -> dict[str, Any]:
    """What prepare fitted on train, for predict: the standardisation and the sessionisation options."""
    import dataclasses

    return {"kind": "http-log", "feature_names": list(meta["feature_names"]),
            "standardisation": meta["split"]["standardisation"],
            "options": {k: v for k, v in dataclasses.asdict(options).items()
                        if k in ("gap_seconds", "first_k", "long_n", "min_requests", "censor_tail")}}


def http_jobs(paths: list[Path] | Path, options: HttpLogOptions, seed: int, executor: str,
              test_paths: list[Path] | None = None) -> list[SplitJob]:
    """Parse, sessionise and featurise a log (``test_paths``: a second log as the test split)."""
    from shardtrain.readers.httplog import build_http_dataset

    paths = [paths] if isinstance(paths, Path) else list(paths)
    parsed = parse_logs(paths, options, executor)
    test = parse_logs(list(test_paths), options, executor) if test_paths else None
    splits, meta = build_http_dataset(parsed, options, seed, source=_source(paths), test=test,
                                      test_source=_source(test_paths or []))
    extra = {k: v for k, v in meta.items() if k not in ("rejects", "labels", "feature_names", "test")}
    rejects = {"train": _rejects(meta["rejects"]["rows"])}
    # Rejects are lines, so their share is of the log's lines (a connection holds many).
    sizes: dict[str, int | None] = {"train": meta["lines"]}
    if "test" in meta:
        extra["test"] = {k: v for k, v in meta["test"].items() if k != "rejects"}
        extra["test"]["rejects"] = {k: v for k, v in meta["test"]["rejects"].items() if k != "rows"}
        rejects["test"] = _rejects(meta["test"]["rejects"]["rows"])
        sizes["test"] = meta["test"]["lines"]
    return _jobs(splits, meta, extra, rejects, sizes, http_transform(meta, options))


def http_predict_job(paths: list[Path], options: HttpLogOptions, fitted: dict[str, Any],
                     executor: str = "local") -> SplitJob:
    """The ``predict`` split of a new log: featurised with the train index's ``transform``, never refitted."""
    import dataclasses

    from shardtrain.readers.httplog import build_http_predict

    transform = fitted.get("transform") or {}
    if transform.get("kind") != "http-log" or "standardisation" not in transform:
        raise ShardtrainError("the run's prepare index has no http-log transform (prepared before predict "
                              "existed?); prepare and train again")
    # The sessionisation the run was trained with, whatever the config says now.
    options = dataclasses.replace(options, **transform.get("options", {}))
    parsed = parse_logs(paths, options, executor)
    cols, stats = build_http_predict(parsed, options, transform, source=_source(paths))
    meta = {"feature_names": transform["feature_names"],
            "labels": {k: {"classes": v} for k, v in LABEL_CLASSES.items()}}
    extra = {k: v for k, v in stats.items() if k != "rejects"}
    pre = _rejects(stats["rejects"]["rows"])
    return SplitJob("predict", cols, passthrough, None, describe=_describe(meta, extra, transform),
                    pre_rejects=pre, input_rows=stats["lines"])


def _source(paths: list[Path]) -> str:
    """How messages name a log held in ``paths``."""
    return str(paths[0]) if len(paths) == 1 else f"{paths[0].parent} ({len(paths)} files)" if paths else "log"


def kdd99_transform(meta: dict[str, Any]) -> dict[str, Any]:
    """What prepare fitted on the KDD training split, for predict: vocabularies, standardisation, categories."""
    return {"kind": "kdd99", "feature_names": list(meta["feature_names"]), "vocab": meta["vocab"],
            "standardisation": meta["standardisation"], "category_map": meta["category_map"]}


def kdd99_jobs(train: Path, test: Path, attack_types: Path, options: Kdd99Options, seed: int) -> list[SplitJob]:
    """Read and featurise both KDD files, then hand each split's rows to the runner to shard."""
    from shardtrain.readers.kdd99 import prepare_kdd99

    splits, meta = prepare_kdd99(train, test, attack_types, options, seed)
    extra = {k: v for k, v in meta.items() if k not in ("rejects", "labels", "feature_names")}
    rejects = {"train": _rejects(meta["rejects"]["train"].get("rows")),
               "test": _rejects(meta["rejects"]["test"].get("rows"))}
    sizes = {s: len(c["sample_id"]) + len(rejects.get(s, [])) for s, c in splits.items()}
    return _jobs(splits, meta, extra, rejects, sizes, kdd99_transform(meta))


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
    pre = _rejects(rejects["rows"])
    extra = {"source": str(path), "unknown": unknown}
    return SplitJob("predict", source, passthrough, None, describe=_describe(meta, extra, transform),
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
