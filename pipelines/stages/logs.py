"""HTTP access-log stage functions and job building (KDD Cup 99 is ``shardtrain.stages.kdd99``).

HTTP logs (``http-log``, ``nasa-http``): lines are parsed block by block (on Ray workers
with ``--executor ray``, in process otherwise: same result), then sessionised into
connections per host globally in the driver, so a session cut by a block boundary is
joined again; the connection features and forward-looking labels come from
``shardtrain.features.logs``. Several files (a glob or a directory) are one log, their
lines numbered on from file to file (``sample_id`` of a reject is that number; its
``detail`` names the file and its own line). The standardisation fitted on train is
the train index's ``transform``, which ``http_predict_job`` applies to a new log.
It produces standardised float32 ``x`` and two label columns, so the multitask model
trains on them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shardtrain.core.errors import ShardtrainError
from shardtrain.features.logs import LABEL_CLASSES
from shardtrain.readers.httplog import HttpLogOptions
from shardtrain.stages.dense import dense_describe, passthrough, passthrough_jobs, reject_records
from shardtrain.stages.runner import SplitJob


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
    rejects = {"train": reject_records(meta["rejects"]["rows"])}
    # Rejects are lines, so their share is of the log's lines (a connection holds many).
    sizes: dict[str, int | None] = {"train": meta["lines"]}
    if "test" in meta:
        extra["test"] = {k: v for k, v in meta["test"].items() if k != "rejects"}
        extra["test"]["rejects"] = {k: v for k, v in meta["test"]["rejects"].items() if k != "rows"}
        rejects["test"] = reject_records(meta["test"]["rejects"]["rows"])
        sizes["test"] = meta["test"]["lines"]
    return passthrough_jobs(splits, meta, extra, rejects, sizes, http_transform(meta, options))


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
    pre = reject_records(stats["rejects"]["rows"])
    return SplitJob("predict", cols, passthrough, None, describe=dense_describe(meta, extra, transform),
                    pre_rejects=pre, input_rows=stats["lines"])


def _source(paths: list[Path]) -> str:
    """How messages name a log held in ``paths``."""
    return str(paths[0]) if len(paths) == 1 else f"{paths[0].parent} ({len(paths)} files)" if paths else "log"
