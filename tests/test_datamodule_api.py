"""ShardDataModule's public constructor: a shard path plus keywords, one-line errors for bad
values, ``from_config`` agreeing with the keywords, batch augmentation, and a fit with a plain
Lightning Trainer and a user's own LightningModule."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from shardtrain.core.errors import ShardtrainError
from shardtrain.data.datamodule import ShardDataModule
from tests.test_datamodule_core import data_cfg, dm_kwargs, epoch_batches, make_shards


@pytest.mark.parametrize("kwargs, match", [
    ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
    ({"batch_size": 2.5}, "batch_size must be an integer >= 1, got 2.5"),
    ({"eval_batch_size": -1}, "eval_batch_size must be an integer >= 1"),
    ({"steps_per_call": 0}, "steps_per_call must be an integer >= 1"),
    ({"device_cache": "disk"}, "device_cache must be one of auto, gpu, cpu, none, got 'disk'"),
    ({"val_fraction": 1.0}, r"val_fraction must be a number in \[0, 1\), got 1.0"),
    ({"val_fraction": "0.1"}, r"val_fraction must be a number in \[0, 1\)"),
    ({"seed": "zero"}, "seed must be an integer, got 'zero'"),
    ({"batch_augment": 3}, "batch_augment must be callable"),
])
def test_bad_values_fail_in_one_line(tmp_path: Path, kwargs: dict, match: str) -> None:
    """Every bad keyword fails at construction with a one-line ShardtrainError naming it."""
    with pytest.raises(ShardtrainError, match=match) as err:
        ShardDataModule(tmp_path, **kwargs)
    assert "\n" not in str(err.value)


def test_no_directory_at_all_fails() -> None:
    with pytest.raises(ShardtrainError, match="give at least one shard directory"):
        ShardDataModule()


def test_from_config_matches_keywords(tmp_path: Path) -> None:
    """``from_config(data)`` reads the same options as the keywords: identical batches and state."""
    d = make_shards(tmp_path / "train", [30, 17], copies=1)
    a = ShardDataModule(d, **dm_kwargs(batch_size=5, val_fraction=0.2), seed=9)
    b = ShardDataModule.from_config(d, None, None, data_cfg(batch_size=5, val_fraction=0.2), seed=9)
    a.setup("fit"), b.setup("fit")
    assert a.carve_report == b.carve_report and a.carve_report["val_rows"] > 0
    for x, y in zip(epoch_batches(a, 1), epoch_batches(b, 1), strict=True):
        assert torch.equal(x["sample_id"], y["sample_id"]) and torch.equal(x["x"], y["x"])
    assert a.state_dict() == b.state_dict()
    assert b.batch_size == 5 and b.device_cache == "cpu" and b.val_fraction == 0.2


def test_batch_augment_sees_global_steps_on_training_batches_only(tmp_path: Path) -> None:
    """``batch_augment(x, step)`` changes training ``x`` only, with ``step`` counted from epoch 0."""
    d = make_shards(tmp_path / "train", [20])
    steps_seen: list[int] = []

    def shift(x: torch.Tensor, step: int) -> torch.Tensor:
        steps_seen.append(step)
        return x + 1000.0

    dm = ShardDataModule(d, test=d, **dm_kwargs(batch_size=8), batch_augment=shift)
    dm.setup()
    batches = epoch_batches(dm, 2)  # 20 rows / 8 = 3 batches per epoch
    assert steps_seen == [6, 7, 8]
    assert all(bool((b["x"] >= 1000).all()) for b in batches)
    assert all(bool((b["x"] < 1000).all()) for b in dm.test_dataloader())


class WeightedLinear(pl.LightningModule):
    """A user's own module: the loss weights by ``w`` as the batch contract demands."""

    def __init__(self, width: int, classes: int) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(width, classes)
        self.losses: list[float] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = F.cross_entropy(self.lin(batch["x"]), batch["y"], reduction="none")  # (B,)
        loss = (loss * batch["w"]).sum() / batch["w"].sum().clamp_min(1.0)
        self.losses.append(float(loss.detach()))
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.5)


def test_plain_trainer_fits_from_a_path_and_keywords(tmp_path: Path) -> None:
    """Path + keywords -> a plain ``pl.Trainer`` fit; it takes the planned steps and learns."""
    d = make_shards(tmp_path / "train", [64, 40], n_classes=3)
    dm = ShardDataModule(d, batch_size=16, device_cache="cpu", val_fraction=0.0, seed=1)
    model = WeightedLinear(dm.feature_dim, len(dm.labels["label"]["classes"]))
    trainer = pl.Trainer(max_epochs=4, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 4 * 7  # ceil(104 / 16) steps per epoch
    assert dm.state_dict()["epoch"] == 3 and dm.state_dict()["batches_done"] == 7
    first, last = sum(model.losses[:7]) / 7, sum(model.losses[-7:]) / 7
    assert last < first
