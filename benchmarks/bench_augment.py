"""Augmentation throughput: the single-process albumentations loop (baseline) vs the Ray stage.

    PYTHONPATH=. python benchmarks/bench_augment.py --n 10000 --data-dir ../shared/data

Uses the fashion-mnist preset's pipeline. The baseline is what the augment stage
does per image in one process: reseed from (seed, sample_id, copy), apply the
Compose. It also prints albumentations' own speed without per-sample reseeding so
the cost of determinism is visible. Never run as a test.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from augment.image import DEFAULT_PIPELINE, ImageAugmenter, load_pipeline


def preset_pipeline() -> dict[str, Any]:
    """The albumentations pipeline of the fashion-mnist preset (the module default if it has none)."""
    from pipelines.config import load_config

    return load_config("fashion-mnist").augment.pipeline or DEFAULT_PIPELINE


def load_images(n: int, data_dir: Path) -> np.ndarray:
    """The first ``n`` Fashion-MNIST training images, uint8 (n, 28, 28)."""
    from pipelines.readers.idx import find_idx_files, read_idx_pair

    images, _ = read_idx_pair(*find_idx_files(data_dir / "fashion-mnist", "train"))
    return images[:n]


def single_process_images_per_s(images: np.ndarray, pipeline: Any, seed: int = 0) -> float:
    """Augmented images per second of one seeded copy per image, in this process (the baseline)."""
    aug = ImageAugmenter(pipeline, copies=1, seed=seed)
    batch = {"sample_id": np.arange(len(images), dtype=np.int64), "x": images}
    aug({"sample_id": batch["sample_id"][:16], "x": images[:16]})  # warm up (lazy imports, cv2 pools)
    start = time.perf_counter()
    aug(batch)
    return len(images) / (time.perf_counter() - start)


def unseeded_images_per_s(images: np.ndarray, pipeline: Any) -> float:
    """Albumentations alone: one Compose call per image with no reseeding (not reproducible per sample)."""
    compose = load_pipeline(pipeline)
    for img in images[:16]:
        compose(image=img)
    start = time.perf_counter()
    for img in images:
        compose(image=img)
    return len(images) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    """Print the single-process baseline (the Ray side is added beside it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000, help="training images to augment")
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    images = load_images(args.n, args.data_dir)
    pipeline = preset_pipeline()
    raw = unseeded_images_per_s(images, pipeline)
    seeded = single_process_images_per_s(images, pipeline, args.seed)
    root = pipeline.get("transform", pipeline)
    names = ", ".join(t["__class_fullname__"] for t in root.get("transforms", [root]))
    print(f"images: {len(images)} x {images.shape[1:]} uint8; pipeline: {names}")
    print(f"albumentations, no reseeding:        {raw:9.0f} images/s")
    print(f"single process, seeded per sample:   {seeded:9.0f} images/s  ({seeded / raw:.2f}x of unseeded)")


if __name__ == "__main__":
    main()
