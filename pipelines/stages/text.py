"""Text datasets (the SMS Spam Collection, or any delimited text/label file) as stage jobs.

``prepare`` reads the file once (bad records become rejects), assigns the
stratified seeded train/val/test split, and each shard task hashes word and
character n-grams into sparse ``x_ids``/``x_weights`` columns (shard format v2).
``augment`` re-reads the training rows and writes each original followed by its
EDA (or nlpaug) copies, then hashes them the same way.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from shardtrain.config import Config, build_dataclass
from shardtrain.datasets import file_fingerprint, locate
from shardtrain.core.errors import ShardtrainError
from shardtrain.stages.images import chain
from shardtrain.stages.runner import SplitJob


def reader_options(cfg: Config) -> Any:
    """``dataset.options`` validated as ``TextReaderOptions`` (the file path resolved via the registry)."""
    from shardtrain.readers.text import TextReaderOptions

    opts = build_dataclass(TextReaderOptions, dict(cfg.dataset.options), "dataset.options")
    if "path" not in cfg.dataset.options and cfg.dataset.name == "sms-spam":
        opts = dataclasses.replace(opts, path=str(locate("sms-spam", cfg.dataset.data_dir)["SMSSpamCollection"]))
    return opts


def _synonyms_path(cfg: Config) -> str | None:
    """Resolve ``augment.text.synonyms: oewn`` through the dataset registry; pass others through."""
    spec = cfg.augment.text.synonyms
    if spec == "oewn":
        return str(locate("oewn-2025", cfg.dataset.data_dir)["oewn-2025-synsets.tsv.gz"])
    return spec


def prepare_inputs(cfg: Config) -> dict[str, Any]:
    """Locate the text file and fingerprint it."""
    opts = reader_options(cfg)
    path = Path(opts.path)
    if not path.is_absolute() and cfg.dataset.data_dir:
        path = Path(cfg.dataset.data_dir) / path
    if not path.is_file():
        raise ShardtrainError(f"{path}: text file not found")
    return {"options": dataclasses.replace(opts, path=str(path)), "splits": ["train", "val", "test"],
            "fingerprint": [file_fingerprint(path)]}


def _read(cfg: Config, inputs: dict[str, Any]) -> Any:
    """Read and split the whole file (cheap: a few MB at most)."""
    from shardtrain.readers.text import read_text

    return read_text(inputs["options"], cfg.dataset.data_dir, seed=cfg.seed)


def _describe(cfg: Config, table: Any) -> dict[str, Any]:
    """Index metadata: sparse feature description, classes, and how the split was made."""
    feat = cfg.prepare.text
    return {
        "features": {"x": {"kind": "sparse", "dim": 2 ** feat.bits, "dtype": "float32",
                           "extractor": "hashed_ngrams", "options": dataclasses.asdict(feat)}},
        "labels": {"label": {"classes": list(table.classes)}},
        "extra": {"split_rule": {"kind": "stratified", "seed": cfg.seed,
                                 "fractions": list(cfg.dataset.options.get("split", (0.7, 0.1, 0.2)))},
                  "split_counts": table.split_counts},
    }


def _split_source(table: Any, split_index: int) -> dict[str, Any]:
    """The rows of one split (rejected rows never belong to a split)."""
    cols = table.columns
    keep = np.flatnonzero(cols["split"] == split_index)
    return {"sample_id": cols["sample_id"][keep], "text": cols["text"][keep], "label": cols["label"][keep]}


def _rejects(table: Any) -> list[dict[str, Any]]:
    """Reader rejects (empty text, bad UTF-8, unknown labels) as reject records."""
    cols = table.columns
    bad = np.flatnonzero(cols["reject_reason"] != "")
    return [{"sample_id": int(cols["sample_id"][i]), "reason": str(cols["reject_reason"][i]), "detail": ""}
            for i in bad]


def prepare_jobs(cfg: Config, inputs: dict[str, Any]) -> list[SplitJob]:
    """One job per split: text -> hashed n-grams. Reader rejects are counted on the train split."""
    from shardtrain.features.text import hashed_ngrams

    table = _read(cfg, inputs)
    describe = _describe(cfg, table)
    jobs = []
    for i, split in enumerate(("train", "val", "test")):
        source = _split_source(table, i)
        pre = _rejects(table) if split == "train" else []
        jobs.append(SplitJob(split, source, hashed_ngrams, cfg.prepare.text, describe=describe, pre_rejects=pre))
    return jobs


def augment_step(batch: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Stage function: each row followed by its augmented copies (the augmenter is cached per process)."""
    from shardtrain.augment.text import augment_text

    return augment_text(batch, ctx["cfg"], ctx["seed"], None, ctx["copies"])


def augment_jobs(cfg: Config, prepare_dir: Path, target: Path) -> list[SplitJob]:
    """The training split -> originals + copies -> hashed n-grams."""
    from shardtrain.features.text import hashed_ngrams

    if cfg.augment.copies < 1:
        raise ShardtrainError("config key 'augment.copies': the augment stage needs copies >= 1")
    table = _read(cfg, prepare_inputs(cfg))
    text_cfg = dataclasses.replace(cfg.augment.text, synonyms=_synonyms_path(cfg))
    steps = [(augment_step, {"cfg": text_cfg, "seed": cfg.seed, "copies": cfg.augment.copies}),
             (hashed_ngrams, cfg.prepare.text)]
    describe = _describe(cfg, table)
    describe["extra"]["copies"] = cfg.augment.copies
    describe["extra"]["augment"] = dataclasses.asdict(cfg.augment.text)
    return [SplitJob("train", _split_source(table, 0), chain, {"steps": steps}, describe=describe)]
