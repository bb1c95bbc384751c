"""Text stage functions and job building (the ``text`` kind and its ``sms-spam`` preset kind).

``build_splits`` turns the files the reader read into split sources: the labelled file is
cut into the splits no file was given for (stratified, seeded), the label vocabulary is
fitted on the training split (or taken from ``classes``) and applied to every split, and
each reject (reader or vocabulary) is counted on the split its row belongs to. Each shard
task of ``prepare`` hashes word and character n-grams into sparse ``x_ids``/``x_weights``
columns (weighted by an idf fitted on the training split when ``prepare.text.idf``);
``augment`` takes the training rows and writes each original followed by its EDA (or
nlpaug) copies, then hashes them the same way; ``predict_job`` re-reads a new file
with the run's layout and hashing options.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from shardtrain.core.labels import LabelVocab
from shardtrain.readers.text import SPLITS, TextRows, stratified_split, strata
from shardtrain.stages.images import chain
from shardtrain.stages.runner import SplitJob

if TYPE_CHECKING:
    from shardtrain.augment.text import TextAugmentConfig
    from shardtrain.features.text import TextFeatureConfig
    from shardtrain.stages.context import StageConfig as Config


@dataclass
class TextSplits:
    """Per split: the source rows (``sample_id``, ``text``, ``label``) and the rejects; the vocabulary."""

    sources: dict[str, dict[str, np.ndarray]]
    rejects: dict[str, list[dict[str, Any]]]
    vocab: LabelVocab
    extra: dict[str, Any] = field(default_factory=dict)


def split_fractions(fractions: tuple[float, float, float], given: set[str]) -> tuple[float, float, float]:
    """The fractions of the labelled file: 0 for a split given as a file, the others renormalised."""
    kept = [0.0 if s in given else float(f) for s, f in zip(SPLITS, fractions)]
    total = sum(kept)
    return tuple(f / total for f in kept)  # type: ignore[return-value]  # train > 0 (checked at load)


def output_splits(fractions: tuple[float, float, float], given: set[str]) -> tuple[str, ...]:
    """The splits written: train, and val/test when given as a file or with a fraction > 0."""
    return tuple(s for s, f in zip(SPLITS, fractions) if s == "train" or s in given or f > 0)


def _reject_records(rows: TextRows, picked: np.ndarray) -> list[dict[str, Any]]:
    """Reader rejects among rows ``picked`` (indices) as reject records."""
    cols = rows.columns
    return [{"sample_id": int(cols["sample_id"][i]), "reason": str(cols["reject_reason"][i]),
             "detail": str(cols["reject_detail"][i])} for i in picked.tolist() if cols["reject_reason"][i]]


def build_splits(files: dict[str, TextRows], fractions: tuple[float, float, float], seed: int,
                 classes: tuple[str, ...] | None) -> TextSplits:
    """Split sources and rejects from the read files (``files["train"]`` is the labelled file).

    Rows of the labelled file go to the splits not given as files, by ``fractions``
    (stratified by label cell, seeded); the vocabulary is fitted on the training split's
    kept rows unless ``classes`` is set; a label outside it (``unknown_label``) or an empty
    label (``empty_label``) rejects the row in whatever split it is.
    """
    main = files["train"]
    given = {s for s in files if s != "train"}
    fracs = split_fractions(fractions, given)
    assigned = stratified_split(strata(main), fracs, seed)                     # (N,) int8
    parts = {s: (main, np.flatnonzero(assigned == i)) for i, s in enumerate(SPLITS) if s not in given}
    parts.update({s: (rows, np.arange(len(rows.columns["text"]))) for s, rows in files.items() if s != "train"})
    train_rows, train_idx = parts["train"]
    train_ok = train_idx[train_rows.ok[train_idx]]
    vocab = LabelVocab.fit(train_rows.columns["label"][train_ok], classes)
    sources, rejects, counts = {}, {}, {}
    for split in output_splits(fractions, given):
        rows, idx = parts[split]
        cols = rows.columns
        rejects[split] = _reject_records(rows, idx)
        ok = idx[rows.ok[idx]]
        labels, reasons = vocab.encode(cols["label"][ok])
        for i, reason in zip(ok[reasons != ""].tolist(), reasons[reasons != ""].tolist()):
            rejects[split].append({"sample_id": int(cols["sample_id"][i]), "reason": reason,
                                   "detail": f"{rows.path.name}:{int(cols['line'][i])}: "
                                             f"{vocab.detail(cols['label'][i])}"})
        keep = reasons == ""
        sources[split] = {"sample_id": cols["sample_id"][ok[keep]], "text": cols["text"][ok[keep]],
                          "label": labels[keep]}
        counts[split] = {c: int((labels[keep] == k).sum()) for k, c in enumerate(vocab.classes)}
    extra = {"split_rule": {"kind": "stratified", "seed": seed, "fractions": list(fracs)},
             "split_counts": counts,
             "files": {s: rows.path.name for s, rows in files.items()}}
    return TextSplits(sources, rejects, vocab, extra)


def describe(feat: TextFeatureConfig, vocab: LabelVocab, transform: dict[str, Any],
             extra: dict[str, Any]) -> dict[str, Any]:
    """Index metadata: the sparse feature, the label vocabulary, what predict re-applies, the split."""
    return {
        "features": {"x": {"kind": "sparse", "dim": 2 ** feat.bits, "dtype": "float32",
                           "extractor": "hashed_ngrams", "options": dataclasses.asdict(feat)}},
        "labels": {"label": vocab.describe()},
        "transform": transform,
        "extra": extra,
    }


def features_ctx(feat: TextFeatureConfig, splits: TextSplits,
                 transform: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The hashing step's ctx and the transform with what was fitted on the training split (the idf)."""
    from shardtrain.features.text import encode_idf, fit_idf

    if not feat.idf:
        return {"cfg": feat, "idf": None}, transform
    idf = fit_idf(list(splits.sources["train"]["text"]), feat)
    return {"cfg": feat, "idf": idf}, dict(transform, idf=encode_idf(idf))


def prepare_jobs(cfg: Config, splits: TextSplits, transform: dict[str, Any]) -> list[SplitJob]:
    """One job per split: text -> hashed n-grams, with that split's rejects."""
    from shardtrain.features.text import weighted_ngrams

    ctx, transform = features_ctx(cfg.prepare.text, splits, transform)
    desc = describe(cfg.prepare.text, splits.vocab, transform, splits.extra)
    return [SplitJob(split, source, weighted_ngrams, ctx, describe=desc, pre_rejects=splits.rejects[split])
            for split, source in splits.sources.items()]


def augment_step(batch: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Stage function: each row followed by its augmented copies (the augmenter is cached per process)."""
    from shardtrain.augment.text import augment_text

    return augment_text(batch, ctx["cfg"], ctx["seed"], None, ctx["copies"])


def augment_jobs(cfg: Config, splits: TextSplits, transform: dict[str, Any],
                 text_cfg: TextAugmentConfig) -> list[SplitJob]:
    """The training split -> originals + copies -> hashed n-grams (``text_cfg`` has its synonyms resolved)."""
    from shardtrain.features.text import weighted_ngrams

    ctx, transform = features_ctx(cfg.prepare.text, splits, transform)   # fitted on the originals, as in prepare
    steps = [(augment_step, {"cfg": text_cfg, "seed": cfg.seed, "copies": cfg.augment.copies}),
             (weighted_ngrams, ctx)]
    extra = dict(splits.extra, copies=cfg.augment.copies, augment=dataclasses.asdict(cfg.augment.text))
    desc = describe(cfg.prepare.text, splits.vocab, transform, extra)
    return [SplitJob("train", splits.sources["train"], chain, {"steps": steps}, describe=desc)]


def predict_job(rows: TextRows, fitted: dict[str, Any], feat: TextFeatureConfig) -> SplitJob:
    """Split ``predict``: the kept rows of ``rows`` hashed with ``feat`` (the run's options).

    The label column is kept when the file has one, encoded with the run's vocabulary; a
    label outside it (or empty) becomes -1, which no metric counts. Reader rejects stay rejects.
    """
    from shardtrain.features.text import decode_idf, weighted_ngrams

    transform = fitted.get("transform") or {}
    idf = decode_idf(transform["idf"], feat.bits) if feat.idf else None
    cols = rows.columns
    ok = np.flatnonzero(rows.ok)
    source = {"sample_id": cols["sample_id"][ok], "text": cols["text"][ok]}
    label_desc = (fitted.get("labels") or {}).get("label") or {}
    if rows.has_labels:
        source["label"], _ = LabelVocab.from_index(label_desc).encode(cols["label"][ok])
    desc = {"features": fitted["features"],
            "labels": {"label": {k: v for k, v in label_desc.items() if k != "counts"}},
            "transform": transform,
            "extra": {"files": {"predict": rows.path.name}, "has_labels": rows.has_labels}}
    return SplitJob("predict", source, weighted_ngrams, {"cfg": feat, "idf": idf}, describe=desc,
                    pre_rejects=_reject_records(rows, np.arange(len(cols["text"]))))
