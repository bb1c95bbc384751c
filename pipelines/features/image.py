"""Image feature extractors: stage functions turning decoded images ``x`` into feature vectors.

* ``pixels`` keeps ``x`` as uint8 (N, H, W[, 3]); the index says ``scale`` 1/255 so the
  DataModule hands the model floats in [0, 1].
* ``handcrafted`` is a small engineered descriptor, float32 (N, D): a global intensity
  histogram (fractions of pixels per bin) followed by a HOG-like block: central-difference
  gradients, magnitude-weighted unsigned orientation histograms (linear interpolation
  between neighbouring bins) over a ``cells x cells`` grid, L2-normalised per cell.
  For 28x28 images with the defaults, D = 16 + 4 * 4 * 9 = 160.

Both are vectorised over the batch (one ``bincount`` per histogram, no per-image loop).

Example::

    out = handcrafted({"sample_id": ids, "x": images}, {"cells": 4})   # out["x"]: (N, 160) float32
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Callable

import numpy as np

from shardtrain.core.errors import ShardtrainError

FEATURE_KINDS = ("pixels", "handcrafted")
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as PIL's convert("L")
_EPS = 1e-2  # keeps near-empty cells from amplifying noise when L2-normalised


@dataclass(frozen=True)
class HandcraftedOptions:
    """Options of the handcrafted descriptor (``prepare.handcrafted`` in the config)."""

    __pydantic_config__ = {"extra": "forbid"}  # validated from the config by pydantic; unknown keys are errors

    intensity_bins: int = 16
    orientation_bins: int = 9
    cells: int = 4

    def __post_init__(self) -> None:
        """Reject values that would give an empty or degenerate descriptor."""
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ShardtrainError(f"config key 'prepare.handcrafted.{f.name}': expected an integer >= 1, got {v!r}")
        if self.intensity_bins > 256:
            raise ShardtrainError(
                f"config key 'prepare.handcrafted.intensity_bins': at most 256, got {self.intensity_bins}")

    def dim(self) -> int:
        """Length of the descriptor."""
        return self.intensity_bins + self.cells * self.cells * self.orientation_bins


def handcrafted_options(cfg: Any) -> HandcraftedOptions:
    """Accept None (defaults), a mapping, ``prepare.handcrafted``-like attrs, or a full config."""
    if isinstance(cfg, HandcraftedOptions):
        return cfg
    if cfg is None:
        return HandcraftedOptions()
    if hasattr(cfg, "prepare"):
        cfg = cfg.prepare.handcrafted
    names = [f.name for f in fields(HandcraftedOptions)]
    if isinstance(cfg, Mapping):
        unknown = sorted(set(cfg) - set(names))
        if unknown:
            raise ShardtrainError(
                f"unknown config key 'prepare.handcrafted.{unknown[0]}' (allowed: {', '.join(names)})")
        return HandcraftedOptions(**cfg)
    return HandcraftedOptions(**{n: getattr(cfg, n) for n in names if hasattr(cfg, n)})


def _check_images(x: Any) -> np.ndarray:
    """``x`` as a uint8 (N, H, W) or (N, H, W, 3) array, or a ShardtrainError."""
    x = np.asarray(x)
    if x.dtype != np.uint8 or x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] != 3):
        raise ShardtrainError(f"column 'x': expected uint8 images (N, H, W) or (N, H, W, 3), got {x.dtype} {x.shape}")
    return x


def handcrafted_features(x: np.ndarray, opts: HandcraftedOptions | None = None) -> np.ndarray:
    """Intensity histogram + cell orientation histograms of uint8 images, float32 (N, D)."""
    opts = opts or HandcraftedOptions()
    x = _check_images(x)
    gray = x.astype(np.float32) if x.ndim == 3 else x.astype(np.float32) @ _LUMA  # (N, H, W)
    n, h, w = gray.shape
    ib, ob, c = opts.intensity_bins, opts.orientation_bins, opts.cells
    rows = np.arange(n, dtype=np.int64)[:, None]                                    # (N, 1)

    # Intensity histogram: bin of each pixel, offset per image, one bincount for the batch.
    level = np.clip(gray, 0, 255).astype(np.int64).reshape(n, -1)                   # (N, H*W)
    ibin = (level * ib) >> 8
    hist = np.bincount((ibin + rows * ib).ravel(), minlength=n * ib).reshape(n, ib) / (h * w)

    # Central-difference gradients with replicated edges (so borders give no fake edge).
    g = np.pad(gray * np.float32(1 / 255), ((0, 0), (1, 1), (1, 1)), mode="edge")
    gx = g[:, 1:-1, 2:] - g[:, 1:-1, :-2]                                           # (N, H, W)
    gy = g[:, 2:, 1:-1] - g[:, :-2, 1:-1]
    mag = np.hypot(gx, gy)
    ang = np.mod(np.arctan2(gy, gx), np.pi)                                         # unsigned, [0, pi)
    pos = ang * np.float32(ob / np.pi) - np.float32(0.5)                            # bin centres at k + 0.5
    lo = np.floor(pos)
    frac = pos - lo                                                                 # weight of the upper bin
    lo = lo.astype(np.int32)                                                        # in [-1, ob - 1]
    hi = np.where(lo == ob - 1, 0, lo + 1)                                          # wraps: 0 and pi meet
    lo = np.where(lo < 0, ob - 1, lo)

    # Flat (image, cell row, cell col, orientation) index of every pixel's two votes.
    cell = ((np.arange(h) * c) // h)[:, None] * c + ((np.arange(w) * c) // w)[None, :]  # (H, W)
    base = (rows * (c * c) + cell.reshape(1, -1)) * ob                               # (N, H*W)
    size = n * c * c * ob
    hog = np.bincount((base + lo.reshape(n, -1)).ravel(), (mag * (1 - frac)).ravel(), minlength=size)
    hog += np.bincount((base + hi.reshape(n, -1)).ravel(), (mag * frac).ravel(), minlength=size)
    hog = hog.reshape(n, c * c, ob)
    hog /= np.sqrt((hog * hog).sum(-1, keepdims=True) + _EPS * _EPS)
    return np.concatenate([hist, hog.reshape(n, -1)], axis=1).astype(np.float32)


def feature_names(kind: str, image_shape: tuple[int, ...], options: Any = None) -> list[str]:
    """One name per feature, in ``x`` order (``px_r_c[_ch]`` or ``intensity_b`` / ``hog_rR_cC_oO``)."""
    if kind == "pixels":
        return ["px_" + "_".join(map(str, idx)) for idx in np.ndindex(*image_shape)]
    opts = handcrafted_options(options)
    names = [f"intensity_{b:02d}" for b in range(opts.intensity_bins)]
    names += [f"hog_r{r}_c{col}_o{o}" for r in range(opts.cells) for col in range(opts.cells)
              for o in range(opts.orientation_bins)]
    return names


def describe_features(kind: str, image_shape: tuple[int, ...], options: Any = None) -> dict[str, Any]:
    """The ``features["x"]`` entry of _index.json for an extractor applied to images of ``image_shape``."""
    shape = [int(s) for s in image_shape]
    if kind == "pixels":
        return {"dtype": "uint8", "shape": shape, "scale": 1.0 / 255.0, "offset": 0.0, "kind": "dense",
                "dim": int(np.prod(shape)), "extractor": "pixels"}
    if kind == "handcrafted":
        opts = handcrafted_options(options)
        return {"dtype": "float32", "shape": [opts.dim()], "scale": 1.0, "offset": 0.0, "kind": "dense",
                "dim": opts.dim(), "extractor": "handcrafted", "image_shape": shape,
                "options": {f.name: getattr(opts, f.name) for f in fields(opts)},
                "names": feature_names(kind, image_shape, opts)}
    raise ShardtrainError(f"config key 'prepare.features': {kind!r} is not one of {list(FEATURE_KINDS)}")


def pixels(batch: dict[str, Any], cfg: Any = None) -> dict[str, Any]:
    """Stage: keep ``x`` as uint8 images (validated); every other column passes through."""
    out = dict(batch)
    out["x"] = _check_images(batch["x"])
    return out


def handcrafted(batch: dict[str, Any], cfg: Any = None) -> dict[str, Any]:
    """Stage: replace uint8 images ``x`` by the handcrafted descriptor, float32 (N, D)."""
    out = dict(batch)
    out["x"] = handcrafted_features(batch["x"], handcrafted_options(cfg))
    return out


def get_extractor(kind: str) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """The stage function for ``prepare.features``."""
    extractors = {"pixels": pixels, "handcrafted": handcrafted}
    if kind not in extractors:
        raise ShardtrainError(f"config key 'prepare.features': {kind!r} is not one of {list(FEATURE_KINDS)}")
    return extractors[kind]
