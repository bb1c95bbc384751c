"""Defaults that fit the data: data.batch_size auto, a run self-contained for predict, onecycle resume.

Synthetic shards from ``tests.test_monitor.write_split`` (8,000 training rows where the
auto batch size is the point, a few hundred elsewhere), one epoch, CPU.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from shardtrain.config import PRESETS, DataConfig, from_dict, load_config, load_raw
from shardtrain.core.errors import ShardtrainError
from shardtrain.data.datamodule import ShardDataModule, auto_batch_size, steps_per_epoch
from shardtrain.training.defaults import PREPARE_INDEX
from shardtrain.training.stage import train
from tests.test_monitor import make_out, write_split


def _cfg(**sections: dict) -> object:
    base = {"name": "defaults", "data": {"device_cache": "cpu"}, "model": {"kind": "mlp", "hidden": [16]},
            "train": {"max_epochs": 1, "accelerator": "cpu", "cpu_threads": 1}}
    for key, value in sections.items():
        base[key] = {**base[key], **value}
    return from_dict(base)


@pytest.mark.parametrize("rows,ranks", [(8000, 1), (8000, 2), (60000, 1), (3000, 1), (500, 1), (10**7, 4)])
def test_auto_batch_size_is_the_largest_power_of_two_with_100_steps(rows: int, ranks: int) -> None:
    size = auto_batch_size(rows, ranks)
    assert size & (size - 1) == 0 and 16 <= size <= 512
    if size > 16:
        assert steps_per_epoch(rows, size, ranks) >= 100  # enough steps per epoch ...
    if size < 512:
        assert steps_per_epoch(rows, 2 * size, ranks) < 100  # ... and the next larger batch would not give them


def test_eight_thousand_rows_get_64_a_batch_and_the_value_kept_otherwise(tmp_path: Path, caplog) -> None:
    assert DataConfig().batch_size == "auto"
    directory = write_split(tmp_path / "train", "train", 8000, seed=1)
    with caplog.at_level(logging.INFO, logger="shardtrain"):
        dm = ShardDataModule.from_config(directory, None, None, DataConfig(val_fraction=0.0, device_cache="cpu"))
    assert dm.batch_size == 64 and steps_per_epoch(8000, dm.batch_size) >= 100
    assert "data.batch_size auto -> 64 (8,000 training rows, 125 steps per epoch)" in caplog.text
    explicit = ShardDataModule.from_config(directory, None, None, DataConfig(batch_size=200, val_fraction=0.0))
    assert explicit.batch_size == 200


@pytest.mark.parametrize("name", PRESETS)
def test_presets_keep_their_batch_size(name: str) -> None:
    from shardtrain.datasets import DATASETS

    raw = load_raw(name)
    kind = DATASETS[raw["dataset"]["name"]]
    recipe = (kind.recipe.get("data") or {}).get("batch_size", "auto")  # a kind's recipe sits under the preset
    assert load_config(name).data.batch_size == (raw.get("data") or {}).get("batch_size", recipe)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_out(tmp_path_factory.mktemp("auto"), train_rows=8000, val_rows=200)


def test_train_resolves_auto_records_it_and_copies_the_prepare_index(big: Path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="shardtrain"):
        result = train(_cfg(), big)
    run_dir = result.run_dir
    assert "data.batch_size auto -> 64 (8,000 training rows, 125 steps per epoch)" in caplog.text
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["batch_size"] == 64
    assert result.datamodule.batch_size == 64 and result.trainer.global_step == 125
    info = json.loads((run_dir / "run.json").read_text())
    assert info["resolved"]["data.batch_size"] == {"value": 64, "from": "auto", "training_rows": 8000, "ranks": 1,
                                                   "steps_per_epoch": 125}
    prepare = big / "shards" / "prepare"
    assert info["shard_dirs"] == {s: str((prepare / s).resolve()) for s in ("train", "val", "test")}
    assert all(Path(p).is_absolute() for p in info["shard_dirs"].values())
    copied = json.loads((run_dir / PREPARE_INDEX).read_text())
    assert copied == json.loads((prepare / "train" / "_index.json").read_text())


def test_an_explicit_batch_size_is_kept(big: Path) -> None:
    result = train(_cfg(data={"batch_size": 400}), big)
    info = json.loads((result.run_dir / "run.json").read_text())
    resolved = info["resolved"]["data.batch_size"]
    assert resolved["value"] == 400 and resolved["from"] == "config"
    assert yaml.safe_load((result.run_dir / "config.yaml").read_text())["data"]["batch_size"] == 400
    assert result.trainer.global_step == 20  # 8,000 / 400


def test_resuming_onecycle_with_more_epochs_is_one_line_naming_the_key(tmp_path: Path) -> None:
    out = make_out(tmp_path, train_rows=300, val_rows=60)
    train(_cfg(train={"schedule": "onecycle"}), out)
    with pytest.raises(ShardtrainError, match=r"train\.max_epochs.*onecycle") as err:
        train(_cfg(train={"schedule": "onecycle", "max_epochs": 2, "resume": "last"}), out)
    assert "\n" not in str(err.value)


def test_checkpoint_score_ranks_like_the_monitor() -> None:
    from shardtrain.training.defaults import checkpoint_score

    epochs = [{"val_loss": 0.5, "val_accuracy": 0.6}, {"val_loss": 0.7, "val_accuracy": 0.7}]
    by_accuracy = min(range(2), key=lambda i: checkpoint_score("val_accuracy", "max", epochs[i]))
    by_loss = min(range(2), key=lambda i: checkpoint_score("val_loss", "min", epochs[i]))
    assert (by_accuracy, by_loss) == (1, 0)
    assert checkpoint_score("val_accuracy", "max", {}) == float("inf")


def test_selection_warns_when_the_checkpoint_is_not_the_monitors_best(caplog) -> None:
    from shardtrain.training.defaults import selection

    cfg = _cfg(train={"monitor": "val_accuracy"})
    rows = [{"epoch": 1.0, "val_accuracy": 0.6, "val_loss": 0.5}, {"epoch": 2.0, "val_accuracy": 0.7, "val_loss": 0.6}]
    with caplog.at_level(logging.WARNING, logger="shardtrain"):
        assert selection(cfg, "/r/checkpoints/best.ckpt", 2, rows, True)["value"] == 0.7
        assert not caplog.records
        chosen = selection(cfg, "/r/checkpoints/best.ckpt", 1, rows, True)
    assert chosen == {"monitor": "val_accuracy", "mode": "max", "epoch": 1, "value": 0.6, "checkpoint": "best.ckpt"}
    assert "not the best by val_accuracy (epoch 2" in caplog.text
    assert selection(cfg, "/r/checkpoints/last.ckpt", 2, rows, False)["monitor"] is None  # no validation
