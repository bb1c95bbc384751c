"""Text stage functions and job building (the SMS Spam Collection, or any delimited text/label file).

``prepare`` gets the whole table from the dataset class (bad records become rejects,
the stratified seeded train/val/test split assigned), and each shard task hashes word
and character n-grams into sparse ``x_ids``/``x_weights`` columns (shard format v2).
``augment`` takes the training rows and writes each original followed by its EDA (or
nlpaug) copies, then hashes them the same way.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from shardtrain.stages.images import chain
from shardtrain.stages.runner import SplitJob

if TYPE_CHECKING:
    from shardtrain.augment.text import TextAugmentConfig
    from shardtrain.stages.context import StageConfig as Config
    from shardtrain.readers.text import TextTable


def _describe(cfg: Config, table: TextTable, fractions: tuple[float, ...]) -> dict[str, Any]:
    """Index metadata: sparse feature description, classes, and how the split was made."""
    feat = cfg.prepare.text
    return {
        "features": {"x": {"kind": "sparse", "dim": 2 ** feat.bits, "dtype": "float32",
                           "extractor": "hashed_ngrams", "options": dataclasses.asdict(feat)}},
        "labels": {"label": {"classes": list(table.classes)}},
        "extra": {"split_rule": {"kind": "stratified", "seed": cfg.seed, "fractions": list(fractions)},
                  "split_counts": table.split_counts},
    }


def _split_source(table: TextTable, split_index: int) -> dict[str, Any]:
    """The rows of one split (rejected rows never belong to a split)."""
    cols = table.columns
    keep = np.flatnonzero(cols["split"] == split_index)
    return {"sample_id": cols["sample_id"][keep], "text": cols["text"][keep], "label": cols["label"][keep]}


def _rejects(table: TextTable) -> list[dict[str, Any]]:
    """Reader rejects (empty text, bad UTF-8, unknown labels) as reject records."""
    cols = table.columns
    bad = np.flatnonzero(cols["reject_reason"] != "")
    return [{"sample_id": int(cols["sample_id"][i]), "reason": str(cols["reject_reason"][i]), "detail": ""}
            for i in bad]


def prepare_jobs(cfg: Config, table: TextTable, fractions: tuple[float, ...]) -> list[SplitJob]:
    """One job per split: text -> hashed n-grams. Reader rejects are counted on the train split."""
    from shardtrain.features.text import hashed_ngrams

    describe = _describe(cfg, table, fractions)
    jobs = []
    for i, split in enumerate(("train", "val", "test")):
        pre = _rejects(table) if split == "train" else []
        jobs.append(SplitJob(split, _split_source(table, i), hashed_ngrams, cfg.prepare.text, describe=describe,
                             pre_rejects=pre))
    return jobs


def augment_step(batch: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Stage function: each row followed by its augmented copies (the augmenter is cached per process)."""
    from shardtrain.augment.text import augment_text

    return augment_text(batch, ctx["cfg"], ctx["seed"], None, ctx["copies"])


def augment_jobs(cfg: Config, table: TextTable, fractions: tuple[float, ...],
                 text_cfg: TextAugmentConfig) -> list[SplitJob]:
    """The training split -> originals + copies -> hashed n-grams (``text_cfg`` has its synonyms resolved)."""
    from shardtrain.features.text import hashed_ngrams

    steps = [(augment_step, {"cfg": text_cfg, "seed": cfg.seed, "copies": cfg.augment.copies}),
             (hashed_ngrams, cfg.prepare.text)]
    describe = _describe(cfg, table, fractions)
    describe["extra"]["copies"] = cfg.augment.copies
    describe["extra"]["augment"] = dataclasses.asdict(cfg.augment.text)
    return [SplitJob("train", _split_source(table, 0), chain, {"steps": steps}, describe=describe)]
