"""Table stage: split, reject, fit the transform on the training split, and encode every split.

The driver only plans (``shardtrain.stages.table_plan``): it cuts the inputs into parts
(line blocks, Parquet row groups, Arrow record batches) and runs passes over them as
tasks (``shardtrain.stages.mapreduce.map_tasks``, in process or on Ray) that re-read
their part from storage and return small summaries, merged in part order:

1. scan: rows per part (sample ids, ``file:row``), column names and types, what the
   label says about the task, the ``id_col`` ranges;
2. strata (seeded fraction splits): label counts per part, so a task knows each row's
   rank in its class, and with it the split today's ``stratified_split`` gives it;
3. kinds (undeclared columns): numeric-cell counts on the training rows;
4. fit: on the training split's kept rows, per numeric column exact sums and the first
   radix level of its median, per categorical column its value counts, the classes;
5. median passes until every median is exact, then a last pass for the variances, the
   rows each part keeps per split and the rejects.

A row's split is assigned, and rejected rows found, exactly as the in-memory code did
(bad split value, empty / unknown / non-numeric label, non-numeric cell, a missing cell
under ``missing: reject``); the transform is fitted on the training split's kept rows:
per numeric column its median (imputation), mean and std (standardisation, std 0 -> 1)
and whether it gets a missing indicator; per categorical column its vocabulary (most
frequent first, capped by ``max_categories``, rarer than ``min_frequency`` dropped)
plus ``<other>`` and, under impute, ``<missing>``. The fitted state is a plain dict
stored in every split's index as ``transform``.

What the tasks run (reading and judging a part, each pass's summary) is in
``shardtrain.stages.table_plan``; this module is the driver's side and the stage function.
Each split is a ``Parts`` source: the shard tasks ``table_plan.load`` their parts (re-read,
parse, filter to the split's kept rows, in input order) and run :func:`encode` (a pure
batch function, the fitted transform as its ``ctx``), so the local and the Ray executors
write the same bytes and ``predict`` re-applies the very same function to new files.
"""

from __future__ import annotations

import functools
import math
import uuid
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shardtrain.core import exact
from shardtrain.core.errors import ShardtrainError
from shardtrain.core.labels import LabelVocab
from shardtrain.readers.table import (NUMERIC_SHARE, TableOptions, categories, check_columns, column_names, numbers,
                                      read_inputs, required_columns)
from shardtrain.shards import storage
from shardtrain.shards.blocks import BLOCK_BYTES
from shardtrain.stages import table_plan as tp
from shardtrain.stages.mapreduce import map_tasks
from shardtrain.stages.runner import Parts, SplitJob

SPLITS, OTHER, MISSING = tp.SPLITS, tp.OTHER, tp.MISSING
_KEY = "config key 'dataset.options"


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


# --- the driver: plan, run the passes, merge in part order --------------------------------

def _merge_kind(summaries: list[dict[str, Any]], name: str) -> str:
    """``numeric`` or ``categorical`` from the parts' summaries, as ``readers.table.detect_kind`` decides it."""
    classes = {s["class"] for s in summaries} - {"null"}
    if not classes:
        return "categorical"
    if classes == {"number"}:
        return "numeric"
    if "other" in classes:
        t = next(s["type"] for s in summaries if s["class"] == "other")
        raise ShardtrainError(f"column '{name}': type {t} is neither numeric nor text (declare it in "
                              f"{_KEY}.categorical' or {_KEY}.exclude')")
    if "bool" in classes:
        return "categorical"
    present, bad = sum(s["present"] for s in summaries), sum(s["bad"] for s in summaries)
    if present == 0:
        return "categorical"
    return "numeric" if (present - bad) >= NUMERIC_SHARE * present else "categorical"


def _infer_task(summaries: list[dict[str, Any]], opts: TableOptions) -> tuple[str, str]:
    """(task, why): the ``task`` option, else classification for text/bool labels and for integer
    labels with at most ``max_classes`` distinct values, else regression."""
    if opts.task:
        return opts.task, "option"
    if opts.classes is not None:
        return "classification", "classes option"
    if _merge_kind(summaries, opts.label) != "numeric":
        return "classification", "label is text or bool"
    distinct = set().union(*(s["distinct"] for s in summaries))
    if sum(s["seen"] for s in summaries) and all(s["ints"] for s in summaries) and len(distinct) <= opts.max_classes:
        return "classification", f"integer label with <= {opts.max_classes} distinct values"
    return "regression", "numeric label"


def _merge_scans(parts: list[tp.Part], scans: list[dict[str, Any]], plan: dict[str, Any],
                 roles: dict[str, tuple[list[str], str]]) -> list[tp.Part]:
    """Rows and offsets into the parts; names, text columns, type checks, task and id checks into the plan."""
    opts = plan["opts"]
    by_file: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for part, scan in zip(parts, scans):
        by_file.setdefault((part.role, part.file_index), []).append(scan)
    classes: dict[str, set[str]] = {}
    for (role, fi), file_scans in by_file.items():
        location = roles[role][0][fi]
        if roles[role][1] == "jsonl":  # a file's columns: every key of every block, in order of appearance
            plan["names"][(role, fi)] = list(dict.fromkeys(n for s in file_scans for n in s["names"]))
        names = plan["names"][(role, fi)]
        seen = {c: set().union(*(set(s["classes"].get(c, ())) for s in file_scans)) for c in names}
        mixed = frozenset(c for c, k in seen.items() if len(k) > 1)
        if mixed and roles[role][1] == "jsonl":  # values of several types: the file's text, as the whole-file read
            plan["text_cols"][(role, fi)] = mixed
            seen.update({c: {"text"} for c in mixed})
        first = plan["names"][(role, 0)]
        if fi and set(names) != set(first):
            raise ShardtrainError(f"{storage.redact(location)}: columns differ from {storage.basename(roles[role][0][0])} "
                                  f"(missing {sorted(set(first) - set(names))}, extra {sorted(set(names) - set(first))})")
        check_columns(location, names, required_columns(opts, role))
        for c, k in seen.items():
            classes.setdefault(c, set()).update(k)
    columns = plan["names"][("path", 0)]
    for role in roles:
        lacking = [c for c in columns if c not in plan["names"][(role, 0)]]
        if lacking:
            raise ShardtrainError(f"{storage.redact(roles[role][0][0])}: no column '{lacking[0]}' (the training "
                                  f"input has it)")
    clash = next((c for c in columns if len(classes.get(c, set())) > 1), None)
    if clash:
        raise ShardtrainError(f"{storage.redact(roles['path'][0][0])}: the files' column types do not agree "
                              f"(column '{clash}': {' and '.join(sorted(classes[clash]))})")
    plan["columns"] = columns
    out, offset, first_row = [], 0, {}
    for part, scan in zip(parts, scans):
        key = (part.role, part.file_index)
        out.append(part.with_(rows=scan["rows"], first_row=first_row.get(key, 1), offset=offset))
        first_row[key] = first_row.get(key, 1) + scan["rows"]
        offset += scan["rows"]
    if offset == 0:
        raise ShardtrainError(f"{storage.redact(roles['path'][0][0])}: no data rows")
    plan["task"], plan["task_from"] = _infer_task([s["label"] for s in scans if "label" in s], opts)
    if opts.id_col:
        _check_ids(out, scans, plan)
    return out


def _check_ids(parts: list[tp.Part], scans: list[dict[str, Any]], plan: dict[str, Any]) -> None:
    """``id_col`` holds distinct integers: the first bad cell in input order, else duplicates across parts."""
    id_col, ranges = plan["opts"].id_col, []
    for part, scan in zip(parts, scans):
        ids = scan.get("ids")
        if ids is None:
            continue
        if ids["bad"] is not None:
            i, value = ids["bad"]
            raise tp.id_error(f"{storage.basename(part.location)}:{part.first_row + i}", value, id_col)
        if ids["range"]:
            ranges.append(ids["range"])
    dups = [s["ids"]["dup"] for s in scans if s.get("ids") and s["ids"]["dup"]]
    ordered = sorted(ranges)
    overlap = any(b[0] <= a[1] for a, b in zip(ordered, ordered[1:]))
    if overlap:  # ids not sorted by part: compare them all (the one pass that holds every id)
        ids = np.concatenate(map_tasks(tp.ids_part, [p for p in parts if p.rows], plan["executor"], plan))
        uniq, counts = np.unique(ids, return_counts=True)
        dups = [(int(uniq[counts > 1][0]), int(counts.max()))] if (counts > 1).any() else []
    if dups:
        raise ShardtrainError(f"column '{id_col}' (dataset.options.id_col): value {min(d[0] for d in dups)} "
                              f"occurs {max(d[1] for d in dups)} times; ids must be distinct")


def _split_rule(plan: dict[str, Any], parts: list[tp.Part], scans: list[dict[str, Any]]) -> list[tp.Part]:
    """The split rule recorded in the index; for seeded fractions, each part's rank offsets per stratum."""
    opts, seed, executor = plan["opts"], plan["seed"], plan["executor"]
    if opts.split_col:
        plan["rule"] = {"kind": "column", "column": opts.split_col}
        return parts
    s0, s1, s2 = opts.split
    if opts.val_path and opts.test_path:
        plan["rule"] = {"kind": "files", "val_path": opts.val_path, "test_path": opts.test_path}
        return parts
    if opts.test_path:
        fractions, rule = (s0 / (s0 + s1), s1 / (s0 + s1), 0.0), {"kind": "files+fractions", "test_path": opts.test_path}
    elif opts.val_path:
        fractions, rule = (s0 / (s0 + s2), 0.0, s2 / (s0 + s2)), {"kind": "files+fractions", "val_path": opts.val_path}
    else:
        fractions, rule = (s0, s1, s2), {"kind": "fractions"}
    if plan["task"] == "regression":  # one stratum: rows with a numeric label
        codes, main = None, [{0: s.get("label_numbers", 0)} if p.role == "path" else {} for p, s in zip(parts, scans)]
        n_strata = 1 if any(m.get(0) for m in main) else 0
        several = False
    else:
        counted = map_tasks(tp.strata_part, parts, executor, plan)
        codes = sorted(set().union(*(every for every, _ in counted)))
        index = {c: k for k, c in enumerate(codes)}
        main = [{index[c]: n for c, n in m.items()} for _, m in counted]
        n_strata, several = len(codes), len(codes) > 1
    n_k, out = [0] * n_strata, []
    for part, m in zip(parts, main):
        out.append(part.with_(ranks=tuple(n_k)))
        for k, n in m.items():
            n_k[k] += n
    plan.update(codes=codes, n_k=n_k)
    rule.update({"fractions": [float(f) for f in fractions], "seed": seed,
                 "stratified_by": "label" if several else "none (one stratum)"})
    plan["rule"] = rule
    return out


def _kinds(plan: dict[str, Any], parts: list[tp.Part]) -> dict[str, str]:
    """Feature column -> ``numeric`` | ``categorical``: declared, else detected on the training rows."""
    opts = plan["opts"]
    skip = {opts.label, opts.split_col, opts.id_col, *opts.exclude} - {None}
    features = [c for c in plan["columns"] if c not in skip]
    declared = {c: "numeric" if c in opts.numeric or c in opts.log1p else "categorical"
                for c in features if c in opts.numeric or c in opts.log1p or c in opts.categorical}
    undeclared = [c for c in features if c not in declared]
    if not features:
        raise ShardtrainError(f"{storage.redact(parts[0].location)}: no feature column left (label '{opts.label}', "
                              f"exclude {list(opts.exclude)})")
    found = map_tasks(tp.kinds_part, _train_parts(parts), plan["executor"], plan, undeclared) if undeclared else []
    detected = {c: _merge_kind([f[j] for f in found], c) for j, c in enumerate(undeclared)}
    return {c: declared.get(c) or detected[c] for c in features}


def _train_parts(parts: list[tp.Part]) -> list[tp.Part]:
    """The parts that can hold training rows (the main input's, with rows); at least one."""
    return [p for p in parts if p.role == "path" and p.rows] or parts[:1]


def _medians(plan: dict[str, Any], parts: list[tp.Part], fits: list[dict[str, Any]]) -> list[float]:
    """Each numeric column's exact median over its kept training values (``np.median``'s value).

    The middle ranks are found by radix selection on the values' keys: level 0 came with
    the fit pass; each further pass narrows every unsettled target by 16 bits, in part order.
    """
    targets: dict[int, list[list[Any]]] = {}  # column -> [[prefix, level, rank, key or None], ...]
    for j in range(len(tp.numeric_names(plan))):
        n = sum(f["numeric"][j]["seen"] for f in fits)
        if n:
            targets[j] = [[0, 0, r, None] for r in sorted({(n - 1) // 2, n // 2})]

    def step(j: int, t: list[Any], summaries: list[Any]) -> None:
        done, value, rank = tp.select_step(summaries, t[0], t[1], t[2])
        t[:] = [t[0], t[1], rank, value] if done else [value, t[1] + 1, rank, None]

    for j, ts in targets.items():
        for t in ts:
            step(j, t, [f["numeric"][j]["select"] for f in fits])
    train = _train_parts(parts)
    while any(t[3] is None for ts in targets.values() for t in ts):
        request = {j: sorted({(t[0], t[1]) for t in ts if t[3] is None}) for j, ts in targets.items()}
        request = {j: r for j, r in request.items() if r}
        answers = map_tasks(tp.median_part, train, plan["executor"], plan, request)
        for j, wanted in request.items():
            for t in targets[j]:
                if t[3] is None:
                    i = wanted.index((t[0], t[1]))
                    step(j, t, [a[j][i] for a in answers])
    out = []
    for j in range(len(tp.numeric_names(plan))):
        values = [tp.from_key(t[3]) for t in targets.get(j, [])]
        out.append(float(np.mean(np.array(values))) if values else 0.0)
    return out


def _fit(plan: dict[str, Any], parts: list[tp.Part], fits: list[dict[str, Any]]) -> dict[str, Any]:
    """The transform from the fit pass's summaries (std and the label's std come from the last pass)."""
    opts = plan["opts"]
    keep = sum(f["keep"] for f in fits)
    if not keep:
        raise ShardtrainError(f"{storage.redact(parts[0].location)}: no training row left after rejects")
    medians = _medians(plan, parts, fits)
    numeric_specs, names, indicators = [], [], []
    for j, name in enumerate(tp.numeric_names(plan)):
        seen = sum(f["numeric"][j]["seen"] for f in fits)
        total = sum(f["numeric"][j]["sum"] for f in fits) + exact.scaled(medians[j], keep - seen)
        spec = {"name": name, "log1p": name in opts.log1p, "median": medians[j], "mean": exact.exact_mean(total, keep),
                "std": 1.0, "indicator": bool(opts.missing == "impute" and seen < keep)}
        numeric_specs.append(spec)
        names.append(("log1p_" if spec["log1p"] else "") + name)
        if spec["indicator"]:
            indicators.append(f"{name}:missing")
    names += indicators
    cat_specs = []
    for j, name in enumerate(c for c, k in plan["kinds"].items() if k == "categorical"):
        counts: dict[str, int] = {}
        for f in fits:
            for v, c in f["categorical"][j].items():
                counts[v] = counts.get(v, 0) + c
        order = sorted(counts.items(), key=lambda vc: (-vc[1], vc[0]))
        values = [v for v, c in order if c >= opts.min_frequency][: opts.max_categories]
        values += [OTHER] + ([MISSING] if opts.missing == "impute" else [])
        cat_specs.append({"name": name, "values": values, "train_distinct": len(order)})
        names += [f"{name}={v}" for v in values]
    transform = {"numeric": numeric_specs, "categorical": cat_specs, "feature_names": names, "dim": len(names),
                 "columns": plan["kinds"], "missing": opts.missing}
    transform.update({"kind": "table", "task": plan["task"], "task_from": plan["task_from"], "label": opts.label,
                      "id_col": opts.id_col})
    if plan["task"] == "classification":
        if plan.get("classes") is None:
            vocab = LabelVocab.fit(sorted(set().union(*(f["labels"] for f in fits))), opts.classes)
            plan.update(classes=list(vocab.classes), classes_from=vocab.source)
        transform.update(classes=list(plan["classes"]), classes_from=plan["classes_from"])
    else:
        transform["label_stats"] = {"mean": exact.exact_mean(sum(f["y"] for f in fits), keep), "std": 1.0}
    return transform


def _std(total: int, n: int) -> float:
    """``sqrt`` of the correctly rounded mean of the squared deviations (their exact sum is ``total``)."""
    return math.sqrt(float(exact.to_fraction(total) / n))


def prepare_jobs(opts: TableOptions, roles: dict[str, tuple[list[str], str]], seed: int, executor: str = "local",
                 block_bytes: int = BLOCK_BYTES) -> list[SplitJob]:
    """Plan the inputs' parts, run the passes (summaries only), fit on train and build one ``encode`` job per split."""
    parts = tp.plan_parts(roles, block_bytes)
    names = {(role, fi): column_names(f, fmt, opts) for role, (files, fmt) in roles.items()
             for fi, f in enumerate(files) if fmt != "jsonl"}
    plan: dict[str, Any] = {"opts": opts, "seed": seed, "executor": executor, "header": not opts.columns,
                            "names": names, "text_cols": {}}
    scans = map_tasks(tp.scan_part, parts, executor, plan)
    parts = _merge_scans(parts, scans, plan, roles)
    parts = _split_rule(plan, parts, scans)
    plan["kinds"] = _kinds(plan, parts)
    if plan["task"] == "classification" and opts.classes is not None:
        vocab = LabelVocab.fit((), opts.classes)
        plan.update(classes=list(vocab.classes), classes_from=vocab.source)
    fits = map_tasks(tp.fit_part, _train_parts(parts), executor, plan)
    transform = _fit(plan, parts, fits)
    plan["transform"] = transform
    finals = map_tasks(tp.final_part, parts, executor, plan)
    keep = sum(f["keep"] for f in finals)
    for j, spec in enumerate(transform["numeric"]):
        std = _std(sum(f["var"][j] for f in finals), keep)
        spec["std"] = std if std > 1e-12 else 1.0
    if plan["task"] == "regression":
        transform["label_stats"]["std"] = _std(sum(f["y_var"] for f in finals), keep)
    extra = {"split_rule": plan["rule"], "columns": plan["kinds"], "task": plan["task"], "task_from": plan["task_from"],
             "inputs": {r: [storage.basename(f) for f in files] for r, (files, _) in roles.items()}}
    jobs = []
    # The token names this prepare in the shard tasks' cache of their last part (never in an output).
    source_plan = {**{k: v for k, v in plan.items() if k != "executor"}, "token": uuid.uuid4().hex}
    for s, name in enumerate(SPLITS):
        stats = {"imputed": {}, "other": {}}
        for f in finals:
            for what, per_col in f["stats"][s].items():
                for c, n in per_col.items():
                    stats[what][c] = stats[what].get(c, 0) + n
        pieces = [((p, s), f["rows"][s]) for p, f in zip(parts, finals) if f["rows"][s]] or [((parts[0], s), 0)]
        rejects = [r for f in finals for r in f["rejects"][s]]
        desc = _describe(transform, dict(extra, **tp.nonzero(stats)))
        jobs.append(SplitJob(name, Parts(pieces, functools.partial(tp.load, plan=source_plan)), encode, transform,
                             describe=desc, pre_rejects=rejects))
    return jobs


# --- predict ------------------------------------------------------------------------------

def predict_job(opts: TableOptions, transform: dict[str, Any], files: list[str], fmt: str) -> SplitJob:
    """New rows -> the run's features under its fitted ``transform`` (nothing refitted), split ``predict``.

    The files (paths or URIs) are read whole into memory. The label column is optional;
    when present it is encoded with the fitted classes (a class outside them, or an empty
    label, becomes -1, not a reject). Non-numeric cells (and missing ones when the run used
    ``missing: reject``) are rejects.
    """
    inputs = read_inputs(files, fmt, opts)
    kinds = dict(transform["columns"])
    check_columns(files[0], inputs.table.column_names, {c: "path" for c in kinds})
    n = inputs.table.num_rows
    reason, detail = np.full(n, "", dtype=object), np.full(n, "", dtype=object)
    cols = tp.parse_features(inputs, kinds, opts, reason, detail, transform["missing"] == "reject")
    label = None
    if transform["label"] in inputs.table.column_names:
        lab = inputs.table.column(transform["label"]).combine_chunks()
        label = numbers(lab, transform["label"])[0] if transform["task"] == "regression" else categories(
            lab, transform["label"])
    sample_id = tp.sample_ids(inputs, transform.get("id_col"))
    kept = np.flatnonzero(reason == "")
    bad = np.flatnonzero(reason != "")
    rejects = [{"sample_id": int(sample_id[i]), "reason": str(reason[i]), "detail": str(detail[i])} for i in bad]
    extra = {"inputs": [storage.basename(f) for f in files], **tp.nonzero(tp.split_stats(cols, transform, kept))}
    return SplitJob("predict", tp.source_columns(cols, kept, sample_id, label), encode, transform,
                    describe=_describe(transform, extra), pre_rejects=rejects)
