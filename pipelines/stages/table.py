"""Table stage: split, reject, fit the transform on the training split, and encode every split.

The driver reads the whole table with pyarrow (``shardtrain.readers.table``), assigns the
split, finds the rejected rows (bad split value, empty / unknown / non-numeric label,
non-numeric cell, a missing cell under ``missing: reject``) and fits the transform on the
training split's kept rows only: per numeric column its median (imputation), mean and
std (standardisation, std 0 -> 1) and whether it gets a missing indicator; per
categorical column its vocabulary (most frequent first, capped by ``max_categories``,
rarer than ``min_frequency`` dropped) plus ``<other>`` and, under impute, ``<missing>``.
The fitted state is a plain dict stored in every split's index as ``transform``.

Each shard task then runs :func:`encode` (a pure batch function, the fitted transform as
its ``ctx``) over the raw parsed cells, so the local and the Ray executors write the same
bytes and ``predict`` re-applies the very same function to new files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shardtrain.core.errors import ShardtrainError
from shardtrain.core.labels import EMPTY_LABEL, UNKNOWN_LABEL, LabelVocab
from shardtrain.readers.table import (Inputs, TableOptions, categories, check_columns, detect_kind, numbers,
                                      read_inputs, required_columns)
from shardtrain.readers.text import stratified_split
from shardtrain.stages.runner import SplitJob

SPLITS = ("train", "val", "test")
SPLIT_VALUES = {"train": 0, "val": 1, "validation": 1, "valid": 1, "test": 2}
OTHER, MISSING = "<other>", "<missing>"


# --- the pure transform (prepare and predict) ---------------------------------------------

def _numeric(values: np.ndarray, spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(standardised float64 (B,), missing (B,) bool) of one numeric column under its fitted ``spec``."""
    v = np.array(values, dtype=np.float64)  # a copy: the source column stays as read
    if spec["log1p"]:
        np.copysign(np.log1p(np.abs(v)), v, out=v)
    miss = np.isnan(v)
    v[miss] = spec["median"]
    return (v - spec["mean"]) / spec["std"], miss


def encode(batch: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Stage function: raw cells -> ``x`` float32 (B, F) and the encoded ``label``, under the fitted transform.

    ``batch`` holds ``sample_id``, ``num`` (B, n_numeric) float64 (NaN = missing), one
    ``cat:<column>`` object array per categorical column (``""`` = missing) and, when the
    input has labels, ``label`` (class-name cells, or float64 for regression). Layout of
    ``x``: the standardised numerics, their missing indicators, then one one-hot block per
    categorical column (``<other>`` for values outside the vocabulary).
    """
    n = len(batch["sample_id"])
    x = np.zeros((n, ctx["dim"]), dtype=np.float32)
    ind = len(ctx["numeric"])
    for j, spec in enumerate(ctx["numeric"]):
        x[:, j], miss = _numeric(batch["num"][:, j], spec)
        if spec["indicator"]:
            x[:, ind] = miss
            ind += 1
    offset = ind
    for spec in ctx["categorical"]:
        cells = batch["cat:" + spec["name"]]
        values = spec["values"]
        idx = pc.index_in(pa.array(list(cells), pa.string()), value_set=pa.array(values, pa.string()))
        code = idx.fill_null(values.index(OTHER)).to_numpy(zero_copy_only=False).astype(np.int64)
        if MISSING in values:
            code[np.asarray(cells == "", dtype=bool)] = values.index(MISSING)
        x[np.arange(n), offset + code] = 1.0
        offset += len(values)
    out: dict[str, Any] = {"sample_id": np.asarray(batch["sample_id"], dtype=np.int64), "x": x}
    if "label" in batch:
        if ctx["task"] == "regression":
            out["label"] = np.asarray(batch["label"], dtype=np.float32)
        else:
            out["label"] = LabelVocab(tuple(ctx["classes"])).encode(batch["label"])[0]  # unknown -> -1
    return out


# --- reading and parsing ----------------------------------------------------------------

def merge(parts: list[Inputs]) -> Inputs:
    """One ``Inputs`` from several (the train, val and test files), columns of the first."""
    first = parts[0]
    tables, files, index, rows = [first.table], list(first.files), [first.file_index], [first.row]
    for p in parts[1:]:
        missing = [c for c in first.table.column_names if c not in p.table.column_names]
        if missing:
            raise ShardtrainError(f"{p.files[0]}: no column '{missing[0]}' (the training input has it)")
        tables.append(p.table.select(first.table.column_names))
        index.append(p.file_index + len(files))
        files += p.files
        rows.append(p.row)
    try:
        table = pa.concat_tables(tables, promote_options="permissive").combine_chunks()
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise ShardtrainError(f"{parts[1].files[0]}: column types differ from the training input's "
                              f"({str(e).splitlines()[0]})") from e
    return Inputs(table, files, np.concatenate(index), np.concatenate(rows))


def infer_task(col: pa.Array, opts: TableOptions) -> tuple[str, str]:
    """(task, why): the ``task`` option, else classification for text/bool labels and for integer
    labels with at most ``max_classes`` distinct values, else regression."""
    if opts.task:
        return opts.task, "option"
    if opts.classes is not None:
        return "classification", "classes option"
    values, bad = numbers(col, opts.label) if detect_kind(col, opts.label) == "numeric" else (None, None)
    if values is None:
        return "classification", "label is text or bool"
    seen = values[~np.isnan(values)]
    if seen.size and np.all(seen == np.round(seen)) and np.unique(seen).size <= opts.max_classes:
        return "classification", f"integer label with <= {opts.max_classes} distinct values"
    return "regression", "numeric label"


def _feature_columns(inputs: Inputs, opts: TableOptions) -> list[str]:
    """Every column that becomes features, in file order (declared, or detected later)."""
    skip = {opts.label, opts.split_col, opts.id_col, *opts.exclude} - {None}
    return [c for c in inputs.table.column_names if c not in skip]


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


# --- fitting ------------------------------------------------------------------------------

def fit(cols: dict[str, Any], kinds: dict[str, str], keep: np.ndarray, opts: TableOptions) -> dict[str, Any]:
    """The transform fitted on the training rows ``keep`` (bool (N,)): statistics, vocabularies, names."""
    numeric_specs, names, indicators = [], [], []
    numeric = [c for c, k in kinds.items() if k == "numeric"]
    for j, name in enumerate(numeric):
        spec = {"name": name, "log1p": name in opts.log1p, "median": 0.0, "mean": 0.0, "std": 1.0}
        v = cols["num"][keep, j].copy()
        if spec["log1p"]:
            np.copysign(np.log1p(np.abs(v)), v, out=v)
        seen = v[~np.isnan(v)]
        spec["median"] = float(np.median(seen)) if seen.size else 0.0
        imputed = np.where(np.isnan(v), spec["median"], v)
        if imputed.size:
            std = float(imputed.std())
            spec["mean"], spec["std"] = float(imputed.mean()), (std if std > 1e-12 else 1.0)
        spec["indicator"] = bool(opts.missing == "impute" and seen.size < v.size)
        numeric_specs.append(spec)
        names.append(("log1p_" if spec["log1p"] else "") + name)
        if spec["indicator"]:
            indicators.append(f"{name}:missing")
    names += indicators
    cat_specs = []
    for name in (c for c, k in kinds.items() if k == "categorical"):
        cells = cols["cat:" + name][keep]
        uniq, counts = np.unique(cells[cells != ""].astype(str), return_counts=True)
        order = sorted(zip(uniq.tolist(), counts.tolist()), key=lambda vc: (-vc[1], vc[0]))
        values = [v for v, c in order if c >= opts.min_frequency][: opts.max_categories]
        values += [OTHER] + ([MISSING] if opts.missing == "impute" else [])
        cat_specs.append({"name": name, "values": values, "train_distinct": len(order)})
        names += [f"{name}={v}" for v in values]
    return {"numeric": numeric_specs, "categorical": cat_specs, "feature_names": names, "dim": len(names),
            "columns": kinds, "missing": opts.missing}


def _describe(transform: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Index metadata shared by every split: features, labels, the fitted transform."""
    names = transform["feature_names"]
    feature = {"kind": "dense", "dtype": "float32", "shape": [len(names)], "dim": len(names),
               "scale": 1.0, "offset": 0.0, "names": names}
    if transform["task"] == "regression":
        # The target's training mean/std: the model fits the label in standard units.
        label = {"classes": None, **transform.get("label_stats", {})}
    else:
        label = {"classes": list(transform["classes"]), "classes_from": transform["classes_from"]}
    return {"features": {"x": feature}, "labels": {"label": label}, "transform": transform, "extra": extra}


def _source(cols: dict[str, Any], rows: np.ndarray, sample_id: np.ndarray, label: Any) -> dict[str, Any]:
    """The raw columns of ``rows`` as one split job's source."""
    src = {"sample_id": sample_id[rows]}
    src.update({k: v[rows] for k, v in cols.items()})
    if label is not None:
        src["label"] = label[rows]
    return src


def _sample_ids(inputs: Inputs, id_col: str | None) -> np.ndarray:
    """``id_col`` values (distinct integers) when set, else the 0-based row over the concatenated input."""
    n = inputs.table.num_rows
    if not id_col or id_col not in inputs.table.column_names:
        return np.arange(n, dtype=np.int64)
    values, bad = numbers(inputs.table.column(id_col), id_col)
    if bad.any() or np.isnan(values).any() or np.any(values != np.round(values)):
        i = int(np.flatnonzero(bad | np.isnan(values) | (values != np.round(values)))[0])
        raise ShardtrainError(f"{inputs.where(i)}: column '{id_col}' (dataset.options.id_col) must hold "
                              f"integers, got {inputs.table.column(id_col)[i].as_py()!r}")
    ids = values.astype(np.int64)
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise ShardtrainError(f"column '{id_col}' (dataset.options.id_col): value {int(uniq[counts > 1][0])} "
                              f"occurs {int(counts.max())} times; ids must be distinct")
    return ids


# --- prepare ------------------------------------------------------------------------------

def _assign_splits(inputs: Inputs, role: np.ndarray, strata: np.ndarray, opts: TableOptions, seed: int,
                   reason: np.ndarray, detail: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Split index per row (int8, -1 = none) and the split rule recorded in the index."""
    split = np.where(role > 0, role, -1).astype(np.int8)
    main = np.flatnonzero(role == 0)
    if opts.split_col:
        cells = categories(inputs.table.column(opts.split_col), opts.split_col)
        for i in main.tolist():
            split[i] = SPLIT_VALUES.get(cells[i].lower(), -1)
        bad = main[split[main] < 0]
        _reject(reason, detail, bad, "bad_split",
                [f"{inputs.where(i)} column '{opts.split_col}': value {cells[i]!r} (expected train, val, "
                 f"validation or test)" for i in bad])
        return split, {"kind": "column", "column": opts.split_col}
    s0, s1, s2 = opts.split
    if opts.val_path and opts.test_path:
        split[main] = 0
        return split, {"kind": "files", "val_path": opts.val_path, "test_path": opts.test_path}
    if opts.test_path:
        fractions, rule = (s0 / (s0 + s1), s1 / (s0 + s1), 0.0), {"kind": "files+fractions", "test_path": opts.test_path}
    elif opts.val_path:
        fractions, rule = (s0 / (s0 + s2), 0.0, s2 / (s0 + s2)), {"kind": "files+fractions", "val_path": opts.val_path}
    else:
        fractions, rule = (s0, s1, s2), {"kind": "fractions"}
    split[main] = stratified_split(strata[main], fractions, seed)
    rule.update({"fractions": [float(f) for f in fractions], "seed": seed,
                 "stratified_by": "label" if strata.max(initial=0) > 0 else "none (one stratum)"})
    return split, rule


def _labels(inputs: Inputs, lab: pa.Array, task: str, opts: TableOptions) -> tuple[Any, np.ndarray, np.ndarray]:
    """(label cells or float64 values, strata for the split (-1 = no label), bad (N,): non-numeric regression label)."""
    if task == "regression":
        y, bad = numbers(lab, opts.label)
        return y, np.where(np.isnan(y), -1, 0), bad
    label = categories(lab, opts.label)
    _, codes = np.unique(label, return_inverse=True)  # "" sorts first: shift so it becomes -1
    strata = np.where(label == "", -1, codes - (1 if (label == "").any() else 0)).astype(np.int64)
    return label, strata, np.zeros(len(label), dtype=bool)


def _reject_labels(inputs: Inputs, lab: pa.Array, label: Any, bad: np.ndarray, opts: TableOptions,
                   reason: np.ndarray, detail: np.ndarray) -> None:
    """``non_numeric`` (regression) and ``empty_label`` rejects."""
    rows = np.flatnonzero(bad)
    _reject(reason, detail, rows, "non_numeric",
            [f"{inputs.where(i)} column '{opts.label}': value {_cell_text(lab, i)!r}" for i in rows])
    empty = (np.isnan(label) & ~bad) if label.dtype.kind == "f" else (label == "")
    rows = np.flatnonzero(empty)
    _reject(reason, detail, rows, EMPTY_LABEL, [f"{inputs.where(i)} column '{opts.label}': empty" for i in rows])


def _kinds(inputs: Inputs, opts: TableOptions, train_rows: np.ndarray) -> dict[str, str]:
    """Feature column -> ``numeric`` | ``categorical``: declared, else detected on the training rows."""
    kinds = {}
    for c in _feature_columns(inputs, opts):
        if c in opts.numeric or c in opts.log1p:
            kinds[c] = "numeric"
        elif c in opts.categorical:
            kinds[c] = "categorical"
        else:
            kinds[c] = detect_kind(inputs.table.column(c).filter(pa.array(train_rows)), c)
    if not kinds:
        raise ShardtrainError(f"{inputs.files[0]}: no feature column left (label '{opts.label}', "
                              f"exclude {list(opts.exclude)})")
    return kinds


def prepare_jobs(opts: TableOptions, roles: dict[str, tuple[list[Path], str]], seed: int) -> list[SplitJob]:
    """Read every input, split, reject, fit on train and build one ``encode`` job per split."""
    parts = [read_inputs(files, fmt, opts) for files, fmt in roles.values()]
    role_code = {"path": 0, "val_path": 1, "test_path": 2}
    role = np.concatenate([np.full(p.table.num_rows, role_code[r], np.int8) for r, p in zip(roles, parts)])
    for p, r in zip(parts, roles):  # the plan checked every file's header; this checks what was read
        check_columns(p.files[0], p.table.column_names, required_columns(opts, r))
    inputs = merge(parts)
    n = inputs.table.num_rows
    if n == 0:
        raise ShardtrainError(f"{inputs.files[0]}: no data rows")
    reason, detail = np.full(n, "", dtype=object), np.full(n, "", dtype=object)
    lab = inputs.table.column(opts.label).combine_chunks()
    task_rows = np.flatnonzero(role == 0)
    if opts.split_col:  # infer from the rows the split column calls train
        cells = categories(inputs.table.column(opts.split_col), opts.split_col)[task_rows]
        task_rows = task_rows[np.array([SPLIT_VALUES.get(c.lower()) == 0 for c in cells], dtype=bool)]
    task, why = infer_task(lab.take(pa.array(task_rows)), opts)
    label, strata, bad = _labels(inputs, lab, task, opts)
    split, rule = _assign_splits(inputs, role, strata, opts, seed, reason, detail)
    _reject_labels(inputs, lab, label, bad, opts, reason, detail)
    kinds = _kinds(inputs, opts, split == 0)
    cols = parse_features(inputs, kinds, opts, reason, detail, opts.missing == "reject")
    classes: dict[str, Any] = {}
    if task == "classification":  # the vocabulary of the kept training rows, applied to every split
        vocab = LabelVocab.fit(label[(split == 0) & (reason == "")], opts.classes)
        rows = np.flatnonzero(vocab.encode(label)[1] == UNKNOWN_LABEL)
        _reject(reason, detail, rows, UNKNOWN_LABEL, [f"{inputs.where(i)}: {vocab.detail(label[i])}" for i in rows])
        classes = {"classes": list(vocab.classes), "classes_from": vocab.source}
    keep = (split == 0) & (reason == "")
    if not keep.any():
        raise ShardtrainError(f"{inputs.files[0]}: no training row left after rejects")
    transform = fit(cols, kinds, keep, opts)
    transform.update({"kind": "table", "task": task, "task_from": why, "label": opts.label,
                      "id_col": opts.id_col, **classes})
    if task == "regression":  # the target's training scale, for a model that wants to start there
        transform["label_stats"] = {"mean": float(label[keep].mean()), "std": float(label[keep].std())}
    extra = {"split_rule": rule, "columns": kinds, "task": task, "task_from": why,
             "inputs": {r: [f.name for f in files] for r, (files, _) in roles.items()}}
    return _split_jobs(cols, transform, extra, split, reason, detail, _sample_ids(inputs, opts.id_col), label)


def _split_jobs(cols: dict[str, Any], transform: dict[str, Any], extra: dict[str, Any], split: np.ndarray,
                reason: np.ndarray, detail: np.ndarray, sample_id: np.ndarray, label: Any) -> list[SplitJob]:
    """One ``encode`` job per split over its kept rows; rows without a split count as train rejects."""
    jobs = []
    for s, name in enumerate(SPLITS):
        mine = (split == s) | ((split < 0) if s == 0 else False)
        kept = np.flatnonzero(mine & (reason == ""))
        bad = np.flatnonzero(mine & (reason != ""))
        rejects = [{"sample_id": int(sample_id[i]), "reason": str(reason[i]), "detail": str(detail[i])} for i in bad]
        desc = _describe(transform, dict(extra, **_split_stats(cols, transform, kept)))
        jobs.append(SplitJob(name, _source(cols, kept, sample_id, label), encode, transform, describe=desc,
                             pre_rejects=rejects))
    return jobs


def _split_stats(cols: dict[str, Any], transform: dict[str, Any], rows: np.ndarray) -> dict[str, Any]:
    """How many cells of a split were imputed, and how many categories fell into ``<other>``."""
    imputed = {spec["name"]: int(np.isnan(cols["num"][rows, j]).sum()) for j, spec in enumerate(transform["numeric"])}
    imputed.update({spec["name"]: int((cols["cat:" + spec["name"]][rows] == "").sum())
                    for spec in transform["categorical"] if MISSING in spec["values"]})
    other = {}
    for spec in transform["categorical"]:
        cells = cols["cat:" + spec["name"]][rows]
        known = set(spec["values"]) - {OTHER, MISSING}
        other[spec["name"]] = int(sum(1 for c in cells.tolist() if c and c not in known))
    return {"imputed": {k: v for k, v in imputed.items() if v}, "other": {k: v for k, v in other.items() if v}}


# --- predict ------------------------------------------------------------------------------

def predict_job(opts: TableOptions, transform: dict[str, Any], files: list[Path], fmt: str) -> SplitJob:
    """New rows -> the run's features under its fitted ``transform`` (nothing refitted), split ``predict``.

    The label column is optional; when present it is encoded with the fitted classes (a
    class outside them, or an empty label, becomes -1, not a reject). Non-numeric cells
    (and missing ones when the run used ``missing: reject``) are rejects.
    """
    inputs = read_inputs(files, fmt, opts)
    kinds = dict(transform["columns"])
    check_columns(files[0], inputs.table.column_names, {c: "path" for c in kinds})
    n = inputs.table.num_rows
    reason, detail = np.full(n, "", dtype=object), np.full(n, "", dtype=object)
    cols = parse_features(inputs, kinds, opts, reason, detail, transform["missing"] == "reject")
    label = None
    if transform["label"] in inputs.table.column_names:
        lab = inputs.table.column(transform["label"]).combine_chunks()
        label = numbers(lab, transform["label"])[0] if transform["task"] == "regression" else categories(
            lab, transform["label"])
    sample_id = _sample_ids(inputs, transform.get("id_col"))
    kept = np.flatnonzero(reason == "")
    bad = np.flatnonzero(reason != "")
    rejects = [{"sample_id": int(sample_id[i]), "reason": str(reason[i]), "detail": str(detail[i])} for i in bad]
    extra = {"inputs": [f.name for f in files], **_split_stats(cols, transform, kept)}
    return SplitJob("predict", _source(cols, kept, sample_id, label), encode, transform,
                    describe=_describe(transform, extra), pre_rejects=rejects)
