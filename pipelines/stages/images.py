"""Image stage functions and job building (Fashion-MNIST, MNIST, an image folder, digits).

``prepare`` gets each split's raw rows from its dataset class (``shardtrain.datasets.images``),
and each shard task runs the feature extractor (``pixels`` or ``handcrafted``) over its
rows. ``augment`` re-reads the raw training images (so it works for any extractor), and
each shard task writes every original followed by its ``copies`` augmented versions,
then extracts features (``augment.pipeline`` null: the default pipeline,
``shardtrain.augment.image.DEFAULT_PIPELINE``, recorded in the index's ``extra.pipeline``).
Validation and test are never augmented. ``predict`` runs a new input through the
prepare steps with the decode options the training index recorded under ``transform``.

An IDX split's source is an :class:`ImageParts`: the driver reads only the two headers
(``idx_source``) and plans ranges of records; each shard task loads its own records
straight from the file or object (``load_idx_part``), so the driver never holds images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shardtrain.stages.runner import Parts, SplitJob

if TYPE_CHECKING:
    from shardtrain.readers.idx import IdxLayout
    from shardtrain.shards.storage import Location
    from shardtrain.stages.context import StageConfig as Config
    from shardtrain.readers.imagefolder import DecodeOptions


@dataclass
class ImageParts(Parts):
    """A :class:`Parts` source of images that also knows the image shape (for the index, without loading)."""

    image_shape: tuple[int, ...] = ()


@dataclass(frozen=True)
class IdxPart:
    """One planned piece of an IDX split: records ``[start, stop)`` of an images/labels pair.

    ``label_maps`` names the label columns to write, each ``None`` (the IDX label as it
    is) or a lookup table (Fashion-MNIST's coarse groups: ``table[label]``).
    """

    images: IdxLayout
    labels: IdxLayout
    start: int
    stop: int
    label_maps: tuple[tuple[str, tuple[int, ...] | None], ...] = (("label", None),)


def load_idx_part(part: IdxPart) -> dict[str, Any]:
    """A shard task's load: the part's ``sample_id``/``x``/label columns, read from storage."""
    from shardtrain.readers.idx import read_records

    labels = read_records(part.labels, part.start, part.stop).astype(np.int64)
    cols: dict[str, Any] = {"sample_id": np.arange(part.start, part.stop, dtype=np.int64),
                            "x": read_records(part.images, part.start, part.stop)}
    for name, table in part.label_maps:
        cols[name] = labels if table is None else np.asarray(table, dtype=np.int64)[labels]
    return cols


def idx_source(images: Location, labels: Location, label_maps: tuple[tuple[str, tuple[int, ...] | None], ...],
               block_bytes: int, identities: tuple[str, str] = ("", "")) -> ImageParts:
    """Plan an IDX split from its two headers: parts of about ``block_bytes`` of images each.

    A gzipped images file is one part (it is decompressed whole anyway); a raw one is
    cut every ``block_bytes // record_bytes`` records, each part one ranged read.
    """
    from shardtrain.readers.idx import expect_images_labels, idx_layout

    img, lab = idx_layout(images, identities[0]), idx_layout(labels, identities[1])
    expect_images_labels(img, lab)
    n = img.count
    step = n if img.gzipped else max(1, block_bytes // max(img.record_bytes, 1))
    parts = [(IdxPart(img, lab, lo, min(lo + step, n), label_maps), min(lo + step, n) - lo)
             for lo in range(0, max(n, 1), max(step, 1))] if n else [(IdxPart(img, lab, 0, 0, label_maps), 0)]
    return ImageParts(parts, load_idx_part, image_shape=tuple(img.shape[1:]))

log = logging.getLogger("shardtrain")


def chain(batch: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Apply a list of ``(fn, ctx)`` stage functions in order."""
    for fn, fn_ctx in ctx["steps"]:
        batch = fn(batch, fn_ctx)
    return batch


def _steps(cfg: Config, decode: DecodeOptions | None, augment: bool) -> list[tuple[Any, Any]]:
    """The stage functions for prepare (decode? + extract) or augment (decode? + augment + extract)."""
    from shardtrain.features.image import get_extractor

    steps = []
    if decode is not None:
        from shardtrain.readers.imagefolder import decode_images

        steps.append((decode_images, decode))
    if augment:
        from shardtrain.augment.image import augment_images

        steps.append((augment_images, {"pipeline": pipeline_of(cfg)[0], "copies": cfg.augment.copies,
                                       "seed": cfg.seed}))
    hc = cfg.prepare.handcrafted
    steps.append((get_extractor(cfg.prepare.features), {"intensity_bins": hc.intensity_bins,
                                                        "orientation_bins": hc.orientation_bins,
                                                        "cells": hc.cells}))
    return steps


def pipeline_of(cfg: Config) -> tuple[dict[str, Any], str]:
    """The augment pipeline (albumentations' dict form) and where it came from (``config`` or ``default``)."""
    from shardtrain.augment.image import DEFAULT_PIPELINE

    if cfg.augment.pipeline is not None:
        return dict(cfg.augment.pipeline), "config"
    return DEFAULT_PIPELINE, "default"


def _describe(cfg: Config, source: dict[str, Any] | Parts, label_desc: dict, decode: DecodeOptions | None
              ) -> dict[str, Any]:
    """Index metadata for a split: the features, the label classes and the decode ``transform``."""
    from shardtrain.features.image import describe_features

    if decode is not None:
        shape = decode.shape
    elif isinstance(source, ImageParts):
        shape = tuple(int(s) for s in source.image_shape)
    else:
        shape = tuple(int(s) for s in source["x"].shape[1:])
    feat = describe_features(cfg.prepare.features, shape, cfg.prepare.handcrafted)
    transform = decode.describe() if decode is not None else {"decode": "array", "image_shape": list(shape)}
    return {"features": {"x": feat}, "labels": label_desc, "transform": transform}


def prepare_job(cfg: Config, split: str, source: dict[str, Any] | Parts, label_desc: dict,
                decode: DecodeOptions | None) -> SplitJob:
    """One prepare (or predict) job: a split's raw rows -> (decode) -> features."""
    return SplitJob(split, source, chain, {"steps": _steps(cfg, decode, augment=False)},
                    describe=_describe(cfg, source, label_desc, decode))


def augment_job(cfg: Config, source: dict[str, Any] | Parts, label_desc: dict, decode: DecodeOptions | None,
                prepare_dir: Path) -> SplitJob:
    """The augment job: training rows -> (decode) -> originals + augmented copies -> features."""
    describe = _describe(cfg, source, label_desc, decode)
    pipeline, origin = pipeline_of(cfg)
    describe["extra"] = {"copies": cfg.augment.copies, "augmented_from": str(prepare_dir / "train"),
                         "pipeline": pipeline, "pipeline_from": origin}
    return SplitJob("train", source, chain, {"steps": _steps(cfg, decode, augment=True)}, describe=describe)


def _class_caption(label: int, classes: list[str] | None) -> str:
    """``T-shirt/top``, or ``class 3`` when the class has no name or its name is just a number."""
    name = str(classes[label]) if classes and 0 <= label < len(classes) else ""
    return name if name and not name.isdigit() else f"class {name or label}"


def write_preview(cfg: Config, target: Path) -> None:
    """Write ``_preview.png``: a few originals beside their augmented copies (pixel features only)."""
    if cfg.augment.preview <= 0 or cfg.prepare.features != "pixels":
        return
    from shardtrain.augment.image import preview_grid
    from shardtrain.shards import ShardSet
    from shardtrain.shards.format import PREVIEW_NAME

    ss = ShardSet(target / "train")
    x = ss.column("x")[0]
    aug = ss.column("aug_index")[0]
    k = cfg.augment.copies
    n = min(cfg.augment.preview, int((aug == 0).sum()))
    starts = np.flatnonzero(aug == 0)[:n]
    originals = x[starts]
    copies = np.stack([x[starts + j] for j in range(1, k + 1)], axis=1)  # (n, K, H, W)
    ids = ss.column("sample_id")[0][starts]
    classes = (ss.labels.get("label") or {}).get("classes")
    labels = ss.column("label")[0][starts] if "label" in ss.column_names else None
    captions = [f"id {int(i)}" if labels is None else f"id {int(i)}: {_class_caption(int(y), classes)}"
                for i, y in zip(ids, labels if labels is not None else ids)]
    path = target / "train" / PREVIEW_NAME
    preview_grid(originals, copies, path, n=n, captions=captions,
                 title=f"{cfg.name} augment preview: {k} {'copy' if k == 1 else 'copies'} each, seed {cfg.seed}")
    log.info("augment preview: %s", path)
