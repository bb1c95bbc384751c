"""HTTP-log prepare as two shuffles whose data never passes through the driver.

Sessionisation needs all of a host's lines together, and the splits need the global
order of connections, so prepare runs two exchanges (``shardtrain.stages.mapreduce``),
on Ray tasks or in process with the same result:

1. *By host.* Map per input block (``shardtrain.shards.blocks``): read and parse its
   lines, partition the good rows by a stable hash of the host (CRC-32). Between: the
   blocks' line counts give each block its first line number, their maxima the log's
   end; the rejected share is checked here, before any reduce runs. Reduce per
   partition: sessionise, compute connection features and labels (exactly as the
   in-memory path does: a connection's features depend on its own rows only), drop
   short and tail connections; return a histogram of start times.
2. *By line range.* The driver finds the split cut keys (rule "time": the connections of
   global rank ``round(f * M)`` by ``(start_ts, sample_id)``) by selection: the summed
   start-time histograms name the bin each cut falls in, and one small pass over the
   partitions returns only the keys in those bins. Map per host partition: split codes
   and the train moments (exact sums), rows cut into ranges of line numbers. Between:
   the exact sums added up, mean and std rounded once (so every executor, block size and
   number of partitions gets the same mean and std). Reduce per
   range: sort by ``sample_id`` and standardise. A split's rows are then the ranges in
   order, each filtered to the split: global connection order, as before.

The driver holds O(blocks + partitions + histogram bins) values plus the rejects
(bounded by ``max_reject_fraction``) and the keys of two histogram bins, never a row.
"""

from __future__ import annotations

import functools
import zlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shardtrain.core import exact
from shardtrain.core.errors import ShardtrainError
from shardtrain.features import logs
from shardtrain.readers.httplog import HttpLogOptions, lines_from_bytes, parse_clf
from shardtrain.shards import blocks as blk
from shardtrain.shards import storage
from shardtrain.stages.mapreduce import map_reduce, map_tasks
from shardtrain.stages.runner import Parts

BINS = 4096  # start-time histogram bins: the driver's selection state, whatever the log's size
_SHUFFLED = ("host", "ts", "tz_offset", "method", "path", "status", "bytes")  # what the features read
COLUMNS = ("sample_id", "x", "label_error", "label_long")


def host_partition(host: pa.Array, partitions: int) -> np.ndarray:
    """Partition (int64 (N,)) of each host: CRC-32 of its UTF-8 bytes mod ``partitions`` (stable across runs)."""
    enc = pc.dictionary_encode(host)
    per_value = np.array([zlib.crc32(v.encode()) % partitions for v in enc.dictionary.to_pylist()], np.int64)
    return per_value[enc.indices.to_numpy(zero_copy_only=False)] if len(host) else np.zeros(0, np.int64)


def map_block(block: blk.Block, options: HttpLogOptions, partitions: int) -> tuple[dict[str, Any], list]:
    """Parse one block; its good rows partitioned by host, and a summary (lines, ts range, rejects).

    Line numbers are block-relative (1-based) until the reduce knows the block's first line.
    """
    try:
        body = blk.read_block(block)
    except (OSError, EOFError) as e:  # a corrupt or truncated .gz, an unreadable object
        raise ShardtrainError(f"{storage.redact(block.location)}: cannot read log file ({e})") from e
    if body and not body.endswith(b"\n"):
        body += b"\n"  # the file's last line without a newline is still a line
    parsed = parse_clf(lines_from_bytes(body), 1, options.detail_chars)
    reason = parsed["reject_reason"]
    good = reason == ""
    ts = parsed["ts"][good]
    summary = {
        "lines": int(reason.size), "name": block.name, "file_index": block.file_index,
        "min_ts": int(ts.min()) if ts.size else None, "max_ts": int(ts.max()) if ts.size else None,
        "rejects": {"line": parsed["line_no"][~good], "reason": reason[~good],
                    "detail": parsed["reject_detail"][~good]},
    }
    keep = np.flatnonzero(good)
    rows = {k: parsed[k].take(pa.array(keep)) if isinstance(parsed[k], pa.Array) else parsed[k][keep]
            for k in _SHUFFLED}
    rows["line"] = parsed["line_no"][keep]
    part = host_partition(rows["host"], partitions)
    parts = []
    for j in range(partitions):
        sel = np.flatnonzero(part == j)
        parts.append({"block": block.index, **{k: v.take(pa.array(sel)) if isinstance(v, pa.Array) else v[sel]
                                               for k, v in rows.items()}})
    return summary, parts


def between_blocks(summaries: list[dict[str, Any]], options: HttpLogOptions, source: str) -> dict[str, Any]:
    """Each block's first line, the log's time range; fails here when too many lines are rejected."""
    counts = [s["lines"] for s in summaries]
    n_lines = sum(counts)
    rejected = sum(len(s["rejects"]["line"]) for s in summaries)
    first = blk.first_lines(counts)
    ends = [s["max_ts"] for s in summaries if s["max_ts"] is not None]
    if not ends or rejected > options.max_reject_fraction * n_lines:
        bad = next((i for i, s in enumerate(summaries) if len(s["rejects"]["line"])), None)
        where = "" if bad is None else (f"; first: line {first[bad] + summaries[bad]['rejects']['line'][0] - 1} "
                                        f"{summaries[bad]['rejects']['reason'][0]}")
        raise ShardtrainError(f"{source}: {rejected} of {n_lines} lines rejected (max_reject_fraction "
                              f"{options.max_reject_fraction}){where}")
    starts = [s["min_ts"] for s in summaries if s["min_ts"] is not None]
    return {"first": first, "lines": n_lines, "log_end": max(ends), "log_start": min(starts)}


def reduce_hosts(j: int, parts: list[dict[str, Any]], shared: dict[str, Any], options: HttpLogOptions,
                 partitions: int, drop_tail: bool = True) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One host partition's connections (features, labels, ``start_ts``) in ``sample_id`` order.

    The summary holds the counts and the partition's histogram of start times
    (``BINS`` bins over the log's time range).
    """
    first = np.asarray(shared["first"], np.int64)
    rows: dict[str, Any] = {}
    for key in _SHUFFLED:
        cols = [p[key] for p in parts]
        rows[key] = pa.concat_arrays(cols) if isinstance(cols[0], pa.Array) else np.concatenate(cols)
    line_no = np.concatenate([first[p["block"]] + p["line"] - 1 for p in parts]).astype(np.int64)
    rows["line_no"], rows["sample_id"] = line_no, line_no.copy()
    log_end = shared["log_end"]
    sessions = logs.sessionize(rows, options.gap_seconds)
    conn = logs.connection_features(sessions, options.first_k, options.long_n,
                                    log_end if options.censor_tail else None, options.gap_seconds)
    short = conn["n_requests"] < (options.first_k if options.min_requests is None else options.min_requests)
    late = conn["start_ts"] > log_end - options.tail_horizon_seconds if drop_tail else np.zeros_like(short)
    conn = {k: v[~short & ~late] for k, v in conn.items() if k != "n_requests"}
    summary = {"requests": int(line_no.size), "connections": int(short.size), "dropped_short": int(short.sum()),
               "dropped_tail": int((late & ~short).sum()), "kept": int(conn["sample_id"].size),
               "hist": np.bincount(time_bin(conn["start_ts"], shared), minlength=BINS)}
    return summary, conn


def time_bin(start_ts: np.ndarray, shared: dict[str, Any]) -> np.ndarray:
    """Histogram bin (int64) of each start time: ``BINS`` equal bins over [log_start, log_end]."""
    lo, hi = shared["log_start"], shared["log_end"]
    width = max(1, -(-(hi - lo + 1) // BINS))  # ceil: every second of the log has a bin
    return np.minimum((np.asarray(start_ts, np.int64) - lo) // width, BINS - 1)


def keys_in_bins(conn: dict[str, np.ndarray], wanted: list[int], shared: dict[str, Any]) -> np.ndarray:
    """``(start_ts, sample_id)`` rows (int64 (K, 2)) of the connections starting in the ``wanted`` bins."""
    sel = np.isin(time_bin(conn["start_ts"], shared), wanted)
    return np.stack([conn["start_ts"][sel], conn["sample_id"][sel]], axis=1)


def cut_keys(hists: list[np.ndarray], handles: list[Any], shared: dict[str, Any],
             fractions: tuple[float, ...], executor: str) -> list[tuple[int, int] | None]:
    """The keys of global rank ``round(f * M)`` for the first two cumulative fractions (None: past the end).

    Selection: the summed histogram (partition order) names the bin of each cut rank,
    one pass returns the keys in those bins only, and the driver sorts them.
    """
    cum = np.cumsum(np.sum(hists, axis=0))  # (BINS,)
    total = int(cum[-1]) if cum.size else 0
    ranks = np.round(np.cumsum(np.asarray(fractions, np.float64))[:2] * total).astype(np.int64)
    bins = [int(np.searchsorted(cum, r, side="right")) if r < total else None for r in ranks]
    wanted = sorted({b for b in bins if b is not None})
    if not wanted:
        return [None, None]
    keys = np.concatenate(map_tasks(keys_in_bins, handles, executor, wanted, shared))  # (K, 2)
    where = time_bin(keys[:, 0], shared)
    cuts: list[tuple[int, int] | None] = []
    for r, b in zip(ranks, bins):
        if b is None:
            cuts.append(None)
            continue
        inside = keys[where == b]
        inside = inside[np.lexsort((inside[:, 1], inside[:, 0]))]
        cuts.append(tuple(int(v) for v in inside[r - (int(cum[b - 1]) if b else 0)]))
    return cuts


def split_codes(conn: dict[str, np.ndarray], rule: str, cuts: list, seed: int,
                fractions: tuple[float, ...]) -> np.ndarray:
    """Split code (int8: 0 train, 1 val, 2 test) per connection; ``rule="test"``: all test."""
    ids, start = conn["sample_id"], conn["start_ts"]
    if rule == "test":
        return np.full(ids.size, 2, np.int8)
    if rule == "hash":
        bounds = np.cumsum(np.asarray(fractions, np.float64))[:2]
        return np.searchsorted(bounds, logs.hash_unit(seed, ids), side="right").astype(np.int8)
    code = np.zeros(ids.size, np.int8)
    for cut in cuts:  # rank >= cut  <=>  key >= the cut's key (keys are unique)
        if cut is not None:
            code += ((start > cut[0]) | ((start == cut[0]) & (ids >= cut[1]))).astype(np.int8)
    return code


def map_assign(conn: dict[str, np.ndarray], rule: str, cuts: list, seed: int, fractions: tuple[float, ...],
               bounds: np.ndarray) -> tuple[dict[str, Any], list]:
    """Split codes and train moments of one host partition; its rows cut into ranges of line numbers."""
    code = split_codes(conn, rule, cuts, seed, fractions)
    x = conn["x"][code == 0].astype(np.float64)  # (n, F), float32 values: squares are exact in float64
    moments = {"n": int(x.shape[0]), "sum": [exact.exact_sum(col) for col in x.T],
               "sq": [exact.exact_square_sum(col) for col in x.T]}
    rng = np.searchsorted(bounds, conn["sample_id"], side="right")
    parts = []
    for r in range(len(bounds) + 1):
        sel = np.flatnonzero(rng == r)
        parts.append({**{k: conn[k][sel] for k in COLUMNS}, "code": code[sel]})
    return moments, parts


def merge_moments(summaries: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Train mean and std (float64 (F,)) from per-partition exact sums: the same for any partitioning.

    Mean and variance are exact rationals rounded once to float64 (the population std,
    as ``numpy.std``; ``shardtrain.core.exact``); a constant feature gets std 1, no train
    row mean 0 and std 1.
    """
    width = len(logs.FEATURE_NAMES)
    n = sum(s["n"] for s in summaries)
    if n == 0:
        return {"mean": np.zeros(width), "std": np.ones(width)}
    mean, std = exact.moments(n, [sum(s["sum"][f] for s in summaries) for f in range(width)],
                              [sum(s["sq"][f] for s in summaries) for f in range(width)])
    return {"mean": mean, "std": np.where(std > 1e-12, std, 1.0)}


def fixed_moments(summaries: list[dict[str, Any]], fitted: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``between`` for a log standardised with another log's train statistics (the test log)."""
    return fitted


def reduce_range(j: int, parts: list[dict[str, Any]], shared: dict[str, np.ndarray], *_: Any) -> tuple[dict, dict]:
    """One range of line numbers: its connections in ``sample_id`` order, standardised; counts per split."""
    cols = {k: np.concatenate([p[k] for p in parts]) for k in (*COLUMNS, "code")}
    order = np.argsort(cols["sample_id"], kind="stable")
    cols = {k: v[order] for k, v in cols.items()}
    cols["x"] = logs.standardise(cols["x"], shared["mean"], shared["std"])
    counts, labels = [], []
    for c in range(len(logs.SPLITS)):
        sel = cols["code"] == c
        counts.append(int(sel.sum()))
        labels.append({lab: dict(zip(*np.unique(cols[lab][sel], return_counts=True))) for lab in logs.LABEL_CLASSES})
    return {"counts": counts, "labels": labels}, cols


def load_split(cols: dict[str, np.ndarray], code: int) -> dict[str, np.ndarray]:
    """A range's rows of one split (``Parts.load``): ``sample_id``, standardised ``x``, the labels."""
    sel = cols["code"] == code
    return {k: cols[k][sel] for k in COLUMNS}


def connections(locations: list[str], options: HttpLogOptions, executor: str, block_bytes: int,
                partitions: int, source: str) -> dict[str, Any]:
    """Exchange 1 over one log: ``{"handles", "hosts" (reduce summaries), "shared", "stats"}``."""
    plan = blk.plan_line_blocks(locations, block_bytes)
    between = functools.partial(between_blocks, options=options, source=source)
    maps, reduces, handles = map_reduce(map_block, plan, reduce_hosts, partitions, executor, options, partitions,
                                        between=between)
    shared = between_blocks(maps, options, source)  # cheap; the driver's own copy of what the reduces got
    return {"handles": handles, "hosts": reduces, "shared": shared,
            "stats": _stats(maps, reduces, shared, source)}


def _stats(maps: list[dict], reduces: list[dict], shared: dict[str, Any], source: str) -> dict[str, Any]:
    """The log's counts and rejects, as the in-memory path reported them (global line numbers)."""
    line, reason, detail = [], [], []
    first_of_file: dict[int, int] = {}
    for s, first in zip(maps, shared["first"]):
        start = first_of_file.setdefault(s["file_index"], first)
        rel = s["rejects"]["line"]
        line.append(first + rel - 1)
        reason.append(s["rejects"]["reason"])
        detail.append(np.array([f"{s['name']}:{first - start + r}: {d}" for r, d in zip(rel, s["rejects"]["detail"])],
                               dtype=object))
    reason_all = np.concatenate(reason) if reason else np.zeros(0, object)
    names, counts = np.unique(reason_all, return_counts=True)
    total = {k: sum(r[k] for r in reduces) for k in ("requests", "connections", "dropped_short", "dropped_tail")}
    return {"source": source, "lines": shared["lines"], **total,
            "rejects": {"count": int(reason_all.size), "reasons": {str(r): int(c) for r, c in zip(names, counts)},
                        "rows": {"sample_id": np.concatenate(line).astype(np.int64), "reason": reason_all,
                                 "detail": np.concatenate(detail) if detail else np.zeros(0, object)}}}


def assign(log: dict[str, Any], rule: str, fractions: tuple[float, ...], seed: int, executor: str,
           partitions: int, fitted: dict[str, np.ndarray] | None = None) -> tuple[list, list, dict]:
    """Exchange 2 over one log: ``(range summaries, range handles, mean/std)``.

    ``fitted`` (the test log): standardise with these statistics instead of this log's train.
    """
    hists = [r["hist"] for r in log["hosts"]]
    cuts = cut_keys(hists, log["handles"], log["shared"], fractions, executor) if rule == "time" else [None, None]
    lines = log["shared"]["lines"]
    bounds = np.array([1 + lines * r // partitions for r in range(1, partitions)], np.int64)
    between = merge_moments if fitted is None else functools.partial(fixed_moments, fitted=fitted)
    maps, reduces, handles = map_reduce(map_assign, log["handles"], reduce_range, partitions, executor,
                                        rule, cuts, seed, tuple(fractions), bounds, between=between)
    return reduces, handles, between(maps)


def split_parts(reduces: list[dict], handles: list[Any], code: int) -> Parts:
    """The ``Parts`` source of one split: every range, in order, filtered to the split by its loader."""
    return Parts(parts=[(h, r["counts"][code]) for h, r in zip(handles, reduces)],
                 load=functools.partial(load_split, code=code))


def split_meta(reduces: list[dict], rule: str, fractions: tuple[float, ...], seed: int,
               moments: dict[str, np.ndarray], test: list[dict] | None = None) -> dict[str, Any]:
    """The ``split`` metadata of the in-memory path: rule, counts, label balance, the standardisation."""
    counts, balance = {}, {}
    for c, name in enumerate(logs.SPLITS):
        source = test if test is not None and c == 2 else reduces
        counts[name] = sum(r["counts"][c] for r in source)
        merged: dict[str, dict[int, int]] = {lab: {} for lab in logs.LABEL_CLASSES}
        for r in source:
            for lab, values in r["labels"][c].items():
                for v, n in values.items():
                    merged[lab][int(v)] = merged[lab].get(int(v), 0) + int(n)
        balance[name] = {lab: {str(v): merged[lab][v] for v in sorted(merged[lab])} for lab in merged}
    return {"rule": rule if test is None else f"{rule} (train/val), test log (test)",
            "fractions": list(fractions), "seed": seed, "counts": counts, "label_counts": balance,
            "standardisation": {"fit_split": "train", "mean": moments["mean"].tolist(),
                                "std": moments["std"].tolist()}}
