"""ShardDataModule inside a real Lightning Trainer (CPU): mid-epoch resume is exact, and
carved validation reaches ``validation_step``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from shardtrain.data.datamodule import ShardDataModule, load_audit
from tests.test_datamodule_core import dm_kwargs, make_shards


class TinyClassifier(pl.LightningModule):
    """A linear classifier with seeded init; records the ids it trains and validates on."""

    def __init__(self, width: int = 6, classes: int = 3) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.lin = torch.nn.Linear(width, classes)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(classes, width, generator=gen) * 0.1)
            self.lin.bias.zero_()
        self.trained: list[torch.Tensor] = []
        self.validated: list[torch.Tensor] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.trained.append(batch["sample_id"][batch["w"] > 0])
        loss = F.cross_entropy(self.lin(batch["x"]), batch["y"], reduction="none")  # (B,)
        return (loss * batch["w"]).sum() / batch["w"].sum().clamp_min(1.0)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.5, momentum=0.9)


class WithValidation(TinyClassifier):
    """The same model with a validation step that records the non-padding ids."""

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.validated.append(batch["sample_id"][batch["w"] > 0])


class SaveAndStop(pl.Callback):
    """Save a checkpoint after optimizer step ``step`` and stop there (a simulated crash)."""

    def __init__(self, step: int, path: Path) -> None:
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)
            trainer.should_stop = True


def trainer(epochs: int, callbacks: list | None = None, accelerator: str = "cpu") -> pl.Trainer:
    """A quiet single-device Trainer."""
    return pl.Trainer(max_epochs=epochs, accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks or [],
                      num_sanity_val_steps=0)


def audit_ids(audit_dir: Path) -> dict[int, list[np.ndarray]]:
    """Per epoch, the id arrays of every training pass recorded in an audit directory."""
    out: dict[int, list[np.ndarray]] = {}
    for rank in load_audit(audit_dir):
        for p in rank["passes"]:
            out.setdefault(p["epoch"], []).append(p["ids"])
    return out


def check_resume(tmp_path: Path, stop_at: int, accelerator: str = "cpu", cache: str = "cpu") -> None:
    """Stopped at step k and resumed from its checkpoint == uninterrupted: weights and samples."""
    d = make_shards(tmp_path / "train", [40, 23])  # 63 rows, batch 8 -> 8 steps per epoch
    cfg = dm_kwargs(audit=True, device_cache=cache)

    full = TinyClassifier()
    trainer(2, accelerator=accelerator).fit(
        full, datamodule=ShardDataModule(d, **cfg, seed=3, audit_dir=tmp_path / "a"))

    ckpt = tmp_path / "step.ckpt"
    part1 = TinyClassifier()
    trainer(2, [SaveAndStop(stop_at, ckpt)], accelerator=accelerator).fit(
        part1, datamodule=ShardDataModule(d, **cfg, seed=3, audit_dir=tmp_path / "b1"))
    part2 = TinyClassifier()
    dm2 = ShardDataModule(d, **cfg, seed=123, audit_dir=tmp_path / "b2")  # seed comes from the ckpt
    trainer(2, accelerator=accelerator).fit(part2, datamodule=dm2, ckpt_path=ckpt)

    assert len(part1.trained) == stop_at
    assert len(part1.trained) + len(part2.trained) == len(full.trained) == 16
    for a, b in zip(full.trained, part1.trained + part2.trained):
        assert torch.equal(a, b)
    for pa_, pb in zip(full.parameters(), part2.parameters()):
        assert torch.equal(pa_, pb)
    whole, b1, b2 = audit_ids(tmp_path / "a"), audit_ids(tmp_path / "b1"), audit_ids(tmp_path / "b2")
    for epoch in (0, 1):
        ref = np.concatenate(whole[epoch])
        got = np.concatenate(b1.get(epoch, []) + b2.get(epoch, []))
        assert len(np.unique(got)) == len(got) == 63
        np.testing.assert_array_equal(np.sort(got), np.sort(ref))
    assert dm2.state_dict() == {"epoch": 1, "batches_done": 8, "seed": 3, "world_size": 1, "batch_size": 8,
                                 "steps_per_call": 1}


@pytest.mark.parametrize("stop_at", [3, 8, 11])  # mid epoch 0, end of epoch 0, mid epoch 1 (8 steps/epoch)
def test_resume_mid_epoch_matches_uninterrupted(tmp_path: Path, stop_at: int) -> None:
    """Stopped at step k and resumed from its checkpoint == uninterrupted: weights and samples."""
    check_resume(tmp_path, stop_at)


def test_fit_with_carved_validation(tmp_path: Path) -> None:
    """Lightning validates on the carved split: every val row once per epoch, none trained on."""
    d = make_shards(tmp_path / "train", [50, 30], copies=1)
    dm = ShardDataModule(d, **dm_kwargs(val_fraction=0.2, device_cache="none"), seed=2)
    model = WithValidation()
    trainer(1).fit(model, datamodule=dm)
    val_ids = torch.cat(model.validated)
    assert len(val_ids) == dm.carve_report["val_rows"] > 0
    trained_sources = torch.cat(model.trained) % (1 << 32)
    assert not set(trained_sources.tolist()) & set(val_ids.tolist())
