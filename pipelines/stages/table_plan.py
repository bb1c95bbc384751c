"""The table stage's task side: input parts, what a task reads and judges in one, and each pass's summary.

The driver cuts every input into :class:`Part` s without reading data: CSV and JSON Lines
files into byte ranges at line boundaries (``shardtrain.shards.blocks``; a CSV header
belongs to the first block, later blocks get the names from the plan), Parquet files
by row group and Arrow IPC files by record batch (only footers are read), compressed
files, IPC streams and Feather v1 files whole. :func:`read_part` is what a task runs to
get a part's rows from storage, :func:`_evaluate` what it makes of them (labels, split,
rejects, parsed cells) as far as the plan knows, and ``*_part`` the passes' summaries
(``shardtrain.stages.table`` is the driver that merges them); :func:`load` is a shard
task's piece of a split. The cell parsing and the reject rules here are shared with predict.

Statistics that one numpy call gave over all training rows are merged from per-part
summaries so that the result does not depend on how the input was cut:

- sums are exact (``shardtrain.core.exact.exact_sum``: float64 mantissas added as integers per exponent),
  so a mean (and a variance from exact sums of the rounded squared deviations) is the
  correctly rounded value whatever the block size or executor, within an ulp or two of
  numpy's pairwise sums;
- a median is exact (:func:`select_step`): the values' order-preserving 64-bit keys are
  narrowed 16 bits a pass by merged histograms until the middle values are known, the
  last pass usually sending the few distinct values left.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shardtrain.core.errors import ShardtrainError
from shardtrain.core.exact import exact_sum
from shardtrain.core.labels import EMPTY_LABEL, UNKNOWN_LABEL, LabelVocab
from shardtrain.readers.table import (Inputs, TableOptions, categories, numbers, read_arrow_whole, read_csv_bytes,
                                      read_jsonl_bytes, type_class)
from shardtrain.shards import blocks as blk
from shardtrain.shards import storage

SPLITS = ("train", "val", "test")
SPLIT_VALUES = {"train": 0, "val": 1, "validation": 1, "valid": 1, "test": 2}
ROLE_CODE = {"path": 0, "val_path": 1, "test_path": 2}
OTHER, MISSING = "<other>", "<missing>"

DIGITS = 1 << 16  # one radix level of a median search: 16 bits of the key
FEW = 4096  # a part sends its matching values themselves (distinct, with counts) when it has at most this many


@dataclass(frozen=True)
class Part:
    """One piece of an input file that one task reads: a line block, a row group, a record batch or the whole file.

    ``role`` is ``path``/``val_path``/``test_path``, ``file_index`` the file's position in
    the role's files, ``piece`` the row group / record batch (``-1``: a line block or the
    whole file). After the first pass: ``rows`` (data rows), ``first_row`` (1-based row in
    its file), ``offset`` (0-based row over all inputs: the sample id without ``id_col``)
    and ``ranks`` (per stratum, the main-input rows of it in earlier parts).
    """

    index: int
    role: str
    location: str
    file_index: int
    fmt: str
    block: blk.Block | None = None
    piece: int = -1
    rows: int = -1
    first_row: int = 1
    offset: int = 0
    ranks: tuple[int, ...] = ()

    def with_(self, **changes: Any) -> Part:
        """A copy with ``changes`` (the first passes fill in counts)."""
        return dataclasses.replace(self, **changes)


def plan_parts(roles: dict[str, tuple[list[str], str]], block_bytes: int) -> list[Part]:
    """Every input's parts in input order (roles, files, then position in the file); reads footers only."""
    parts: list[Part] = []
    for role, (files, fmt) in roles.items():
        for fi, location in enumerate(files):
            for block, piece in _pieces(location, fmt, block_bytes):
                parts.append(Part(len(parts), role, location, fi, fmt, block, piece))
    return parts


def _pieces(location: str, fmt: str, block_bytes: int) -> list[tuple[blk.Block | None, int]]:
    """``(block, piece)`` per part of one file."""
    try:
        if fmt in ("csv", "jsonl"):
            return [(b, -1) for b in blk.plan_line_blocks([location], block_bytes)]
        if fmt == "parquet":
            import pyarrow.parquet as pq

            with storage.open_input(location) as fh:
                groups = pq.ParquetFile(fh).metadata.num_row_groups
            return [(None, g) for g in range(max(groups, 1))]
        with storage.open_input(location) as fh:
            try:
                batches = pa.ipc.open_file(fh).num_record_batches
            except pa.ArrowInvalid:  # an IPC stream or Feather v1: no footer to index, read whole
                return [(None, -1)]
        return [(None, b) for b in range(max(batches, 1))]
    except FileNotFoundError:
        raise ShardtrainError(f"{storage.redact(location)}: table file not found") from None
    except (OSError, pa.ArrowInvalid) as e:
        raise ShardtrainError(f"{storage.redact(location)}: cannot read as {fmt} ({storage.error_text(e)})") from e


def read_part(part: Part, names: list[str], delimiter: str, header: bool,
              text_cols: frozenset[str] = frozenset()) -> pa.Table:
    """The part's rows from storage, columns ``names`` (its file's), as the whole-file reader would give them."""
    try:
        if part.fmt == "csv":
            first = part.block.start == 0
            return read_csv_bytes(blk.read_block(part.block), names, header and first, delimiter)
        if part.fmt == "jsonl":
            return read_jsonl_bytes(blk.read_block(part.block), names, text_cols)
        if part.fmt == "parquet":
            import pyarrow.parquet as pq

            with storage.open_input(part.location) as fh:
                pf = pq.ParquetFile(fh)
                if pf.metadata.num_row_groups == 0:
                    return pf.schema_arrow.empty_table()
                return pf.read_row_group(part.piece)
        if part.piece < 0:
            return read_arrow_whole(part.location)
        with storage.open_input(part.location) as fh:
            return pa.Table.from_batches([pa.ipc.open_file(fh).get_batch(part.piece)])
    except (OSError, pa.ArrowInvalid, ValueError, UnicodeDecodeError) as e:
        where = f" bytes {part.block.start}-{part.block.stop}" if part.block is not None and part.block.start else ""
        raise ShardtrainError(f"{storage.redact(part.location)}{where}: cannot read as {part.fmt} "
                              f"({str(e).splitlines()[0] if str(e) else e})") from e


# --- exact medians ------------------------------------------------------------------------

def keys(values: np.ndarray) -> np.ndarray:
    """Order-preserving uint64 keys of float64 values (no NaN; -0.0 counts as 0.0)."""
    bits = (np.asarray(values, dtype=np.float64) + 0.0).view(np.uint64)
    neg = (bits >> np.uint64(63)).astype(bool)
    return np.where(neg, ~bits, bits | np.uint64(1 << 63))


def from_key(key: int) -> float:
    """The float64 a key stands for."""
    bits = (key & ~(1 << 63)) if key >> 63 else (~key & ((1 << 64) - 1))
    return float(np.array([bits], dtype=np.uint64).view(np.float64)[0])


def select_summary(k: np.ndarray, targets: list[tuple[int, int]]) -> list[Any]:
    """Per target ``(prefix, level)``: what this part's keys ``k`` say about the next 16 bits below ``prefix``.

    ``("few", keys, counts)`` when at most :data:`FEW` distinct keys share the prefix (then
    they settle the search), else ``("hist", digits, counts)``.
    """
    out = []
    for prefix, level in targets:
        shift = 64 - 16 * level
        mine = k if level == 0 else k[(k >> np.uint64(shift)) == np.uint64(prefix)]
        uniq, counts = np.unique(mine, return_counts=True)
        if uniq.size <= FEW:
            out.append(("few", uniq, counts))
            continue
        digit = ((mine >> np.uint64(shift - 16)) & np.uint64(DIGITS - 1)).astype(np.int64)
        hist = np.bincount(digit, minlength=DIGITS)
        nz = np.flatnonzero(hist)
        out.append(("hist", nz, hist[nz]))
    return out


def select_step(summaries: list[Any], prefix: int, level: int, rank: int) -> tuple[bool, int, int]:
    """Merge the parts' summaries of one target (in part order); ``(done, key or prefix, rank left)``.

    ``done``: the key of rank ``rank`` among the prefix's values is known. Else the next
    target is the returned prefix (16 bits longer) and the rank within it.
    """
    shift = 64 - 16 * level
    if all(s[0] == "few" for s in summaries):
        merged: dict[int, int] = {}
        for _, uniq, counts in summaries:
            for u, c in zip(uniq.tolist(), counts.tolist()):
                merged[u] = merged.get(u, 0) + c
        for u in sorted(merged):
            if rank < merged[u]:
                return True, u, 0
            rank -= merged[u]
        raise AssertionError("rank beyond the values")  # internal: counts were merged wrongly
    hist = np.zeros(DIGITS, dtype=np.int64)
    for kind, a, b in summaries:
        if kind == "hist":
            np.add.at(hist, a, b)
        else:
            np.add.at(hist, ((a >> np.uint64(shift - 16)) & np.uint64(DIGITS - 1)).astype(np.int64), b)
    cum = np.cumsum(hist)
    digit = int(np.searchsorted(cum, rank, side="right"))
    rank -= int(cum[digit - 1]) if digit else 0
    return False, (prefix << 16) | digit if level else digit, rank


# --- parsing one set of rows (a part in prepare, the whole input in predict) ---------------

def _reject(reason: np.ndarray, detail: np.ndarray, rows: np.ndarray, why: str, texts: list[str]) -> None:
    """Mark ``rows`` rejected with ``why`` where no earlier reason holds (one reason per row)."""
    for i, text in zip(rows.tolist(), texts):
        if not reason[i]:
            reason[i], detail[i] = why, text


def _cell_text(col: pa.Array, i: int) -> str:
    value = col[i].as_py()
    return str(value)[:80]


def parse_features(inputs: Inputs, kinds: dict[str, str], opts: TableOptions, reason: np.ndarray,
                   detail: np.ndarray, reject_missing: bool) -> dict[str, Any]:
    """Parsed feature cells of every row: ``num`` (N, n_numeric) float64 and ``cat:<c>`` arrays.

    Marks ``non_numeric`` cells (and missing cells when ``reject_missing``) in
    ``reason``/``detail`` (first offending column in column order wins).
    """
    table, n = inputs.table, inputs.table.num_rows
    numeric = [c for c, k in kinds.items() if k == "numeric"]
    out: dict[str, Any] = {"num": np.zeros((n, len(numeric)))}
    for name, kind in kinds.items():
        col = table.column(name).combine_chunks()
        if kind == "numeric":
            values, bad = numbers(col, name)
            rows = np.flatnonzero(bad & (reason == ""))
            _reject(reason, detail, rows, "non_numeric",
                    [f"{inputs.where(i)} column '{name}': value {_cell_text(col, i)!r}" for i in rows])
            out["num"][:, numeric.index(name)] = values
            missing = np.isnan(values) & ~bad
        else:
            out["cat:" + name] = categories(col, name)
            missing = out["cat:" + name] == ""
        if reject_missing:
            rows = np.flatnonzero(missing & (reason == ""))
            _reject(reason, detail, rows, "missing_value", [f"{inputs.where(i)} column '{name}': empty" for i in rows])
    return out


def _id_values(inputs: Inputs, id_col: str) -> tuple[np.ndarray, int]:
    """``id_col`` as int64 and the first row that is not an integer (-1: none)."""
    values, bad = numbers(inputs.table.column(id_col), id_col)
    wrong = bad | np.isnan(values) | (values != np.round(values))
    first = int(np.flatnonzero(wrong)[0]) if wrong.any() else -1
    return np.where(wrong, 0, values).astype(np.int64), first


def id_error(where: str, value: Any, id_col: str) -> ShardtrainError:
    return ShardtrainError(f"{where}: column '{id_col}' (dataset.options.id_col) must hold integers, got {value!r}")


def sample_ids(inputs: Inputs, id_col: str | None, offset: int = 0, check_distinct: bool = True) -> np.ndarray:
    """``id_col`` values (distinct integers) when set, else the 0-based row over the input (from ``offset``)."""
    n = inputs.table.num_rows
    if not id_col or id_col not in inputs.table.column_names:
        return np.arange(offset, offset + n, dtype=np.int64)
    ids, first = _id_values(inputs, id_col)
    if first >= 0:
        raise id_error(inputs.where(first), inputs.table.column(id_col)[first].as_py(), id_col)
    if check_distinct:
        uniq, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            raise ShardtrainError(f"column '{id_col}' (dataset.options.id_col): value {int(uniq[counts > 1][0])} "
                                  f"occurs {int(counts.max())} times; ids must be distinct")
    return ids


def split_stats(cols: dict[str, Any], transform: dict[str, Any], rows: np.ndarray) -> dict[str, Any]:
    """How many cells of a split were imputed, and how many categories fell into ``<other>`` (counts per column)."""
    imputed = {spec["name"]: int(np.isnan(cols["num"][rows, j]).sum()) for j, spec in enumerate(transform["numeric"])}
    imputed.update({spec["name"]: int((cols["cat:" + spec["name"]][rows] == "").sum())
                    for spec in transform["categorical"] if MISSING in spec["values"]})
    other = {}
    for spec in transform["categorical"]:
        cells = cols["cat:" + spec["name"]][rows]
        known = set(spec["values"]) - {OTHER, MISSING}
        other[spec["name"]] = int(sum(1 for c in cells.tolist() if c and c not in known))
    return {"imputed": imputed, "other": other}


def nonzero(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: {c: n for c, n in v.items() if n} for k, v in stats.items()}


def source_columns(cols: dict[str, Any], rows: np.ndarray, sample_id: np.ndarray, label: Any) -> dict[str, Any]:
    """The raw columns of ``rows`` as one split job's source."""
    src = {"sample_id": sample_id[rows]}
    src.update({k: v[rows] for k, v in cols.items()})
    if label is not None:
        src["label"] = label[rows]
    return src


# --- one part, as far as the plan knows it -------------------------------------------------

def _inputs(part: Part, plan: dict[str, Any]) -> Inputs:
    """The part's rows (the training input's columns, in its order), each knowing its ``file:row``."""
    key = (part.role, part.file_index)
    table = read_part(part, plan["names"][key], plan["opts"].delimiter, plan["header"],
                         plan["text_cols"].get(key, frozenset()))
    if plan.get("columns"):
        table = table.select(plan["columns"])
    n = table.num_rows
    return Inputs(table, [part.location], np.zeros(n, np.int32),
                  np.arange(part.first_row, part.first_row + n, dtype=np.int64))


def _labels(lab: pa.Array, task: str, opts: TableOptions, codes: list[str] | None) -> tuple[Any, np.ndarray, np.ndarray]:
    """(label cells or float64 values, strata for the split (-1 = no label), bad: non-numeric regression label)."""
    if task == "regression":
        y, bad = numbers(lab, opts.label)
        return y, np.where(np.isnan(y), -1, 0), bad
    label = categories(lab, opts.label)
    if codes is None:  # strata are not needed (a split column or split files)
        strata = np.where(label == "", -1, 0)
    else:  # class k: the k-th of the sorted non-empty labels of every input, as np.unique numbered them
        idx = pc.index_in(pa.array(label.tolist(), pa.string()), value_set=pa.array(codes, pa.string()))
        strata = idx.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return label, strata, np.zeros(len(label), dtype=bool)


@functools.lru_cache(maxsize=16)
def _split_table(seed: int, k: int, n: int, fractions: tuple[float, ...]) -> np.ndarray:
    """Split index (int8) of the class-``k`` row of each rank: ``readers.text.stratified_split``'s rule per rank.

    The class's ``n`` rows are permuted by ``default_rng([seed, k])`` and cut at
    round-half-up of the cumulative fractions, so a row's split follows from its rank in
    its class alone: every task computes the same table (cached per worker process).
    """
    perm = np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, k]).permutation(n)
    cuts = np.floor(np.cumsum(np.asarray(fractions, dtype=np.float64)) * n + 0.5).astype(np.int64)
    cuts[-1] = n
    out = np.empty(n, dtype=np.int8)
    for s, (a, b) in enumerate(zip(np.concatenate([[0], cuts[:-1]]), cuts)):
        out[perm[a:b]] = s
    return out


def _split(part: Part, inputs: Inputs, strata: np.ndarray, plan: dict[str, Any], reason: np.ndarray,
           detail: np.ndarray) -> np.ndarray:
    """Split index per row of the part (int8, -1 = none), marking ``bad_split`` rejects."""
    opts, n = plan["opts"], inputs.table.num_rows
    if part.role != "path":
        return np.full(n, ROLE_CODE[part.role], dtype=np.int8)
    if opts.split_col:
        cells = categories(inputs.table.column(opts.split_col), opts.split_col)
        split = np.array([SPLIT_VALUES.get(c.lower(), -1) for c in cells.tolist()], dtype=np.int8)
        bad = np.flatnonzero(split < 0)
        _reject(reason, detail, bad, "bad_split",
                [f"{inputs.where(i)} column '{opts.split_col}': value {cells[i]!r} (expected train, val, "
                 f"validation or test)" for i in bad])
        return split
    if plan["rule"]["kind"] == "files":
        return np.zeros(n, dtype=np.int8)
    split = np.full(n, -1, dtype=np.int8)
    for k in np.unique(strata[strata >= 0]).tolist():
        rows = np.flatnonzero(strata == k)
        table = _split_table(plan["seed"], k, plan["n_k"][k], tuple(plan["rule"]["fractions"]))
        split[rows] = table[part.ranks[k] + np.arange(len(rows))]
    return split


def _evaluate(part: Part, plan: dict[str, Any]) -> dict[str, Any]:
    """Read a part and decide what the plan allows: labels, splits, rejects, parsed feature cells.

    Rejects are marked in today's order (bad split, label, feature cells in column
    order, unknown label), one reason per row.
    """
    opts = plan["opts"]
    inputs = _inputs(part, plan)
    n = inputs.table.num_rows
    reason, detail = np.full(n, "", dtype=object), np.full(n, "", dtype=object)
    lab = inputs.table.column(opts.label).combine_chunks()
    label, strata, bad = _labels(lab, plan["task"], opts, plan.get("codes"))
    split = _split(part, inputs, strata, plan, reason, detail)
    rows = np.flatnonzero(bad)
    _reject(reason, detail, rows, "non_numeric",
            [f"{inputs.where(i)} column '{opts.label}': value {_cell_text(lab, i)!r}" for i in rows])
    empty = (np.isnan(label) & ~bad) if label.dtype.kind == "f" else (label == "")
    rows = np.flatnonzero(empty)
    _reject(reason, detail, rows, EMPTY_LABEL, [f"{inputs.where(i)} column '{opts.label}': empty" for i in rows])
    cols = None
    if "kinds" in plan:
        cols = parse_features(inputs, plan["kinds"], opts, reason, detail, opts.missing == "reject")
        if plan["task"] == "classification" and plan.get("classes") is not None:
            vocab = LabelVocab(tuple(plan["classes"]), plan["classes_from"])
            rows = np.flatnonzero(vocab.encode(label)[1] == UNKNOWN_LABEL)
            _reject(reason, detail, rows, UNKNOWN_LABEL, [f"{inputs.where(i)}: {vocab.detail(label[i])}" for i in rows])
    return {"inputs": inputs, "label": label, "split": split, "reason": reason, "detail": detail, "cols": cols}


def _ids(ev: dict[str, Any], part: Part, plan: dict[str, Any]) -> np.ndarray:
    """The part's sample ids (``id_col``, checked by the scan, or the row over all inputs)."""
    return sample_ids(ev["inputs"], plan["opts"].id_col, part.offset, check_distinct=False)


# The last part this process loaded, all three splits of it: consecutive shards of a split
# share parts (a part holds many shards' rows), and a shard task must not re-parse it each time.
_LOADED: dict[str, Any] = {}


def load(handle: tuple[Part, int], plan: dict[str, Any]) -> dict[str, Any]:
    """A shard task's piece: the kept rows of split ``handle[1]`` in part ``handle[0]``, raw cells, input order."""
    part, s = handle
    key = (plan["token"], part.index)
    if _LOADED.get("key") != key:
        ev = _evaluate(part, plan)
        ids = _ids(ev, part, plan)
        pieces = [source_columns(ev["cols"], np.flatnonzero((ev["split"] == k) & (ev["reason"] == "")), ids,
                                 ev["label"]) for k in range(len(SPLITS))]
        _LOADED.clear()
        _LOADED.update(key=key, pieces=pieces)
    return _LOADED["pieces"][s]


# --- the passes' task functions (module level: Ray pickles them by reference) ---------------

def _kind_summary(col: pa.Array, name: str) -> dict[str, Any]:
    """What a column's cells say about its kind: type class, present and non-number cells."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    cls = type_class(col.type)
    out = {"class": cls, "type": str(col.type), "present": 0, "bad": 0, "seen": 0, "ints": True, "distinct": []}
    if cls != "other":
        values, bad = numbers(col, name)
        seen = values[~np.isnan(values)]
        out.update(present=int(seen.size + bad.sum()), bad=int(bad.sum()), seen=int(seen.size),
                   ints=bool(np.all(seen == np.round(seen))), distinct=np.unique(seen))
    return out


def scan_part(part: Part, plan: dict[str, Any]) -> dict[str, Any]:
    """Pass 1: the part's rows, column names and type classes, the label's task summary, its id range."""
    from shardtrain.readers.table import json_kinds, read_jsonl_bytes
    from shardtrain.shards.blocks import read_block

    opts = plan["opts"]
    if part.fmt == "jsonl":
        data = read_block(part.block)
        kinds = json_kinds(data)
        names = list(kinds)
        table = read_jsonl_bytes(data, names)
        classes = {c: sorted(kinds[c]) for c in names}
    else:
        names = plan["names"][(part.role, part.file_index)]
        table = read_part(part, names, opts.delimiter, plan["header"])
        classes = {c: sorted({type_class(table.column(c).type)} - {"null"}) for c in names}
    n = table.num_rows
    out: dict[str, Any] = {"rows": n, "names": names, "classes": classes}
    if part.role == "path" and opts.label in names:
        lab = table.column(opts.label).combine_chunks()
        task_rows = np.ones(n, dtype=bool)
        if opts.split_col and opts.split_col in names:
            cells = categories(table.column(opts.split_col), opts.split_col)
            task_rows = np.array([SPLIT_VALUES.get(c.lower()) == 0 for c in cells.tolist()], dtype=bool)
        summary = _kind_summary(lab.filter(pa.array(task_rows)), opts.label)
        summary["distinct"] = summary["distinct"][: opts.max_classes + 1].tolist() if len(summary["distinct"]) else []
        out["label"] = summary
        out["label_numbers"] = _kind_summary(lab, opts.label)["seen"]  # regression strata: rows with a number
    if opts.id_col and opts.id_col in names:
        inputs = Inputs(table, [part.location], np.zeros(n, np.int32), np.arange(1, n + 1))
        ids, first = _id_values(inputs, opts.id_col)
        uniq, counts = np.unique(ids, return_counts=True)
        dup = (int(uniq[counts > 1][0]), int(counts.max())) if (counts > 1).any() else None
        out["ids"] = {"bad": (first, table.column(opts.id_col)[first].as_py()) if first >= 0 else None, "dup": dup,
                      "range": (int(uniq[0]), int(uniq[-1])) if n else None}
    return out


def strata_part(part: Part, plan: dict[str, Any]) -> tuple[dict[str, int], dict[str, int]]:
    """Pass 2 (classification, fraction splits): label counts over all rows and over the main input's rows."""
    lab = _inputs(part, plan).table.column(plan["opts"].label)
    uniq, counts = np.unique(categories(lab, plan["opts"].label).astype(str), return_counts=True)
    every = {u: int(c) for u, c in zip(uniq.tolist(), counts.tolist()) if u}
    return every, (every if part.role == "path" else {})


def kinds_part(part: Part, plan: dict[str, Any], names: list[str]) -> list[dict[str, Any]]:
    """Pass 3: per undeclared column, its kind summary over the part's training rows."""
    ev = _evaluate(part, plan)
    train = pa.array(ev["split"] == 0)
    table = ev["inputs"].table
    out = []
    for c in names:
        summary = _kind_summary(table.column(c).combine_chunks().filter(train), c)
        summary["distinct"] = []
        out.append(summary)
    return out


def _train_values(ev: dict[str, Any], plan: dict[str, Any]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The kept training rows and, per numeric column, their values (log1p applied) as fitted."""
    keep = (ev["split"] == 0) & (ev["reason"] == "")
    values = []
    for j, name in enumerate(numeric_names(plan)):
        v = ev["cols"]["num"][keep, j].copy()
        if name in plan["opts"].log1p:
            np.copysign(np.log1p(np.abs(v)), v, out=v)
        values.append(v)
    return keep, values


def fit_part(part: Part, plan: dict[str, Any]) -> dict[str, Any]:
    """Pass 4: what the transform needs from the part's kept training rows (exact sums, counts, median level 0)."""
    ev = _evaluate(part, plan)
    keep, values = _train_values(ev, plan)
    out: dict[str, Any] = {"keep": int(keep.sum()), "numeric": [], "categorical": [], "labels": [], "y": 0}
    for v in values:
        seen = v[~np.isnan(v)]
        out["numeric"].append({"seen": int(seen.size), "sum": exact_sum(seen),
                               "select": select_summary(keys(seen), [(0, 0)])[0]})
    for name in (c for c, k in plan["kinds"].items() if k == "categorical"):
        cells = ev["cols"]["cat:" + name][keep]
        uniq, counts = np.unique(cells[cells != ""].astype(str), return_counts=True)
        out["categorical"].append(dict(zip(uniq.tolist(), counts.tolist())))
    if plan["task"] == "classification":
        out["labels"] = sorted(set(ev["label"][keep].tolist()))
    else:
        out["y"] = exact_sum(ev["label"][keep])
    return out


def median_part(part: Part, plan: dict[str, Any], request: dict[int, list[tuple[int, int]]]) -> dict[int, list]:
    """A median pass: per numeric column asked for, the part's summary of each target prefix."""
    _, values = _train_values(_evaluate(part, plan), plan)
    return {j: select_summary(keys(values[j][~np.isnan(values[j])]), targets) for j, targets in request.items()}


def final_part(part: Part, plan: dict[str, Any]) -> dict[str, Any]:
    """Last pass: squared deviations (exact sums), rows kept and rejects per split, imputed/other counts."""
    ev = _evaluate(part, plan)
    transform = plan["transform"]
    keep, values = _train_values(ev, plan)
    var = []
    for v, spec in zip(values, transform["numeric"]):
        v = np.where(np.isnan(v), spec["median"], v)
        d = v - spec["mean"]
        var.append(exact_sum(d * d))
    y_var = 0
    if plan["task"] == "regression":
        d = ev["label"][keep] - transform["label_stats"]["mean"]
        y_var = exact_sum(d * d)
    sample_id = _ids(ev, part, plan)
    out: dict[str, Any] = {"keep": int(keep.sum()), "var": var, "y_var": y_var, "rows": [], "rejects": [], "stats": []}
    reason, detail, split = ev["reason"], ev["detail"], ev["split"]
    for s in range(len(SPLITS)):
        mine = (split == s) | ((split < 0) if s == 0 else False)
        kept = np.flatnonzero(mine & (reason == ""))
        bad = np.flatnonzero(mine & (reason != ""))
        out["rows"].append(len(kept))
        out["rejects"].append([{"sample_id": int(sample_id[i]), "reason": str(reason[i]), "detail": str(detail[i])}
                               for i in bad])
        out["stats"].append(split_stats(ev["cols"], transform, kept))
    return out


def ids_part(part: Part, plan: dict[str, Any]) -> np.ndarray:
    """The part's ids, sorted (only when the parts' id ranges overlap: a global distinctness check)."""
    ev = {"inputs": _inputs(part, plan)}
    return np.sort(_ids(ev, part, plan))


def numeric_names(plan: dict[str, Any]) -> list[str]:
    return [c for c, k in plan["kinds"].items() if k == "numeric"]
