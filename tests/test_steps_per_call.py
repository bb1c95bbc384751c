"""Several optimizer steps per Lightning call (``train.steps_per_call``): the grouped batches,
the fit and the resume are exactly those of one step per call."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from shardtrain.models.inputs import SparseBatch
from shardtrain.training.checkpoints import StepCheckpoint
from shardtrain.api import run_stages
from shardtrain.config import Config, DataConfig, MLPConfig, TrainConfig, load_config
from shardtrain.data.datamodule import ShardDataModule
from shardtrain.core.errors import ShardtrainError
from shardtrain.training.stage import build_module, steps_per_call
from shardtrain.shards.reader import read_index
from tests.test_datamodule_core import data_cfg, make_shards

# 203 rows, batch 8 -> 26 batches per epoch: groups of 4 leave a last group of 2.
SIZES = [100, 100, 3]


def _dm(train_dir: Path, group: int, **kw) -> ShardDataModule:
    return ShardDataModule.from_config(train_dir, None, None, data_cfg(**kw), seed=3, steps_per_call=group)


def _flat(items: list) -> list[dict]:
    return [b for item in items for b in (item if isinstance(item, list) else [item])]


@pytest.mark.parametrize("sparse", [False, True])
def test_groups_are_the_single_batches_in_order(tmp_path: Path, sparse: bool) -> None:
    train = make_shards(tmp_path / "train", SIZES, sparse=sparse)
    single, grouped = _dm(train, 1), _dm(train, 4)
    for dm in (single, grouped):
        dm.setup("fit")
    for epoch in (0, 1):
        single.set_epoch(epoch)
        grouped.set_epoch(epoch)
        ones, groups = list(single.train_dataloader()), list(grouped.train_dataloader())
        assert len(groups) == len(grouped.train_dataloader()) == 7  # ceil(26 / 4)
        assert [len(g) for g in groups] == [4] * 6 + [2]
        assert grouped.train_dataloader().steps == len(ones) == 26
        flat = _flat(groups)
        assert len(flat) == len(ones)
        for a, b in zip(ones, flat):
            if sparse:
                assert isinstance(b["x"], SparseBatch)
                assert all(torch.equal(u, v) for u, v in zip(a["x"], b["x"]))
            for key in ("y", "w", "sample_id") if sparse else ("x", "y", "w", "sample_id"):
                assert torch.equal(a[key], b[key]), key
        assert grouped.state_dict()["batches_done"] == 26


def test_state_counts_whole_groups_and_resumes_on_a_boundary(tmp_path: Path) -> None:
    train = make_shards(tmp_path / "train", SIZES)
    dm = _dm(train, 4)
    dm.setup("fit")
    dm.set_epoch(0)
    it = iter(dm.train_dataloader())
    first = [next(it), next(it)]
    state = dm.state_dict()
    assert state["batches_done"] == 8 and state["steps_per_call"] == 4
    rest = list(it)

    resumed = _dm(train, 4)
    resumed.setup("fit")
    resumed.load_state_dict(state)
    again = list(resumed.train_dataloader())
    assert [len(g) for g in again] == [len(g) for g in rest]
    for a, b in zip(_flat(rest), _flat(again)):
        assert torch.equal(a["sample_id"], b["sample_id"])
    assert len(_flat(first)) == 8

    other = _dm(train, 2)  # a different grouping cannot continue this epoch
    other.setup("fit")
    other.load_state_dict(state)
    with pytest.raises(ShardtrainError, match="steps_per_call 4"):
        list(other.train_dataloader())


def test_ranks_get_the_same_groups(tmp_path: Path) -> None:
    """Under DDP every rank has the same batch count, so the same number of groups (equal steps)."""
    train = make_shards(tmp_path / "train", SIZES)  # 203 rows: 102 per rank, the last rank padded
    lengths = []
    for rank in (0, 1):
        dm = ShardDataModule.from_config(train, None, None, data_cfg(), steps_per_call=4, rank=rank, world_size=2)
        dm.setup("fit")
        dm.set_epoch(0)
        lengths.append([len(g) for g in dm.train_dataloader()])
    assert lengths[0] == lengths[1] == [4, 4, 4, 1]  # 13 batches of 8


def _cfg(**train) -> Config:
    base = dict(optimizer="adamw", lr=0.05, weight_decay=0.01, schedule="onecycle", max_epochs=3,
                log_every_n_steps=5, accelerator="cpu", devices=1)
    return Config(model=MLPConfig(hidden=(16,), dropout=0.3), train=TrainConfig(**{**base, **train}),
                  data=DataConfig(batch_size=8, device_cache="cpu", val_fraction=0.0), seed=5)


def _fit(train_dir: Path, cfg: Config, callbacks=(), max_steps: int = -1):
    pl.seed_everything(cfg.seed, verbose=False)
    module = build_module(cfg, read_index(train_dir))
    dm = ShardDataModule.from_config(train_dir, None, None, cfg.data, seed=cfg.seed, steps_per_call=steps_per_call(cfg))
    trainer = pl.Trainer(max_epochs=cfg.train.max_epochs, max_steps=max_steps, accelerator="cpu", devices=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, callbacks=list(callbacks))
    trainer.fit(module, datamodule=dm)
    return trainer, module, dm


def _onecycle_lr_after(total: int) -> float:
    """The LR of a OneCycle schedule over ``total`` steps after all of them were taken."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=total, cycle_momentum=False)
    for _ in range(total):
        opt.step()
        sched.step()
    return opt.param_groups[0]["lr"]


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_grouped_fit_equals_one_step_per_call(tmp_path: Path, schedule: str) -> None:
    """Dropout, AdamW and the LR schedule: bit-identical weights, the same global step."""
    train = make_shards(tmp_path / "train", SIZES, width=12)
    results = []
    for group in (1, 4):
        trainer, module, _ = _fit(train, _cfg(steps_per_call=group, schedule=schedule))
        results.append((trainer.global_step, module.state_dict(), trainer.optimizers[0].param_groups[0]["lr"]))
    (step_a, weights_a, lr_a), (step_b, weights_b, lr_b) = results
    assert step_a == step_b == 3 * 26
    # The schedules ran to their ends: OneCycle over all 78 optimizer steps (it raises when
    # stepped past its total), cosine (T_max = 3 epochs) stepped at the starts of epochs 1 and 2.
    expected = _onecycle_lr_after(78) if schedule == "onecycle" else 0.05 * (1 + math.cos(math.pi * 2 / 3)) / 2
    assert lr_a == lr_b == pytest.approx(expected, rel=1e-6)
    for name, tensor in weights_a.items():
        assert torch.equal(tensor, weights_b[name]), name


def test_grouped_fit_on_sparse_features_equals_one_step_per_call(tmp_path: Path) -> None:
    """Hashed n-gram shards (SparseBatch, EmbeddingBag model): the same weights either way."""
    train = make_shards(tmp_path / "train", SIZES, sparse=True)
    weights = []
    for group in (1, 4):
        trainer, module, _ = _fit(train, _cfg(steps_per_call=group, max_epochs=2))
        assert trainer.global_step == 2 * 26
        weights.append(module.state_dict())
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name


def test_max_steps_is_exact_with_groups(tmp_path: Path) -> None:
    train = make_shards(tmp_path / "train", SIZES, width=12)
    trainer, _, dm = _fit(train, _cfg(steps_per_call=4, schedule="none"), max_steps=29)
    assert trainer.global_step == 29  # 26, then the next group cut to 3 batches (not 30)
    assert dm.state_dict()["batches_done"] == 29 - 26


def test_step_checkpoints_when_a_call_passes_a_multiple(tmp_path: Path) -> None:
    """Groups restart every epoch (26 = 6 x 4 + 2), so multiples of 10 are passed, not hit."""
    train = make_shards(tmp_path / "train", SIZES, width=12)
    ckpt = StepCheckpoint(tmp_path / "ckpt", every_n_steps=10, keep=2)
    _fit(train, _cfg(steps_per_call=4, schedule="none", max_epochs=2), callbacks=[ckpt])
    # global steps after each call: 4 8 12 16 20 24 26 | 30 34 38 42 46 50 52
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert names == ["step-0000042.ckpt", "step-0000050.ckpt"]  # 12 20 30 were pruned (keep 2)
    state = torch.load(tmp_path / "ckpt" / "step-0000042.ckpt", map_location="cpu", weights_only=False)
    assert state["global_step"] == 42 and state["ShardDataModule"]["batches_done"] == 42 - 26


def test_resolution_of_auto_and_refusals() -> None:
    assert steps_per_call(_cfg()) == 16
    assert steps_per_call(_cfg(steps_per_call=3)) == 3
    assert steps_per_call(_cfg(devices=2, strategy="ddp")) == 16
    assert steps_per_call(_cfg(launcher="ray", num_workers=2)) == 1
    with pytest.raises(ShardtrainError, match="train.steps_per_call"):
        steps_per_call(_cfg(launcher="ray", num_workers=2, steps_per_call=4))
    with pytest.raises(ShardtrainError, match="train.steps_per_call"):
        steps_per_call(_cfg().model_copy(update={"train": _cfg().train.model_copy(update={"steps_per_call": -1})}))


def test_batches_already_on_the_device_are_not_walked(tmp_path: Path) -> None:
    train = make_shards(tmp_path / "train", SIZES)
    dm = _dm(train, 4)
    dm.setup("fit")
    dm.set_epoch(0)
    group = next(iter(dm.train_dataloader()))
    assert dm.transfer_batch_to_device(group, torch.device("cpu"), 0) is group
    moved = dm.transfer_batch_to_device(group, torch.device("meta"), 0)  # elsewhere: Lightning's move
    assert moved is not group and moved[0]["x"].device.type == "meta" and moved[3]["sample_id"].device.type == "meta"


@pytest.mark.parametrize("listen", [False, True])
def test_gradient_clipping_bounds_every_step(tmp_path: Path, listen: bool) -> None:
    """train.gradient_clip_norm, on the lean path and through Lightning's hooks alike."""
    train = make_shards(tmp_path / "train", SIZES, width=12)
    norms: list[float] = []

    class Watch(pl.Callback):  # listening to a step hook turns the lean path off
        def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
            norms.append(float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in module.parameters()]))))

    cfg = _cfg(steps_per_call=4, schedule="none", optimizer="sgd", momentum=0.0, weight_decay=0.0, max_epochs=1,
               gradient_clip_norm=0.01)
    callbacks = [Watch()] if listen else []
    trainer, module, _ = _fit(train, cfg, callbacks=callbacks)
    assert module.lean_steps is (not listen)
    if listen:
        assert len(norms) == 26 and max(norms) <= 0.01 * (1 + 1e-4)
    # SGD lr 0.05 with every gradient clipped to norm 0.01: each step moves the weights by <= 5e-4
    unclipped = _fit(train, cfg.model_copy(update={"train": cfg.train.model_copy(update={"gradient_clip_norm": 0.0})}))[1]
    pl.seed_everything(cfg.seed, verbose=False)
    start = build_module(cfg, read_index(train))  # the same seeded initial weights
    moved = torch.cat([(a - b).flatten() for a, b in zip(module.parameters(), start.parameters())]).norm()
    moved_free = torch.cat([(a - b).flatten() for a, b in zip(unclipped.parameters(), start.parameters())]).norm()
    assert moved <= 26 * 0.05 * 0.01 * (1 + 1e-4) < moved_free


def test_unit_weight_batches_are_flagged_only_when_true(tmp_path: Path) -> None:
    """``unit_weights``: no padding row, no weight column, no missing label in the batch's split."""
    plain = make_shards(tmp_path / "plain", SIZES)  # 203 rows
    dm = ShardDataModule.from_config(plain, None, None, data_cfg(), rank=1, world_size=2)  # 102 per rank, 1 padding row last
    dm.setup("fit")
    dm.set_epoch(0)
    batches = list(dm.train_dataloader())
    assert [b["unit_weights"] for b in batches] == [True] * 12 + [False]  # 13 batches, padding in the last
    assert all(bool((b["w"] == 1).all()) for b in batches[:12]) and not bool((batches[-1]["w"] == 1).all())
    weighted = make_shards(tmp_path / "weighted", SIZES, weights=True)
    dm = _dm(weighted, 1)
    dm.setup("fit")
    dm.set_epoch(0)
    assert not any(b["unit_weights"] for b in dm.train_dataloader())


def test_unit_weight_loss_equals_the_weighted_loss(tmp_path: Path) -> None:
    train = make_shards(tmp_path / "train", SIZES, width=12)
    module = build_module(_cfg(), read_index(train))
    dm = _dm(train, 1)
    dm.setup("fit")
    dm.set_epoch(0)
    batch = next(iter(dm.train_dataloader()))
    assert batch["unit_weights"] is True
    torch.manual_seed(0)  # the same dropout masks for both
    plain = module.training_loss(batch)
    torch.manual_seed(0)
    weighted = module.training_loss({**batch, "unit_weights": False})
    torch.testing.assert_close(plain, weighted)


def test_config_batch_augment_is_the_datamodules_and_changes_training(tmp_path):
    """``data.batch_augment`` reaches the DataModule (one place for it) and changes what is trained."""
    from shardtrain.augment.image import BatchAugment
    from shardtrain.training.stage import build_datamodule

    prepared = tmp_path / "out"
    run_stages(load_config("demo", ["augment.copies=0"]), "prepare", prepared, executor="local")
    train_dir = prepared / "shards" / "prepare" / "train"
    dirs = {"train": train_dir, "val": None, "test": None}
    weights = {}
    for enabled in (False, True):
        cfg = load_config("demo", ["augment.copies=0", "train.max_epochs=1", "data.val_fraction=0",
                                   f"data.batch_augment.enabled={str(enabled).lower()}", "data.batch_augment.shift=1"])
        dm = build_datamodule(cfg, dirs, None)
        assert isinstance(dm.batch_augment, BatchAugment) is enabled
        module = build_module(cfg, read_index(train_dir))
        pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False).fit(module, datamodule=dm)
        weights[enabled] = torch.cat([p.detach().flatten() for p in module.parameters()])
    assert not torch.equal(weights[False], weights[True])  # the augmented run trained on other inputs
