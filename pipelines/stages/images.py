"""Image datasets (Fashion-MNIST, MNIST, an image folder, scikit-learn's digits) as stage jobs.

``prepare`` reads the raw files once in the driver, and each shard task runs the
feature extractor (``pixels`` or ``handcrafted``) over its rows. ``augment`` re-reads
the raw training images (so it works for any extractor), and each shard task writes
every original followed by its ``copies`` augmented versions, then extracts features.
Validation and test are never augmented.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from shardtrain.config import Config
from shardtrain.datasets import file_fingerprint, get_spec, locate
from shardtrain.core.errors import ShardtrainError
from shardtrain.stages.runner import SplitJob

log = logging.getLogger("shardtrain")

# Fashion-MNIST's coarse groups for the multitask preset. A dress is worn on the upper
# body too, so it joins the tops.
COARSE_CLASSES = ["tops", "bottoms", "footwear", "bags"]
FASHION_COARSE = np.array([0, 1, 0, 0, 0, 2, 0, 2, 3, 2], dtype=np.int64)


def _options(cfg: Config, allowed: dict[str, Any]) -> dict[str, Any]:
    """Validate ``dataset.options`` against the allowed keys and their defaults."""
    opts = dict(allowed)
    for key, value in cfg.dataset.options.items():
        if key not in allowed:
            raise ShardtrainError(f"unknown config key 'dataset.options.{key}' (allowed here: {', '.join(allowed)})")
        if type(value) is not type(allowed[key]) and not (isinstance(allowed[key], float) and isinstance(value, int)):
            raise ShardtrainError(f"config key 'dataset.options.{key}': expected {type(allowed[key]).__name__}, got {value!r}")
        opts[key] = value
    return opts


def _labels(cfg: Config, labels: np.ndarray, classes: list[str]) -> tuple[dict[str, np.ndarray], dict]:
    """Label columns and their descriptions: ``label``, or ``label_class`` + ``label_coarse``."""
    labels = labels.astype(np.int64)
    if cfg.dataset.name == "fashion-mnist" and cfg.dataset.options.get("coarse"):
        cols = {"label_class": labels, "label_coarse": FASHION_COARSE[labels]}
        return cols, {"label_class": {"classes": classes}, "label_coarse": {"classes": COARSE_CLASSES}}
    return {"label": labels}, {"label": {"classes": classes}}


# ---------------------------------------------------------------- stage functions (pure, picklable)

def chain(batch: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Apply a list of ``(fn, ctx)`` stage functions in order."""
    for fn, fn_ctx in ctx["steps"]:
        batch = fn(batch, fn_ctx)
    return batch


def _steps(cfg: Config, decode: Any, augment: bool) -> list[tuple[Any, Any]]:
    """The stage functions for prepare (decode? + extract) or augment (decode? + augment + extract)."""
    from shardtrain.features.image import get_extractor

    steps = []
    if decode is not None:
        from shardtrain.readers.imagefolder import decode_images

        steps.append((decode_images, decode))
    if augment:
        from shardtrain.augment.image import augment_images

        steps.append((augment_images, {"pipeline": cfg.augment.pipeline, "copies": cfg.augment.copies,
                                       "seed": cfg.seed}))
    kind = cfg.prepare.features
    steps.append((get_extractor(kind), {"intensity_bins": cfg.prepare.handcrafted.intensity_bins,
                                        "orientation_bins": cfg.prepare.handcrafted.orientation_bins,
                                        "cells": cfg.prepare.handcrafted.cells}))
    return steps


# ---------------------------------------------------------------- reading raw splits

def prepare_inputs(cfg: Config) -> dict[str, Any]:
    """Locate the raw files and fingerprint them (cheap; no decoding yet)."""
    name = cfg.dataset.name
    if name in ("fashion-mnist", "mnist"):
        _options(cfg, {"coarse": False})
        files = locate(name, cfg.dataset.data_dir)
        return {"files": files, "splits": ["train", "test"],
                "fingerprint": sorted(file_fingerprint(p) for p in files.values())}
    if name == "digits":
        import sklearn

        opts = _options(cfg, {"test_fraction": 0.2})
        return {"files": {}, "splits": ["train", "test"], "fingerprint": [f"sklearn-{sklearn.__version__}", opts]}
    if name == "image-folder":
        from shardtrain.readers.imagefolder import ImageFolderOptions

        opts = dict(cfg.dataset.options)
        test_csv = opts.pop("test_csv", None)
        folder = ImageFolderOptions.from_mapping(opts)
        csvs = {"train": Path(folder.csv)} | ({"test": Path(test_csv)} if test_csv else {})
        for path in csvs.values():
            if not path.is_file():
                raise ShardtrainError(f"{path}: annotations CSV not found")
        return {"files": csvs, "splits": list(csvs), "options": folder,
                "fingerprint": [file_fingerprint(p) for p in csvs.values()]}
    raise ShardtrainError(f"dataset {name!r} is not an image dataset")


def read_split(cfg: Config, inputs: dict[str, Any], split: str) -> tuple[dict[str, Any], dict, Any]:
    """The raw source rows of one split, their label descriptions, and the decode step (or None)."""
    name = cfg.dataset.name
    classes = get_spec(name).extra.get("classes")
    if name in ("fashion-mnist", "mnist"):
        from shardtrain.readers.idx import read_idx_pair

        prefix = "train" if split == "train" else "t10k"
        files = inputs["files"]
        images, labels = read_idx_pair(files[f"{prefix}-images-idx3-ubyte.gz"], files[f"{prefix}-labels-idx1-ubyte.gz"])
        cols, label_desc = _labels(cfg, labels, classes)
        return {"sample_id": np.arange(len(images), dtype=np.int64), "x": images, **cols}, label_desc, None
    if name == "digits":
        return _digits_split(cfg, split, classes)
    from shardtrain.readers.imagefolder import read_annotations, resolve_options

    opts = inputs["options"]
    ann = read_annotations(inputs["files"][split], opts.root, opts.path_col, opts.label_col,
                           header=opts.header, delimiter=opts.delimiter)
    decode = resolve_options(opts, ann)
    return dict(ann.columns), {"label": {"classes": ann.classes}}, decode


def _digits_split(cfg: Config, split: str, classes: list[str]) -> tuple[dict, dict, None]:
    """scikit-learn's digits, split train/test stratified by a seeded per-class permutation."""
    from sklearn.datasets import load_digits

    opts = _options(cfg, {"test_fraction": 0.2})
    digits = load_digits()
    # 0..16 intensities -> 0..255 so the same ``pixels`` scale (1/255) applies.
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    rng = np.random.default_rng(cfg.seed)
    is_test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_test = int(round(len(idx) * opts["test_fraction"]))
        is_test[rng.permutation(idx)[:n_test]] = True
    keep = np.flatnonzero(is_test if split == "test" else ~is_test)
    return {"sample_id": keep.astype(np.int64), "x": images[keep], "label": labels[keep]}, \
        {"label": {"classes": classes}}, None


def _describe(cfg: Config, source: dict[str, Any], label_desc: dict, decode: Any) -> dict[str, Any]:
    """Index metadata for a split: the feature description and the label classes."""
    from shardtrain.features.image import describe_features

    if decode is not None:
        shape = tuple(decode.size) + ((3,) if decode.color == "rgb" else ())
    else:
        shape = tuple(source["x"].shape[1:])
    feat = describe_features(cfg.prepare.features, shape, cfg.prepare.handcrafted)
    return {"features": {"x": feat}, "labels": label_desc}


def prepare_jobs(cfg: Config, inputs: dict[str, Any]) -> list[SplitJob]:
    """One job per split: raw rows -> (decode) -> features."""
    jobs = []
    for split in inputs["splits"]:
        source, label_desc, decode = read_split(cfg, inputs, split)
        jobs.append(SplitJob(split, source, chain, {"steps": _steps(cfg, decode, augment=False)},
                             describe=_describe(cfg, source, label_desc, decode)))
    return jobs


def augment_jobs(cfg: Config, prepare_dir: Path, target: Path) -> list[SplitJob]:
    """The training split's raw rows -> (decode) -> originals + augmented copies -> features."""
    if cfg.augment.copies < 1:
        raise ShardtrainError("config key 'augment.copies': the augment stage needs copies >= 1")
    if not cfg.augment.pipeline:
        raise ShardtrainError("config key 'augment.pipeline': the augment stage needs an albumentations pipeline")
    inputs = prepare_inputs(cfg)
    source, label_desc, decode = read_split(cfg, inputs, "train")
    describe = _describe(cfg, source, label_desc, decode)
    describe["extra"] = {"copies": cfg.augment.copies, "augmented_from": str(prepare_dir / "train")}
    return [SplitJob("train", source, chain, {"steps": _steps(cfg, decode, augment=True)}, describe=describe)]


def after_augment(cfg: Config, target: Path, indexes: dict[str, Any]) -> None:
    """Write ``preview.png``: a few originals beside their augmented copies (pixel features only)."""
    if cfg.augment.preview <= 0 or cfg.prepare.features != "pixels":
        return
    from shardtrain.augment.image import preview_grid
    from shardtrain.shards import ShardSet

    ss = ShardSet(target / "train")
    x = ss.column("x")[0]
    aug = ss.column("aug_index")[0]
    k = cfg.augment.copies
    n = min(cfg.augment.preview, int((aug == 0).sum()))
    starts = np.flatnonzero(aug == 0)[:n]
    originals = x[starts]
    copies = np.stack([x[starts + j] for j in range(1, k + 1)], axis=1)  # (n, K, H, W)
    path = target / "train" / "preview.png"
    preview_grid(originals, copies, path, n=n)
    log.info("augment preview: %s", path)
