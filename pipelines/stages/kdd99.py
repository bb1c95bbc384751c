"""KDD Cup 99 stage functions and job building: the driver plans, the tasks read.

The train and test inputs (one file each by default, or the files of
``dataset.options.train_path`` / ``test_path``, local or on a store) are cut into
blocks (``cfg.prepare.block_bytes``; a .gz file is one block). Passes over the blocks
(``shardtrain.readers.kdd99_blocks``, run as ``map_tasks`` on the local or Ray
executor) return small summaries that the driver merges in block order: line counts,
rejects, per-attack counts and hash histograms for the stratified validation carve,
exact sums for the standardisation, vocabularies. Each split's source is then a
:class:`~shardtrain.stages.runner.Parts` of block handles: the shard tasks re-read their
blocks and featurise them with the fitted transform. The output is standardised float32
``x`` and two label columns (``label_attack``, ``label_category``), as before.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from shardtrain.core import exact
from shardtrain.core.errors import ShardtrainError
from shardtrain.readers import kdd99
from shardtrain.readers import kdd99_blocks as kb
from shardtrain.readers.kdd99 import Kdd99Options
from shardtrain.shards import storage
from shardtrain.shards.blocks import BLOCK_BYTES, Block, compression_of, first_lines, plan_line_blocks, read_block
from shardtrain.stages.dense import dense_describe, passthrough, passthrough_jobs, reject_records
from shardtrain.stages.mapreduce import map_tasks
from shardtrain.stages.runner import Parts, SplitJob


def kdd99_transform(meta: dict[str, Any]) -> dict[str, Any]:
    """What prepare fitted on the KDD training split, for predict: vocabularies, standardisation, categories."""
    return {"kind": "kdd99", "feature_names": list(meta["feature_names"]), "vocab": meta["vocab"],
            "standardisation": meta["standardisation"], "category_map": meta["category_map"]}


def kdd99_jobs(train: Sequence[storage.Location] | storage.Location,
               test: Sequence[storage.Location] | storage.Location, attack_types: storage.Location,
               options: Kdd99Options, seed: int, executor: str = "local",
               block_bytes: int = BLOCK_BYTES) -> list[SplitJob]:
    """Plan both inputs in blocks, fit the transform from block summaries, and hand the runner block handles.

    ``train`` and ``test`` are each one file or a list of files read as one log (line
    numbers run on across them). The driver holds only per-block summaries; every
    pass over the rows, and the shard tasks' reads, go through
    ``shardtrain.stages.mapreduce.map_tasks`` on ``executor``. With
    ``options.drop_duplicates`` (a global comparison of rows) the rows are read here.
    """
    train, test = _as_list(train), _as_list(test)
    categories = kdd99.category_map(kdd99.read_attack_types(attack_types))
    if options.drop_duplicates:
        return _in_driver_jobs(train, test, attack_types, options, seed, block_bytes)
    dc = options.detail_chars
    inputs = {"train": plan_line_blocks(train, block_bytes), "test": plan_line_blocks(test, block_bytes)}
    pieces = {name: _pieces(blocks, executor) for name, blocks in inputs.items()}
    scans = {"train": map_tasks(kb.scan_piece, pieces["train"], executor, dc, seed),
             "test": map_tasks(kb.scan_piece, pieces["test"], executor, dc, None)}
    rejects = {}
    for name, paths in (("train", train), ("test", test)):
        rows = _merge_rejects([s["rejects"] for s in scans[name]])
        kdd99.check_rejects(_name(paths), rows, sum(s["lines"] for s in scans[name]), options.max_reject_fraction)
        rejects[name] = kdd99.reject_summary(rows)
    carve = _carve(pieces["train"], scans["train"], options.val_fraction, seed, executor, dc)
    log_cols = np.isin(np.array(kdd99.NUMERIC), np.array(options.log1p_columns, dtype=object))  # (38,)
    stats = map_tasks(kb.stats_piece, pieces["train"], executor, dc, carve, log_cols)
    n_train = sum(s["train"] for s in stats)
    if n_train == 0:
        raise ShardtrainError(f"{_name(train)}: no training row left after rejects and the validation carve")
    mean, std = exact.moments(n_train, [sum(c) for c in zip(*(s["s1"] for s in stats))],
                           [sum(c) for c in zip(*(s["s2"] for s in stats))])
    std = np.where(std > 1e-12, std, 1.0)  # num_outbound_cmds is constant 0 in KDD
    vocab = {c: sorted({v for s in stats for v in s["vocab"][c]}) for c in kdd99.SYMBOLIC}
    meta = _meta(options, seed, log_cols, mean, std, vocab, categories, stats, scans, rejects)
    meta["inputs"] = {name: [storage.redact(p) for p in paths] for name, paths in (("train", train), ("test", test))}
    rows = {"train": [s["train"] for s in stats], "val": [s["val"] for s in stats],
            "test": [s["rows"] for s in scans["test"]]}
    fitted = {split: kb.Fitted(split, dc, None if split == "test" else carve, log_cols, mean, std, vocab, categories)
              for split in ("train", "val", "test")}
    sources = {split: _parts(pieces["test" if split == "test" else "train"], rows[split], fitted[split])
               for split in ("train", "val", "test")}
    extra = {k: v for k, v in meta.items() if k not in ("rejects", "labels", "feature_names")}
    pre = {"train": reject_records(rejects["train"]["rows"]), "test": reject_records(rejects["test"]["rows"])}
    sizes = {s: src.rows() + len(pre.get(s, [])) for s, src in sources.items()}
    return passthrough_jobs(sources, meta, extra, pre, sizes, kdd99_transform(meta))


def _as_list(paths: Sequence[storage.Location] | storage.Location) -> list[storage.Location]:
    """One location or several, as a list."""
    return [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)


def _name(paths: list[storage.Location]) -> str:
    """How messages name an input: its file (redacted), or its first file and how many more."""
    first = storage.redact(paths[0])
    return first if len(paths) == 1 else f"{first} (+{len(paths) - 1} more files)"


def _pieces(blocks: list[Block], executor: str) -> list[kb.Piece]:
    """Each block with its first line number (a count pass only when the input has several blocks)."""
    counts = map_tasks(kb.count_piece, blocks[:-1], executor) if len(blocks) > 1 else []
    return list(zip(blocks, first_lines(counts + [0])))


def _merge_rejects(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The blocks' reject columns joined in block (= line) order."""
    return {k: np.concatenate([p[k] for p in parts]) if parts else np.array([], dtype=object)
            for k in ("sample_id", "reason", "detail")}


def _merge_counts(dicts: list[dict[str, int]]) -> dict[str, int]:
    """Counts summed in block order, keys in order of first appearance (as one value_counts over all rows)."""
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def _carve(pieces: list[kb.Piece], scans: list[dict[str, Any]], fraction: float, seed: int, executor: str,
           dc: int) -> kb.Carve:
    """Per attack, the cutoff ``(hash, line)`` of its ``round(fraction * n)``-th smallest row.

    The merged histograms give the bucket holding that row; one more pass returns only
    the rows in those buckets, and the cutoff is found among them.
    """
    counts = _merge_counts([s["attacks"] for s in scans])
    boundary, need = {}, {}
    for name, n in counts.items():
        take = int(np.round(fraction * n))
        if take == 0:
            continue
        hist = np.zeros(kb.BUCKETS, dtype=np.int64)
        for s in scans:
            buckets, c = s["hist"].get(name, ((), ()))
            np.add.at(hist, np.asarray(buckets, dtype=np.int64), np.asarray(c, dtype=np.int64))
        cum = np.cumsum(hist)
        b = int(np.searchsorted(cum, take))  # first bucket whose cumulative count reaches take
        boundary[name], need[name] = b, take - (int(cum[b - 1]) if b else 0)
    found = map_tasks(kb.boundary_piece, pieces, executor, dc, seed, boundary) if boundary else []
    cutoff = {}
    for name, k in need.items():
        h = np.concatenate([f[name][0] for f in found if name in f])
        line = np.concatenate([f[name][1] for f in found if name in f])
        i = np.lexsort((line, h))[k - 1]
        cutoff[name] = (float(h[i]), int(line[i]))
    return kb.Carve(seed, cutoff)


def _parts(pieces: list[kb.Piece], rows: list[int], fitted: kb.Fitted) -> Parts:
    """A split's Parts: the blocks holding its rows (the first block alone when none does, for the schema)."""
    parts = [(p, n) for p, n in zip(pieces, rows) if n > 0] or [(pieces[0], 0)]
    return Parts(parts, functools.partial(kb.load_piece, fitted))


def _meta(options: Kdd99Options, seed: int, log_cols: np.ndarray, mean: np.ndarray, std: np.ndarray,
          vocab: dict[str, list[str]], categories: dict[str, str], stats: list[dict[str, Any]],
          scans: dict[str, list[dict[str, Any]]], rejects: dict[str, Any]) -> dict[str, Any]:
    """The metadata ``prepare_kdd99`` gives, from the merged summaries (same keys, same order)."""
    unknown = {"train": {c: {} for c in kdd99.SYMBOLIC}}
    for split, dicts in (("val", [s["values"] for s in stats]), ("test", [s["values"] for s in scans["test"]])):
        unknown[split] = {c: {v: n for v, n in _merge_counts([d[c] for d in dicts]).items() if v not in vocab[c]}
                          for c in kdd99.SYMBOLIC}
    attack_counts = {split: _merge_counts([s["attacks"][split] for s in stats]) for split in ("train", "val")}
    attack_counts["test"] = _merge_counts([s["attacks"] for s in scans["test"]])
    feature_names = [("log1p_" if lg else "") + c for c, lg in zip(kdd99.NUMERIC, log_cols)]
    feature_names += [f"{c}={v}" for c in kdd99.SYMBOLIC for v in vocab[c]]
    counts = {"train": sum(s["train"] for s in stats), "val": sum(s["val"] for s in stats),
              "test": sum(s["rows"] for s in scans["test"])}
    return {
        "feature_names": feature_names,
        "labels": {"label_attack": {"classes": ["normal", "attack"]},
                   "label_category": {"classes": list(kdd99.CATEGORIES)}},
        "vocab": vocab,
        "standardisation": {"fit_split": "train", "columns": list(kdd99.NUMERIC),
                            "log1p_columns": list(options.log1p_columns), "mean": mean.tolist(), "std": std.tolist()},
        "category_map": categories, "category_disputed": list(kdd99.DISPUTED),
        "unknown_categories": unknown, "attack_counts": attack_counts, "counts": counts, "duplicates_dropped": 0,
        "val_rule": {"fraction": options.val_fraction, "seed": seed, "stratified_by": "attack name",
                     "key": "hash_unit(seed, line_no)"},
        "rejects": rejects, "options": storage.redact_obj(dataclasses.asdict(options)),
    }


def _in_driver_jobs(train: list[storage.Location], test: list[storage.Location], attack_types: storage.Location,
                    options: Kdd99Options, seed: int, block_bytes: int) -> list[SplitJob]:
    """``drop_duplicates``: the previous, in-driver path (every row compared with every other), inputs read whole."""
    data = {name: b"".join(read_block(b) for b in plan_line_blocks(paths, block_bytes))
            for name, paths in (("train", train), ("test", test))}
    splits, meta = kdd99.prepare_kdd99(data["train"], data["test"], attack_types, options, seed,
                                       names=(_name(train), _name(test)))
    extra = {k: v for k, v in meta.items() if k not in ("rejects", "labels", "feature_names")}
    extra["options"] = storage.redact_obj(extra["options"])
    rejects = {"train": reject_records(meta["rejects"]["train"].get("rows")),
               "test": reject_records(meta["rejects"]["test"].get("rows"))}
    sizes = {s: len(c["sample_id"]) + len(rejects.get(s, [])) for s, c in splits.items()}
    return passthrough_jobs(splits, meta, extra, rejects, sizes, kdd99_transform(meta))


def kdd99_predict_job(path: storage.Location, options: Kdd99Options, fitted: dict[str, Any]) -> SplitJob:
    """The ``predict`` split of a KDD-format CSV (gzip or plain), encoded with the training split's transform.

    Numeric columns get the training log1p choice and mean/std, symbolic ones the training
    vocabularies (an unseen value is an all-zero one-hot, counted in ``extra.unknown``);
    the labels come from the file's label field with the training category map (a name
    it does not know has category -1). The file must hold the label field (42 fields).
    """
    transform = fitted.get("transform") or {}
    if transform.get("kind") != "kdd99" or "vocab" not in transform:
        raise ShardtrainError("the run's prepare index has no kdd99 transform (prepared before predict "
                              "existed?); prepare and train again")
    name = storage.redact(path)
    data = _read_whole(path, name)  # one user file: read here (predict's input is not planned in blocks)
    _require_labelled_kdd(data, name)
    cols, rejects = kdd99.read_kdd_file(data, options.max_reject_fraction, options.detail_chars, name)
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
    extra = {"source": name, "unknown": unknown}
    return SplitJob("predict", source, passthrough, None, describe=dense_describe(meta, extra, transform),
                    pre_rejects=pre, input_rows=len(source["sample_id"]) + len(pre))


def _read_whole(path: storage.Location, name: str) -> bytes:
    """A file or object's bytes, decompressed by its suffix (.gz, .bz2)."""
    try:
        return read_block(Block(str(path), 0, -1, 0, 0, 0, compression_of(path)))
    except (OSError, EOFError, pa.ArrowInvalid) as e:
        raise ShardtrainError(f"{name}: cannot read KDD records ({str(e).splitlines()[0]})") from e


def _require_labelled_kdd(data: bytes, name: str) -> None:
    """One line when the file's first record has 41 fields (no label): the reader needs the 42nd."""
    first = next((ln for ln in data.splitlines() if ln.strip()), b"")
    if first.count(b",") == 40:
        raise ShardtrainError(f"{name}:1: 41 fields: predict needs KDD records with their label field "
                              "(42 fields; a file without it is not read yet)")
