"""Text stage functions and job building (the ``text`` kind and its ``sms-spam`` preset kind).

``plan_splits`` plans the splits with the passes of ``shardtrain.stages.text_plan`` (the
driver merges block summaries; the shard tasks read the raw blocks): the labelled file is
cut into the splits no file was given for (stratified, seeded), the label vocabulary is
fitted on the training split (or taken from ``classes``) and applied to every split, and
each reject (reader or vocabulary) is counted on the split its row belongs to. Each shard
task of ``prepare`` hashes word and character n-grams into sparse ``x_ids``/``x_weights``
columns (weighted by an idf fitted on the training split when ``prepare.text.idf``);
``augment`` takes the planned training rows and writes each original followed by its EDA (or
nlpaug) copies, then hashes them the same way; ``predict_job`` re-reads a new file
with the run's layout and hashing options.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from shardtrain.core.labels import LabelVocab
from shardtrain.readers.text import SPLITS, TextOptions, TextRows
from shardtrain.shards import storage
from shardtrain.stages.images import chain
from shardtrain.stages.runner import SplitJob

if TYPE_CHECKING:
    from shardtrain.augment.text import TextAugmentConfig
    from shardtrain.features.text import TextFeatureConfig
    from shardtrain.stages.context import StageConfig as Config
    from shardtrain.stages.text_plan import TextPlan


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


def plan_splits(cfg: Config, files: dict[str, storage.Location], options: TextOptions, executor: str) -> TextPlan:
    """Plan the splits of the files (``files["train"]`` is the labelled file) with the planned passes
    of ``shardtrain.stages.text_plan``: the driver holds summaries, the tasks read the blocks."""
    from shardtrain.stages.text_plan import plan_text

    given = set(files) - {"train"}
    layouts = {role: options.layout(location) for role, location in files.items()}
    return plan_text(files, layouts, split_fractions(options.split, given), output_splits(options.split, given),
                     cfg.seed, options.classes, cfg.prepare.text, cfg.prepare.block_bytes,
                     cfg.prepare.rows_per_shard, executor)


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


def features_ctx(feat: TextFeatureConfig, plan: TextPlan,
                 transform: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The hashing step's ctx and the transform with what was fitted on the training split (the idf)."""
    from shardtrain.features.text import encode_idf

    if not feat.idf:
        return {"cfg": feat, "idf": None}, transform
    idf = plan.idf()
    return {"cfg": feat, "idf": idf}, dict(transform, idf=encode_idf(idf))


def prepare_jobs(cfg: Config, plan: TextPlan, transform: dict[str, Any]) -> list[SplitJob]:
    """One job per split: text -> hashed n-grams, with that split's rejects."""
    from shardtrain.features.text import weighted_ngrams

    ctx, transform = features_ctx(cfg.prepare.text, plan, transform)
    desc = describe(cfg.prepare.text, plan.vocab, transform, plan.extra)
    return [SplitJob(split, source, weighted_ngrams, ctx, describe=desc, pre_rejects=plan.rejects[split])
            for split, source in plan.sources.items()]


def augment_step(batch: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Stage function: each row followed by its augmented copies (the augmenter is cached per process)."""
    from shardtrain.augment.text import augment_text

    return augment_text(batch, ctx["cfg"], ctx["seed"], None, ctx["copies"])


def augment_jobs(cfg: Config, plan: TextPlan, transform: dict[str, Any],
                 text_cfg: TextAugmentConfig) -> list[SplitJob]:
    """The training split -> originals + copies -> hashed n-grams (``text_cfg`` has its synonyms resolved).

    The source is the planned training split (its :class:`Parts`: the shard tasks read the
    raw blocks), not the prepared shards: those hold the hashed n-grams, not the text.
    """
    from shardtrain.features.text import weighted_ngrams

    ctx, transform = features_ctx(cfg.prepare.text, plan, transform)   # fitted on the originals, as in prepare
    steps = [(augment_step, {"cfg": text_cfg, "seed": cfg.seed, "copies": cfg.augment.copies}),
             (weighted_ngrams, ctx)]
    extra = dict(plan.extra, copies=cfg.augment.copies, augment=dataclasses.asdict(cfg.augment.text))
    desc = describe(cfg.prepare.text, plan.vocab, transform, extra)
    return [SplitJob("train", plan.sources["train"], chain, {"steps": steps}, describe=desc)]


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
            "extra": {"files": {"predict": storage.basename(rows.path)}, "has_labels": rows.has_labels}}
    return SplitJob("predict", source, weighted_ngrams, {"cfg": feat, "idf": idf}, describe=desc,
                    pre_rejects=_reject_records(rows, np.arange(len(cols["text"]))))
