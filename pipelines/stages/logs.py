"""HTTP access-log stage functions and job building (KDD Cup 99 is ``shardtrain.stages.kdd99``).

HTTP logs (``http-log``, ``nasa-http``): prepare runs as two shuffles
(``shardtrain.stages.httplog_shuffle``), on Ray tasks with ``--executor ray`` and in
process otherwise, with byte-identical shards: input blocks (``cfg.prepare.block_bytes``)
are parsed and partitioned by host, each host partition is sessionised (so a session cut
by a block boundary is one connection), and the connections are split, standardised with
train's statistics and put back in line order; the driver holds only summaries and
handles. The connection features and forward-looking labels come from
``shardtrain.features.logs``. Several files (a glob or a directory, local or a URI) are one
log, their lines numbered on from file to file (``sample_id`` of a reject is that number;
its ``detail`` names the file and its own line). The standardisation fitted on train is
the train index's ``transform``, which ``http_predict_job`` applies to a new log (in
memory). It produces standardised float32 ``x`` and two label columns, so the multitask
model trains on them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shardtrain.core.errors import ShardtrainError
from shardtrain.features.logs import FEATURE_NAMES, LABEL_CLASSES, SPLITS
from shardtrain.readers.httplog import HttpLogOptions
from shardtrain.shards.blocks import BLOCK_BYTES
from shardtrain.shards.storage import Location
from shardtrain.stages.dense import dense_describe, passthrough, passthrough_jobs, reject_records
from shardtrain.stages.runner import SplitJob


def parse_block(block: Any, detail_chars: int) -> dict[str, Any]:
    """Parse one input block's lines (numbered from 1 within the block); module level for Ray."""
    from shardtrain.readers.httplog import lines_from_bytes, parse_clf
    from shardtrain.shards.blocks import read_block
    from shardtrain.shards.storage import redact

    try:
        body = read_block(block)
    except (OSError, EOFError) as e:  # a corrupt or truncated .gz, an unreadable object
        raise ShardtrainError(f"{redact(block.location)}: cannot read log file ({e})") from e
    if body and not body.endswith(b"\n"):
        body += b"\n"
    return parse_clf(lines_from_bytes(body), 1, detail_chars)


def parse_logs(paths: list[Location], options: HttpLogOptions, executor: str,
               block_bytes: int = BLOCK_BYTES) -> dict[str, Any]:
    """Parse one log held in one or more files or objects, in memory, line numbers running on across them.

    Blocks are parsed on Ray tasks with ``executor="ray"``, then concatenated here (predict
    and tests; prepare never holds the lines: ``shardtrain.stages.httplog_shuffle``). A
    rejected line's detail becomes ``file:line: text`` (the file's own line number).
    """
    from shardtrain.readers.httplog import concat_parsed
    from shardtrain.shards.blocks import plan_line_blocks
    from shardtrain.stages.mapreduce import map_tasks

    plan = plan_line_blocks([str(p) for p in paths], block_bytes)
    parts, offset, file_start = [], 0, {}
    for block, parsed in zip(plan, map_tasks(parse_block, plan, executor, options.detail_chars)):
        start = file_start.setdefault(block.file_index, offset)
        n = len(parsed["line_no"])
        bad = np.flatnonzero(np.asarray(parsed["reject_reason"], dtype=object) != "")
        detail = np.asarray(parsed["reject_detail"], dtype=object).copy()
        detail[bad] = [f"{block.name}:{offset - start + parsed['line_no'][i]}: {detail[i]}" for i in bad]
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


def http_jobs(paths: list[Location] | Location, options: HttpLogOptions, seed: int, executor: str,
              test_paths: list[Location] | None = None, block_bytes: int = BLOCK_BYTES,
              partitions: int = 16) -> list[SplitJob]:
    """Parse, sessionise and featurise a log as two shuffles (``test_paths``: a second log as the test split).

    The driver plans ``block_bytes`` blocks and merges small summaries; each split's
    source is a ``Parts`` of reduce outputs (Ray's object store with ``executor="ray"``).
    """
    import dataclasses

    from shardtrain.stages import httplog_shuffle as shuffle

    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    src, test_src = _source(paths), _source(list(test_paths or []))
    log = shuffle.connections([str(p) for p in paths], options, executor, block_bytes, partitions, src)
    fractions = tuple(options.split_fractions)
    if test_paths:
        total = fractions[0] + fractions[1]
        fractions = (fractions[0] / total, fractions[1] / total, 0.0)
    reduces, handles, moments = shuffle.assign(log, options.split_rule, fractions, seed, executor, partitions)
    sources = {name: shuffle.split_parts(reduces, handles, c) for c, name in enumerate(SPLITS)}
    test_reduces, stats = None, log["stats"]
    if test_paths:
        test = shuffle.connections([str(p) for p in test_paths], options, executor, block_bytes, partitions, test_src)
        test_reduces, test_handles, _ = shuffle.assign(test, "test", fractions, seed, executor, partitions, moments)
        sources["test"] = shuffle.split_parts(test_reduces, test_handles, 2)
    meta = {**{k: v for k, v in stats.items() if k != "source"}, "source": src,
            "feature_names": list(FEATURE_NAMES), "labels": {k: {"classes": v} for k, v in LABEL_CLASSES.items()},
            "split": shuffle.split_meta(reduces, options.split_rule, fractions, seed, moments, test_reduces),
            "options": dataclasses.asdict(options)}
    extra = {k: v for k, v in meta.items() if k not in ("rejects", "labels", "feature_names", "test")}
    rejects = {"train": reject_records(stats["rejects"]["rows"])}
    # Rejects are lines, so their share is of the log's lines (a connection holds many).
    sizes: dict[str, int | None] = {"train": stats["lines"]}
    if test_paths:
        extra["test"] = {k: v for k, v in test["stats"].items() if k != "rejects"}
        extra["test"]["rejects"] = {k: v for k, v in test["stats"]["rejects"].items() if k != "rows"}
        rejects["test"] = reject_records(test["stats"]["rejects"]["rows"])
        sizes["test"] = test["stats"]["lines"]
    return passthrough_jobs(sources, meta, extra, rejects, sizes, http_transform(meta, options))


def http_predict_job(paths: list[Location], options: HttpLogOptions, fitted: dict[str, Any],
                     executor: str = "local", block_bytes: int = BLOCK_BYTES) -> SplitJob:
    """The ``predict`` split of a new log: featurised with the train index's ``transform``, never refitted."""
    import dataclasses

    from shardtrain.readers.httplog import build_http_predict

    transform = fitted.get("transform") or {}
    if transform.get("kind") != "http-log" or "standardisation" not in transform:
        raise ShardtrainError("the run's prepare index has no http-log transform (prepared before predict "
                              "existed?); prepare and train again")
    # The sessionisation the run was trained with, whatever the config says now.
    options = dataclasses.replace(options, **transform.get("options", {}))
    parsed = parse_logs(paths, options, executor, block_bytes)
    cols, stats = build_http_predict(parsed, options, transform, source=_source(paths))
    meta = {"feature_names": transform["feature_names"],
            "labels": {k: {"classes": v} for k, v in LABEL_CLASSES.items()}}
    extra = {k: v for k, v in stats.items() if k != "rejects"}
    pre = reject_records(stats["rejects"]["rows"])
    return SplitJob("predict", cols, passthrough, None, describe=dense_describe(meta, extra, transform),
                    pre_rejects=pre, input_rows=stats["lines"])


def _source(paths: list[Location]) -> str:
    """How messages name a log held in ``paths`` (redacted: never a credential)."""
    from shardtrain.shards import storage

    if len(paths) == 1:
        return storage.redact(str(paths[0]))
    if not paths:
        return "log"
    first = storage.redact(str(paths[0]))
    return f"{first[:first.rfind('/')] if '/' in first else '.'} ({len(paths)} files)"
