"""The stage runner: apply a pure batch function to each shard's rows and write the shards.

A split's source rows are cut into shards by position alone (row ``i`` belongs to
input shard ``i // rows_per_shard``); each shard is one task that applies the stage
function to its rows in batches and writes exactly one output file. Because the
boundaries come from the data and every random draw from (seed, sample_id, copy),
the Ray executor (one Ray task per shard, retried if its node dies) and the
in-process executor (no Ray import) write byte-identical shards.

The index is written last, after every shard is durable, and the old index is removed
before any shard is touched: a crashed or killed stage leaves no index behind.

The stage directory is a local path or a URI (``s3://bucket/out/shards/prepare``): every
file goes through ``shardtrain.shards.storage``, and each task writes its own shard
straight to the store. The S3 endpoint and region the driver uses travel with each task
(``storage_env``, never a credential), so a worker on another node reaches the same store.

A split's source is either columns in the driver's memory (small inputs, predict) or
:class:`Parts`: handles to pieces that each shard task loads itself (input blocks read
straight from storage, reduce outputs in Ray's object store), with each piece's row
count known from the planning passes, so the driver never holds the rows.

A stage function with a user map after it (``shardtrain.stages.usermap.MappedFn``, told
apart by its ``takes_where``) is also told each batch's shard and row range; when the
map replaced ``x``, the split's ``features.x`` describes the ``x`` that was written.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from shardtrain.core.errors import ShardtrainError
from shardtrain.shards import format as fmt
from shardtrain.shards import storage
from shardtrain.shards.reader import index_fingerprint
from shardtrain.shards.writer import build_table, clear_split, write_index, write_rejects, write_shard

log = logging.getLogger("shardtrain")

StageFn = Callable[[dict[str, Any], Any], dict[str, Any]]
# Where a store is, never who may use it: copied from the driver into each task writing to a URI.
STORAGE_ENVS = (storage.ENDPOINT_ENV, "AWS_REGION")


@dataclass
class Parts:
    """A split's rows as pieces that the shard tasks load, never the driver.

    ``parts`` is ``[(handle, rows), ...]`` in split order: ``load(handle)`` returns that
    piece's columns (exactly ``rows`` rows, ``sample_id`` among them). A handle is
    anything picklable (an input block, a Ray ObjectRef from
    ``shardtrain.stages.mapreduce``, which is resolved before ``load`` sees it); ``load``
    must be a module-level function or a ``functools.partial`` of one.
    """

    parts: list[tuple[Any, int]]
    load: Callable[[Any], dict[str, Any]]

    def rows(self) -> int:
        """Total rows of the split."""
        return sum(int(n) for _, n in self.parts)

    def read(self, start: int, stop: int) -> dict[str, Any]:
        """Rows ``[start, stop)`` of the split: the pieces that overlap it, loaded, sliced and joined."""
        from shardtrain.stages.mapreduce import load_part

        pieces, offset = [], 0
        for handle, n in self.parts:
            lo, hi = max(start, offset), min(stop, offset + int(n))
            if lo < hi:
                columns = self.load(load_part(handle))
                got = _rows(columns)
                if got != int(n):
                    raise RuntimeError(f"a part planned with {n} rows loaded {got}")  # internal: a planning bug
                pieces.append(_slice(columns, lo - offset, hi - offset))
            offset += int(n)
            if offset >= stop:
                break
        if not pieces and self.parts:  # an empty split still has its columns (the shard's schema)
            pieces.append(_slice(self.load(load_part(self.parts[0][0])), 0, 0))
        return _concat(pieces) if pieces else {}


@dataclass
class SplitJob:
    """One split of a stage: its source rows, the batch function, and index metadata.

    ``source`` maps column names to row-aligned arrays (numpy or Arrow) and must hold
    ``sample_id``, or is a :class:`Parts` the shard tasks load piece by piece; ``fn(batch, ctx)`` is the pure stage function; ``describe`` is merged
    into the split's index (features, labels, extra).
    """

    split: str
    source: dict[str, Any] | Parts
    fn: StageFn
    ctx: Any
    describe: dict[str, Any] = field(default_factory=dict)
    pre_rejects: list[dict[str, Any]] = field(default_factory=list)
    input_rows: int | None = None


def _rows(columns: dict[str, Any] | Parts) -> int:
    """Row count of a columns mapping (all columns share it) or of a :class:`Parts` source."""
    if isinstance(columns, Parts):
        return columns.rows()
    return len(next(iter(columns.values()))) if columns else 0


def _slice(columns: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
    """Rows ``[start, stop)`` of every column (views, no copies)."""
    return {k: v[start:stop] for k, v in columns.items()}


def _concat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate batch outputs column by column (numpy or Arrow)."""
    if len(parts) == 1:
        return parts[0]
    out = {}
    for name in parts[0]:
        values = [p[name] for p in parts]
        if isinstance(values[0], (pa.Array, pa.ChunkedArray)):
            out[name] = pa.concat_arrays(
                [v.combine_chunks() if isinstance(v, pa.ChunkedArray) else v for v in values]
            )
        else:
            out[name] = np.concatenate(values)
    return out


def _split_rejects(columns: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Drop rows whose ``reject_reason`` is non-empty; return kept columns and reject records."""
    if "reject_reason" not in columns:
        return columns, []
    reasons = np.asarray(columns.pop("reject_reason"), dtype=object)
    details = columns.pop("reject_detail", None)
    bad = np.flatnonzero(reasons != "")
    if len(bad) == 0:
        return columns, []
    ids = np.asarray(columns["sample_id"])
    rejects = [
        {"sample_id": int(ids[i]), "reason": str(reasons[i]),
         "detail": "" if details is None else str(details[i])[:200]}
        for i in bad
    ]
    keep = np.flatnonzero(reasons == "")
    kept = {}
    for name, values in columns.items():
        if isinstance(values, (pa.Array, pa.ChunkedArray)):
            kept[name] = values.take(pa.array(keep))
        else:
            kept[name] = np.asarray(values)[keep]
    return kept, rejects


def process_shard(rows: dict[str, Any], fn: StageFn, ctx: Any, batch_rows: int) -> tuple[dict[str, Any], list]:
    """Apply ``fn`` to a shard's rows in batches; return the kept output and the rejects."""
    columns, rejects, _ = _process(rows, fn, ctx, batch_rows)
    return columns, rejects


def _process(rows: dict[str, Any], fn: StageFn, ctx: Any, batch_rows: int, shard: str = "batch",
             first_row: int = 0) -> tuple[dict[str, Any], list, bool]:
    """``process_shard`` plus whether a user map replaced ``x`` (``shardtrain.stages.usermap``).

    A function with ``takes_where`` (a user map wrapper) is told the shard's name and each
    batch's row range in the split's source, for its context and its error messages.
    """
    n = _rows(rows)
    outputs, rejects, replaced = [], [], False
    where = getattr(fn, "takes_where", False)
    for start in range(0, max(n, 1), max(batch_rows, 1)):
        stop = min(start + batch_rows, n)
        batch = _slice(rows, start, stop)
        if where:
            out, changed = fn.apply(batch, ctx, shard=shard, rows=(first_row + start, first_row + stop))
            replaced |= changed
        else:
            out = fn(batch, ctx)
        kept, bad = _split_rejects(dict(out))
        outputs.append(kept)
        rejects.extend(bad)
    return _concat(outputs), rejects, replaced


def run_shard_task(task: dict[str, Any], source: dict[str, Any], fn: StageFn, ctx: Any) -> dict[str, Any]:
    """Process and write one shard; returns its index entry plus label counts and rejects.

    ``task["out_dir"]`` is a local directory or a URI; ``task["storage_env"]`` (set for a
    URI) gives a worker the driver's endpoint and region where its own environment has none.
    """
    for key, value in task.get("storage_env", {}).items():
        os.environ.setdefault(key, value)
    if isinstance(source, Parts):
        rows = source.read(task["start"], task["stop"])
    else:
        rows = _slice(source, task["start"], task["stop"])
    name = fmt.shard_name(task["index"], task["count"])
    columns, rejects, replaced = _process(rows, fn, ctx, task["batch_rows"], Path(name).stem, task["start"])
    path = storage.join(task["out_dir"], name)
    entry = write_shard(path, columns, (task["index"], task["count"]), task.get("classes"))
    label_counts = {}
    for name, values in columns.items():
        if name == "label" or name.startswith("label_"):
            arr = np.asarray(values)
            if arr.dtype.kind in "iu":
                uniq, counts = np.unique(arr, return_counts=True)
                label_counts[name] = {str(int(u)): int(c) for u, c in zip(uniq, counts)}
    schema = [{"name": f.name, "type": str(f.type)} for f in build_table(_slice(columns, 0, 0)).schema]
    x = columns.get("x")
    x_info = ({"shape": [int(d) for d in x.shape[1:]], "dtype": str(x.dtype)}
              if isinstance(x, np.ndarray) and len(x) else None)
    return {"split": task["split"], "entry": entry, "rejects": rejects,
            "label_counts": label_counts, "schema": schema, "x_replaced": replaced, "x_info": x_info}


def plan_tasks(job: SplitJob, out_dir: storage.Location, rows_per_shard: int,
               batch_rows: int) -> list[dict[str, Any]]:
    """Cut a split's source into shard tasks by row position (at least one shard)."""
    n = _rows(job.source)
    count = max(1, -(-n // rows_per_shard))
    # Class names travel with each task into its shard's metadata (HF datasets reads them).
    classes = {col: desc.get("classes") for col, desc in job.describe.get("labels", {}).items()}
    target = str(storage.join(out_dir, job.split))
    # Always, not only for a remote out_dir: a task may read its inputs from a store too.
    env = {k: os.environ[k] for k in STORAGE_ENVS if os.environ.get(k)}
    extra = {"storage_env": env} if env else {}
    return [
        {"split": job.split, "index": i, "count": count, "start": i * rows_per_shard,
         "stop": min((i + 1) * rows_per_shard, n), "out_dir": target,
         "batch_rows": batch_rows, "classes": classes, **extra}
        for i in range(count)
    ]


def is_up_to_date(stage_dir: storage.Location, splits: list[str], fp: str) -> bool:
    """True when every split of the stage (a local directory or a URI) has an index with fingerprint ``fp``."""
    return all(index_fingerprint(storage.join(stage_dir, split)) == fp for split in splits)


def _execute_local(tasks: list[dict], jobs: dict[str, SplitJob]) -> list[dict]:
    """Run shard tasks one after another in this process (no Ray import).

    Progress goes to stderr: a tqdm bar of shards on a TTY (as the Ray executor shows),
    otherwise one line per split when its last shard is written.
    """
    import sys

    from tqdm import tqdm  # installed with pytorch-lightning

    tty = sys.stderr.isatty()
    left = Counter(task["split"] for task in tasks)
    t0 = time.perf_counter()
    results = []
    with tqdm(total=len(tasks), unit="shard", desc="shards", file=sys.stderr, leave=False, disable=not tty) as bar:
        for task in tasks:
            job = jobs[task["split"]]
            results.append(run_shard_task(task, job.source, job.fn, job.ctx))
            bar.update(1)
            left[task["split"]] -= 1
            if not tty and left[task["split"]] == 0:
                rows = sum(r["entry"]["rows"] for r in results if r["split"] == task["split"])
                shards = f"{task['count']} shard{'s' if task['count'] != 1 else ''}"
                print(f"{task['split']}: {shards}, {rows} rows ({time.perf_counter() - t0:.1f} s)",
                      file=sys.stderr, flush=True)
    return results


def _execute_ray(tasks: list[dict], jobs: dict[str, SplitJob]) -> list[dict]:
    """Run shard tasks as Ray tasks, one per shard (retried when a node dies)."""
    import ray

    from shardtrain.stages.ray_exec import run_tasks_with_ray

    # In-memory columns go to the object store once; a Parts source is a few handles,
    # passed as it is (each task loads its own pieces).
    refs = {name: job.source if isinstance(job.source, Parts) else ray.put(job.source)
            for name, job in jobs.items()}
    fns = {name: (job.fn, job.ctx) for name, job in jobs.items()}
    try:
        return run_tasks_with_ray(run_shard_task, tasks, refs, fns)
    except ray.exceptions.RayTaskError as exc:
        # A task's own one-line error (a bad record, a user map that raised) is the message,
        # not Ray's traceback wrapper around it.
        if isinstance(exc.cause, ShardtrainError):
            raise ShardtrainError(str(exc.cause)) from None
        raise


def run_stage(
    stage: str,
    jobs: list[SplitJob],
    stage_dir: storage.Location,
    *,
    rows_per_shard: int,
    batch_rows: int,
    max_reject_fraction: float,
    executor: str,
    fp: str,
    config: dict[str, Any],
    dataset: str,
) -> dict[str, dict[str, Any]]:
    """Run a stage over its splits and write shards + one index per split; returns the indexes.

    ``stage_dir`` is a local directory or a URI; each split's old index is deleted before
    anything else (``clear_split``) and its new one written after all its shards.
    """
    t0 = time.perf_counter()
    by_split = {job.split: job for job in jobs}
    tasks = []
    for job in jobs:
        clear_split(storage.join(stage_dir, job.split))
        tasks.extend(plan_tasks(job, stage_dir, rows_per_shard, batch_rows))
    run = _execute_ray if executor == "ray" else _execute_local
    results = run(tasks, by_split)
    indexes = {}
    for job in jobs:
        mine = sorted((r for r in results if r["split"] == job.split), key=lambda r: r["entry"]["file"])
        indexes[job.split] = _finish_split(stage, job, mine, storage.join(stage_dir, job.split),
                                           max_reject_fraction, fp, config, dataset)
    log.info("stage %s: %s in %.1f s", stage,
             ", ".join(f"{s} {i['rows']} rows" for s, i in indexes.items()), time.perf_counter() - t0)
    return indexes


def _finish_split(stage: str, job: SplitJob, results: list[dict], directory: storage.Location,
                  max_reject_fraction: float, fp: str, config: dict, dataset: str) -> dict[str, Any]:
    """Check rejects against the allowed fraction, then write the rejects file and the index."""
    rejects = list(job.pre_rejects) + [r for res in results for r in res["rejects"]]
    input_rows = job.input_rows if job.input_rows is not None else _rows(job.source) + len(job.pre_rejects)
    reasons = Counter(r["reason"].split(":")[0] if ":" in r["reason"] else r["reason"] for r in rejects)
    write_rejects(directory, rejects)
    fraction = len(rejects) / max(input_rows, 1)
    if fraction > max_reject_fraction:
        first = rejects[0]
        raise ShardtrainError(
            f"{stage}/{job.split}: {len(rejects)} of {input_rows} records rejected ({fraction:.1%} > "
            f"max_reject_fraction {max_reject_fraction:.1%}); first: sample {first['sample_id']}: "
            f"{first['reason']} (all in {storage.redact(storage.join(directory, fmt.REJECTS_NAME))})"
        )
    entries = [r["entry"] for r in results]
    rows = sum(e["rows"] for e in entries)
    counts: dict[str, Counter] = {}
    for res in results:
        for col, c in res["label_counts"].items():
            counts.setdefault(col, Counter()).update(c)
    describe = dict(job.describe)
    if any(r.get("x_replaced") for r in results) and hasattr(job.fn, "describe_x"):
        # A user map replaced x: describe what was written, so training sizes the model from it.
        infos = [r["x_info"] for r in results if r.get("x_info")]
        if any(info != infos[0] for info in infos):
            raise ShardtrainError(f"{stage}/{job.split}: {job.fn.key} {job.fn.spec} gave x different shapes or "
                                  f"dtypes in different shards ({infos[0]} and others); keep one per split")
        if infos:
            features = dict(describe.get("features", {}))
            features["x"] = job.fn.describe_x(features.get("x", {}), infos[0]["shape"], infos[0]["dtype"])
            describe["features"] = features
    labels = {}
    for col, desc in describe.pop("labels", {}).items():
        labels[col] = dict(desc, counts=dict(sorted(counts.get(col, {}).items(), key=lambda kv: int(kv[0]))))
    schema = results[0]["schema"] if results else []
    index = {
        "format": fmt.FORMAT_NAME,
        "version": fmt.version_for([c["name"] for c in schema]),
        "stage": stage,
        "dataset": dataset,
        "split": job.split,
        "rows": rows,
        "schema": schema,
        "features": describe.pop("features", {}),
        "labels": labels,
        "shards": entries,
        "rejects": {"count": len(rejects), "file": fmt.REJECTS_NAME if rejects else None,
                    "reasons": dict(reasons)},
        "extra": describe.pop("extra", {}),
        "config": config,
        "fingerprint": fp,
    }
    index.update(describe)
    write_index(directory, index)
    return index
