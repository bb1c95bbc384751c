"""Image augmentation: pipeline loading, per-sample determinism, copy layout, previews, BatchAugment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from shardtrain.augment.image import (
    DEFAULT_PIPELINE, BatchAugment, ImageAugmenter, augment_images, load_pipeline, preview_batch, preview_grid,
    sample_seeds,
)
from shardtrain.core.errors import ShardtrainError

PIPELINES = {
    "default": DEFAULT_PIPELINE,
    "with_colour": {"transform": {"__class_fullname__": "Compose", "transforms": [
        {"__class_fullname__": "OneOf", "p": 1.0, "transforms": [
            {"__class_fullname__": "HorizontalFlip", "p": 1.0},
            {"__class_fullname__": "VerticalFlip", "p": 1.0}]},
        {"__class_fullname__": "RandomBrightnessContrast", "brightness_limit": 0.2, "contrast_limit": 0.2, "p": 0.5},
        {"__class_fullname__": "GaussNoise", "std_range": [0.05, 0.1], "p": 0.5}]}},
}


def make_batch(n: int = 12, shape: tuple[int, ...] = (16, 16), start: int = 0) -> dict:
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, (start + n, *shape), dtype=np.uint8)[start:]
    return {"sample_id": np.arange(start, start + n, dtype=np.int64) * 3 + 5, "x": x,
            "label": np.arange(start, start + n, dtype=np.int64) % 4}


def take(batch: dict, idx: np.ndarray) -> dict:
    return {k: v[idx] for k, v in batch.items()}


@pytest.mark.parametrize("name", list(PIPELINES))
@pytest.mark.parametrize("seed", [0, 123])
@pytest.mark.parametrize("shape", [(16, 16), (16, 16, 3)])
def test_copies_independent_of_batch_split_and_order(name: str, seed: int, shape: tuple[int, ...]) -> None:
    batch = make_batch(shape=shape)
    whole = ImageAugmenter(PIPELINES[name], copies=2, seed=seed)(batch)
    by_id = {sid: whole["x"][i] for i, sid in enumerate(whole["sample_id"])}
    # A fresh augmenter, reversed rows, two uneven batches: every row's bytes must match.
    other = ImageAugmenter(PIPELINES[name], copies=2, seed=seed)
    order = np.arange(12)[::-1]
    for part in (order[:5], order[5:]):
        out = other(take(batch, part))
        for i, sid in enumerate(out["sample_id"]):
            assert out["x"][i].tobytes() == by_id[sid].tobytes()
    assert whole["x"].shape == (36, *shape) and whole["x"].dtype == np.uint8


def test_layout_ids_and_columns() -> None:
    batch = make_batch(n=3)
    batch["name"] = pa.array(["a", "b", "c"])
    before = batch["x"].copy()
    out = ImageAugmenter(None, copies=2, seed=0)(batch)
    np.testing.assert_array_equal(out["aug_index"], [0, 1, 2] * 3)
    np.testing.assert_array_equal(out["source_id"], np.repeat(batch["sample_id"], 3))
    np.testing.assert_array_equal(out["sample_id"], out["source_id"] + out["aug_index"].astype(np.int64) * 2**32)
    np.testing.assert_array_equal(out["label"], np.repeat(batch["label"], 3))
    assert out["name"].to_pylist() == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    np.testing.assert_array_equal(batch["x"], before)                       # input untouched
    np.testing.assert_array_equal(out["x"][::3], before)                   # originals kept as they were
    assert out["aug_index"].dtype == np.int32 and out["sample_id"].dtype == np.int64


def test_copies_differ_from_each_other_and_across_seeds() -> None:
    batch = make_batch(n=8)
    spec = {"transform": {"__class_fullname__": "Affine", "translate_px": [-3, 3], "rotate": [-20, 20], "p": 1.0}}
    a = ImageAugmenter(spec, copies=2, seed=0)(batch)["x"].reshape(8, 3, 16, 16)
    b = ImageAugmenter(spec, copies=2, seed=1)(batch)["x"].reshape(8, 3, 16, 16)
    assert all(not np.array_equal(a[i, 1], a[i, 2]) for i in range(8))
    assert all(not np.array_equal(a[i, 1], a[i, 0]) for i in range(8))
    assert sum(np.array_equal(a[i, 1], b[i, 1]) for i in range(8)) == 0


def test_transforms_are_not_correlated() -> None:
    # albumentations' set_random_seed would fire two p=0.5 flips together on every sample.
    spec = {"transform": {"__class_fullname__": "Compose", "transforms": [
        {"__class_fullname__": "HorizontalFlip", "p": 0.5}, {"__class_fullname__": "VerticalFlip", "p": 0.5}]}}
    aug = ImageAugmenter(spec, copies=1, seed=0)
    img = np.arange(16, dtype=np.uint8).reshape(4, 4)
    seen = {aug.augment_one(img, sid, 1).tobytes() for sid in range(64)}
    assert len(seen) == 4  # identity, h-flip, v-flip, both


def test_augment_images_accepts_config_and_mapping() -> None:
    from shardtrain.config import from_dict

    batch = make_batch(n=4)
    cfg = from_dict({"seed": 3, "augment": {"copies": 1, "pipeline": DEFAULT_PIPELINE}})
    a = augment_images(batch, cfg)
    b = augment_images(batch, {"seed": 3, "copies": 1, "pipeline": DEFAULT_PIPELINE})
    np.testing.assert_array_equal(a["x"], b["x"])
    assert len(a["sample_id"]) == 8


def test_round_trip_through_to_dict(tmp_path: Path) -> None:
    import albumentations as A

    compose = load_pipeline(DEFAULT_PIPELINE)
    full = A.to_dict(compose)
    (tmp_path / "p.json").write_text(json.dumps(full))
    batch = make_batch(n=6)
    a = ImageAugmenter(compose, copies=1, seed=9)(batch)
    b = ImageAugmenter(tmp_path / "p.json", copies=1, seed=9)(batch)
    np.testing.assert_array_equal(a["x"], b["x"])
    (tmp_path / "p.yaml").write_text("transform:\n  __class_fullname__: HorizontalFlip\n  p: 1.0\n")
    assert isinstance(load_pipeline(tmp_path / "p.yaml"), A.Compose)


@pytest.mark.parametrize("spec,match", [
    ({"transform": {"__class_fullname__": "Compose", "transforms": [
        {"__class_fullname__": "HorizontalFlip", "p": 0.5}, {"__class_fullname__": "HorizontalFlp", "p": 0.5}]}},
     r"unknown albumentations transform 'HorizontalFlp' at transform.transforms\[1\] \(did you mean Horiz"),
    ({"transform": {"__class_fullname__": "Affine", "translate_px": "abc", "p": 1.0}},
     "transform 'Affine' at transform: translate_px"),
    ({"transform": {"__class_fullname__": "Affine", "bogus": 3, "p": 1.0}},
     "'Affine' at transform: .*'bogus' are not valid"),
    ({"transform": {"__class_fullname__": "HorizontalFlip"}}, "'HorizontalFlip' at transform: give its probability"),
    ({"transform": {"__class_fullname__": "Compose", "transforms": "HorizontalFlip"}}, "'transforms' must be a list"),
    ([1, 2], "expected a mapping"),
])
def test_bad_pipelines_name_the_transform(spec, match: str) -> None:
    with pytest.raises(ShardtrainError, match=match):
        load_pipeline(spec)


def test_bad_pipeline_file_and_shape_change(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text("{nope")
    with pytest.raises(ShardtrainError, match="p.json: invalid json"):
        load_pipeline(tmp_path / "p.json")
    crop = {"transform": {"__class_fullname__": "CenterCrop", "height": 8, "width": 8, "p": 1.0}}
    with pytest.raises(ShardtrainError, match="changes images from"):
        ImageAugmenter(crop, copies=1)(make_batch(n=2))
    with pytest.raises(ShardtrainError, match="augment.copies"):
        ImageAugmenter(None, copies=-1)
    with pytest.raises(ShardtrainError, match="outside"):
        ImageAugmenter(None, copies=1)({"sample_id": np.array([2**32]), "x": np.zeros((1, 4, 4), np.uint8)})


def test_sample_seeds_are_distinct_and_pure() -> None:
    ids = np.arange(1000)
    s = sample_seeds(0, np.repeat(ids, 3), np.tile(np.arange(3), 1000))
    assert len(set(s.tolist())) == 3000
    np.testing.assert_array_equal(s[3::3], sample_seeds(0, ids[1:], 0))
    assert sample_seeds(1, 5, 1)[0] != sample_seeds(0, 5, 1)[0]


def test_preview_png(tmp_path: Path) -> None:
    from PIL import Image

    out = ImageAugmenter(None, copies=3, seed=0)(make_batch(n=10))
    path = preview_batch(out, tmp_path / "preview" / "grid.png", n=8)
    img = Image.open(path).convert("RGB")
    grid_w, grid_h = 4 * (4 * 18 + 2), 4 * (8 * 18 + 2)  # 8 rows of original + 3 copies, zoom 4, 2 px gutters
    w, h = img.size
    assert Image.open(path).format == "PNG"
    assert w > grid_w and h > grid_h  # a caption column on the left and a column header on top
    assert img.getpixel((w - 1, h - 1)) == (128, 128, 128)  # the grid's grey gutter ends the canvas
    rgb = np.zeros((2, 5, 5, 3), np.uint8)
    assert Image.open(preview_grid(rgb, rgb[:, None], tmp_path / "rgb.png", zoom=1)).mode == "RGB"


class TestBatchAugment:
    def batch(self) -> "torch.Tensor":
        import torch

        return torch.rand(6, 8 * 10, generator=torch.Generator().manual_seed(0))

    def test_deterministic_per_step_and_shape_preserving(self) -> None:
        aug = BatchAugment((8, 10), shift=2, flip=True, noise_std=0.1, erase=0.5, seed=1)
        x = self.batch()
        a, b, c = aug(x, 5), aug(x.clone(), 5), aug(x, 6)
        assert a.shape == x.shape and a.dtype == x.dtype
        assert bool((a == b).all()) and not bool((a == c).all())
        assert not bool((BatchAugment((8, 10), shift=2, flip=True, seed=2)(x, 5) ==
                         BatchAugment((8, 10), shift=2, flip=True, seed=1)(x, 5)).all())

    def test_shift_and_flip_move_pixels(self) -> None:
        import torch

        many = torch.rand(32, 80, generator=torch.Generator().manual_seed(1)).view(32, 8, 10)
        y = BatchAugment((8, 10), shift=0, flip=True, seed=0)(many.reshape(32, 80), 0).view(32, 8, 10)
        flipped = (y == many.flip(-1)).flatten(1).all(1)
        same = (y == many).flatten(1).all(1)
        assert bool((flipped ^ same).all()) and 4 < int(flipped.sum()) < 28
        x = self.batch()
        img = x.view(6, 8, 10)
        y = BatchAugment((8, 10), shift=1, seed=0)(x, 3).view(6, 8, 10)
        for k in range(6):  # each row is its image translated by (dy, dx) in [-1, 1]^2 with zero fill
            ok = False
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ref = torch.zeros(8, 10)
                    src = img[k, max(dy, 0):8 + min(dy, 0), max(dx, 0):10 + min(dx, 0)]
                    ref[max(-dy, 0):8 + min(-dy, 0), max(-dx, 0):10 + min(-dx, 0)] = src
                    ok |= bool((ref == y[k]).all())
            assert ok

    def test_rgb_and_bad_width(self) -> None:
        import torch

        x = torch.rand(4, 5 * 6 * 3)
        assert BatchAugment((5, 6, 3), shift=1, flip=True, erase=1.0)(x, 0).shape == (4, 90)
        with pytest.raises(ShardtrainError, match="batch has 90 features"):
            BatchAugment((5, 5))(x, 0)


def test_rejected_rows_are_not_copied() -> None:
    batch = make_batch(n=4)
    batch["reject_reason"] = np.array(["", "undecodable", "", "unknown_label"], dtype=object)
    batch["reject_detail"] = np.array(["", "a.png: truncated", "", "hat"], dtype=object)
    out = ImageAugmenter(None, copies=2, seed=0)(batch)
    assert list(out["reject_reason"]) == ["", "", "", "undecodable", "", "", "", "unknown_label"]
    np.testing.assert_array_equal(out["aug_index"], [0, 1, 2, 0, 0, 1, 2, 0])
    np.testing.assert_array_equal(out["source_id"], np.repeat(batch["sample_id"], [3, 1, 3, 1]))


def test_default_pipeline_has_no_flip_and_moves_pixels() -> None:
    names = [t["__class_fullname__"] for t in DEFAULT_PIPELINE["transform"]["transforms"]]
    assert not any("Flip" in n for n in names)
    out = ImageAugmenter(None, copies=1, seed=0)(make_batch(n=16))
    assert sum(not np.array_equal(out["x"][2 * i], out["x"][2 * i + 1]) for i in range(16)) >= 8
