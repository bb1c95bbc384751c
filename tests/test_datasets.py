"""The dataset protocol: one registered class per dataset.name, typed options, resources apart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shardtrain.config import from_dict, to_dict
from shardtrain.core.errors import ShardtrainError
from shardtrain.datasets import DATASETS, FILES, RESOURCES, Dataset

REQUIRED = {"image-folder": {"csv": "a.csv"}, "http-log": {"path": "a.log"}, "table": {"path": "a.csv", "label": "y"},
            "text": {"path": "a.tsv"}}  # kinds whose options have no complete default


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_kind_round_trips_as_its_own_class(name: str) -> None:
    raw = {"dataset": {"name": name, **({"options": REQUIRED[name]} if name in REQUIRED else {})}}
    cfg = from_dict(raw)
    assert type(cfg.dataset) is DATASETS[name] and isinstance(cfg.dataset, Dataset)
    assert from_dict(to_dict(cfg)) == cfg
    assert cfg.dataset.description and cfg.dataset.modality in ("image", "text", "table")


def test_resources_are_located_but_never_run() -> None:
    assert set(RESOURCES).isdisjoint(DATASETS) and set(RESOURCES) <= set(FILES)
    for name in RESOURCES:
        with pytest.raises(ShardtrainError, match="is a resource"):
            from_dict({"dataset": {"name": name}})


def test_options_are_per_kind() -> None:
    with pytest.raises(ShardtrainError, match="unknown config key 'dataset.options.coarse'"):
        from_dict({"dataset": {"name": "mnist", "options": {"coarse": True}}})
    with pytest.raises(ShardtrainError, match="config key 'dataset.options.csv'"):
        from_dict({"dataset": {"name": "image-folder", "options": {"csv": ""}}})
    with pytest.raises(ShardtrainError, match="config key 'dataset.options.test_fraction': must be > 0 and < 1"):
        from_dict({"dataset": {"name": "digits", "options": {"test_fraction": 0}}})


def _image_folder(root: Path, n: int) -> Path:
    """``n`` tiny grayscale PNGs under ``root`` and an annotations CSV (path, label)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = ["path,label"]
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (6, 5), dtype=np.uint8)).save(root / f"im{i}.png")
        rows.append(f"im{i}.png,{'cat' if i % 2 else 'dog'}")
    csv = root / "ann.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv


def test_image_folder_plans_train_and_test_and_writes_shards(tmp_path: Path) -> None:
    from shardtrain.api import run
    from shardtrain.shards import ShardSet

    csv = _image_folder(tmp_path, 7)
    raw = {"dataset": {"name": "image-folder", "options": {"csv": str(csv), "test_csv": str(csv)}},
           "prepare": {"rows_per_shard": 4}}
    out = tmp_path / "out"
    indexes = run(raw, "prepare", out)["prepare"]
    assert set(indexes) == {"train", "test"}
    ss = ShardSet(out / "shards" / "prepare" / "train")
    assert ss.column("x")[0].shape[1:] == (6, 5) and len(ss.column("sample_id")[0]) == 4  # first of two shards
    missing = {"dataset": {"name": "image-folder", "options": {"csv": str(tmp_path / "nope.csv")}}}
    with pytest.raises(ShardtrainError, match="annotations CSV not found"):
        run(missing, "prepare", tmp_path / "out2")
    assert not (tmp_path / "out2").exists()  # planned before the output directory is made
