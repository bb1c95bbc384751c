"""Image feature extractors: shapes, descriptions, and the batched descriptor against a naive loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shardtrain.core.errors import ShardtrainError
from shardtrain.features.image import (
    HandcraftedOptions, describe_features, feature_names, get_extractor, handcrafted, handcrafted_features,
    handcrafted_options, pixels,
)


def naive_descriptor(img: np.ndarray, ib: int, ob: int, c: int) -> np.ndarray:
    """Per-pixel reference implementation of the handcrafted descriptor for one grayscale image."""
    h, w = img.shape
    g = img.astype(np.float64) / 255.0
    hist = np.zeros(ib)
    hog = np.zeros((c, c, ob))
    for i in range(h):
        for j in range(w):
            hist[int(img[i, j]) * ib // 256] += 1
            dx = g[i, min(j + 1, w - 1)] - g[i, max(j - 1, 0)]
            dy = g[min(i + 1, h - 1), j] - g[max(i - 1, 0), j]
            mag, ang = math.hypot(dx, dy), math.atan2(dy, dx) % math.pi
            pos = ang / math.pi * ob - 0.5
            lo = math.floor(pos)
            frac = pos - lo
            hog[i * c // h, j * c // w, lo % ob] += mag * (1 - frac)
            hog[i * c // h, j * c // w, (lo + 1) % ob] += mag * frac
    hog /= np.sqrt((hog ** 2).sum(-1, keepdims=True) + 1e-4)
    return np.concatenate([hist / (h * w), hog.ravel()])


@pytest.mark.parametrize("shape,opts", [((28, 28), HandcraftedOptions()), ((10, 13), HandcraftedOptions(8, 6, 3))])
def test_handcrafted_matches_naive_loop(shape: tuple[int, int], opts: HandcraftedOptions) -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (3, *shape), dtype=np.uint8)
    x[0, :, : shape[1] // 2] = 0  # a flat region: cells with zero gradient must stay finite
    got = handcrafted_features(x, opts)
    assert got.shape == (3, opts.dim()) and got.dtype == np.float32
    for k in range(3):
        np.testing.assert_allclose(got[k], naive_descriptor(x[k], opts.intensity_bins, opts.orientation_bins,
                                                            opts.cells), rtol=1e-4, atol=1e-5)


def test_handcrafted_properties() -> None:
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    f = handcrafted_features(x)
    assert f.shape == (4, 16 + 4 * 4 * 9)
    np.testing.assert_allclose(f[:, :16].sum(1), 1.0, rtol=1e-6)  # intensity fractions
    cell_norms = np.linalg.norm(f[:, 16:].reshape(4, 16, 9), axis=-1)
    assert np.all(cell_norms <= 1.0 + 1e-6) and np.all(cell_norms > 0.9)
    # Batching does not change any row.
    np.testing.assert_array_equal(np.concatenate([handcrafted_features(x[:1]), handcrafted_features(x[1:])]), f)
    # A horizontal edge votes for the vertical-gradient orientation bin (pi/2 -> bin 4 of 9).
    edge = np.zeros((1, 28, 28), dtype=np.uint8)
    edge[0, 14:] = 200
    hog = handcrafted_features(edge)[0, 16:].reshape(4, 4, 9)
    assert hog[1:3].sum(axis=(0, 1)).argmax() == 4


def test_rgb_uses_luma() -> None:
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (2, 12, 12, 3), dtype=np.uint8)
    assert handcrafted_features(rgb).shape == (2, 160)
    gray_equal = np.repeat(rgb[..., :1], 3, axis=-1)
    np.testing.assert_allclose(handcrafted_features(gray_equal), handcrafted_features(rgb[..., 0]), atol=1e-5)


def test_stage_functions_and_descriptions() -> None:
    rng = np.random.default_rng(4)
    batch = {"sample_id": np.arange(5, dtype=np.int64), "x": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
             "label": np.arange(5, dtype=np.int64)}
    out = pixels(batch, None)
    assert out["x"] is batch["x"] and out["label"] is batch["label"]
    d = describe_features("pixels", (28, 28))
    assert d == {"dtype": "uint8", "shape": [28, 28], "scale": 1 / 255, "offset": 0.0, "kind": "dense", "dim": 784,
                 "extractor": "pixels"}
    out = handcrafted(batch, {"cells": 2})
    assert out["x"].shape == (5, 16 + 2 * 2 * 9) and out["x"].dtype == np.float32
    np.testing.assert_array_equal(out["sample_id"], batch["sample_id"])
    d = describe_features("handcrafted", (28, 28), {"cells": 2})
    assert d["shape"] == [52] and d["dtype"] == "float32" and len(d["names"]) == 52
    assert d["names"][16] == "hog_r0_c0_o0" and d["options"] == {"intensity_bins": 16, "orientation_bins": 9,
                                                                  "cells": 2}
    assert len(feature_names("pixels", (2, 3))) == 6
    assert get_extractor("handcrafted") is handcrafted


def test_bad_inputs() -> None:
    with pytest.raises(ShardtrainError, match="prepare.features"):
        get_extractor("sift")
    with pytest.raises(ShardtrainError, match="prepare.handcrafted.cells"):
        handcrafted_options({"cells": 0})
    with pytest.raises(ShardtrainError, match="prepare.handcrafted.bins"):
        handcrafted_options({"bins": 8})
    with pytest.raises(ShardtrainError, match="column 'x'"):
        pixels({"x": np.zeros((2, 4, 4), dtype=np.float32)})


def test_options_from_the_project_config() -> None:
    from shardtrain.config import from_dict

    cfg = from_dict({"prepare": {"features": "handcrafted", "handcrafted": {"cells": 3, "orientation_bins": 6}}})
    assert handcrafted_options(cfg) == HandcraftedOptions(16, 6, 3)
    assert handcrafted_options(cfg.prepare.handcrafted) == HandcraftedOptions(16, 6, 3)
