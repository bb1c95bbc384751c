"""One CPU training epoch at batch 64: our stack vs the course's loop and a hand-written loop.

``epoch_cpu_bs64``: shards -> ShardDataModule -> ShardTrainModule -> Lightning
``Trainer.fit`` (built exactly as ``shardtrain.training.stage`` builds it: ``build_datamodule``,
``build_module``, ``trainer_kwargs``), against the course's training loop: a per-sample
``Dataset`` returning ``ToTensor()(PIL image)``, ``DataLoader(batch_size=64, shuffle=True)``,
the 784-512-512-10 MLP, ``CrossEntropyLoss`` and ``SGD(lr=1e-3)``. Goal: >= 2x.

``lightning_overhead_cpu``: the same epoch of ours against a hand-written batched loop (one
``index_select`` per batch from a contiguous uint8 tensor, plain PyTorch forward, backward,
step, same model and optimizer). Goal: ours <= 1.15x the hand loop, i.e. ratio >= 0.87.

All three read the same Fashion-MNIST shards, use one torch thread and are timed in CPU
seconds of this process (best of N, interleaved), construction included (Trainer +
DataModule setup for ours, DataLoader for the course, the contiguous tensor for the hand
loop). ``--quick`` stops every loop after 300 batches.

    PYTHONPATH=. python -m benchmarks run --only epoch_cpu_bs64 lightning_overhead_cpu [--quick]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import (best_of, course_dataset, fashion_dirs, load_avg, quiet_lightning, row, scratch_dir,
                               set_threads)

BATCH = 64
NAMES = ("epoch_cpu_bs64", "lightning_overhead_cpu")
# The course's setup in config terms: plain SGD at 1e-3, no momentum, no dropout, no schedule.
COURSE_OVERRIDES = [
    f"data.batch_size={BATCH}", "data.val_fraction=0", "data.device_cache=cpu", "model.dropout=0",
    "train.optimizer=sgd", "train.lr=0.001", "train.momentum=0", "train.weight_decay=0", "train.schedule=none",
    "train.max_epochs=1", "train.accelerator=cpu", "train.devices=1",
]


def lightning_fit(overrides: Sequence[str], dirs: dict[str, Path | None], callbacks: Sequence[Any] = (),
                  test: bool = False) -> tuple[Any, Any, Any, float]:
    """Fit the fashion-mnist preset with ``overrides`` the way ``shardtrain.training.stage.train`` does.

    Returns ``(trainer, module, datamodule, fit_seconds)``; like ``shardtrain.training.stage`` the
    seconds are those of ``trainer.fit`` (wall, after a CUDA synchronise). ``dirs`` has
    ``train`` and optionally ``val`` / ``test``; ``callbacks`` are appended to the ones
    ``trainer_kwargs`` configures. With ``test`` the test split is attached for ``trainer.test``.
    """
    import time

    import pytorch_lightning as pl
    import torch

    from shardtrain.config import load_config
    from shardtrain.training.stage import build_datamodule, build_module, trainer_kwargs
    from shardtrain.shards.reader import read_index

    cfg = load_config("fashion-mnist", list(overrides))
    split_dirs = {"train": dirs["train"], "val": dirs.get("val"), "test": dirs.get("test") if test else None}
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = build_datamodule(cfg, split_dirs, None)
    module = build_module(cfg, read_index(split_dirs["train"]))
    kwargs = trainer_kwargs(cfg, scratch_dir("run_"), has_val=split_dirs["val"] is not None or cfg.data.val_fraction > 0)
    kwargs["callbacks"] = list(kwargs["callbacks"]) + list(callbacks)
    trainer = pl.Trainer(**kwargs)
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return trainer, module, dm, time.perf_counter() - t0


def course_epoch(images: Any, labels: Any, max_steps: int | None) -> None:
    """The course's loop: per-sample PIL + ToTensor Dataset, DataLoader(64, shuffle), SGD(1e-3)."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    class NeuralNetwork(nn.Module):
        """The course's 784-512-512-10 MLP."""

        def __init__(self) -> None:
            super().__init__()
            self.flatten = nn.Flatten()
            self.linear_relu_stack = nn.Sequential(nn.Linear(28 * 28, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                                                   nn.Linear(512, 10))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear_relu_stack(self.flatten(x))

    torch.manual_seed(0)
    dataloader = DataLoader(course_dataset(images, labels), batch_size=BATCH, shuffle=True)
    model, loss_fn = NeuralNetwork(), nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    model.train()
    for batch, (X, y) in enumerate(dataloader):
        if max_steps is not None and batch >= max_steps:
            break
        loss = loss_fn(model(X), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def hand_epoch(train_dir: Path, max_steps: int | None) -> None:
    """A hand-written batched loop: contiguous uint8 (N, 784), one gather per batch, plain PyTorch."""
    import torch
    from torch.nn import functional as F

    from shardtrain.models.mlp import MLP
    from shardtrain.shards import ShardSet

    ss = ShardSet(train_dir)
    x = torch.from_numpy(ss.concat("x").reshape(ss.rows, -1).copy())  # (N, 784) uint8
    y = torch.from_numpy(ss.concat("label").astype("int64"))  # (N,)
    torch.manual_seed(0)
    model = MLP(x.shape[1])
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    steps = -(-len(x) // BATCH) if max_steps is None else min(max_steps, -(-len(x) // BATCH))
    for step in range(steps):
        idx = order[step * BATCH:(step + 1) * BATCH]  # (B,)
        xb = x.index_select(0, idx).float().mul_(1 / 255)  # (B, 784)
        loss = F.cross_entropy(model(xb), y.index_select(0, idx))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def ours_epoch(dirs: dict[str, Path], max_steps: int | None) -> None:
    """Our stack, as ``shardtrain.training.stage`` runs it, for one epoch (or ``max_steps`` batches)."""
    steps = [f"train.max_steps={max_steps}"] if max_steps is not None else []
    lightning_fit(COURSE_OVERRIDES + steps, {"train": dirs["train"]})


def measure(quick: bool, smoke: bool = False) -> dict[str, dict[str, float]]:
    """Best CPU / wall seconds of the three loops: ``{"ours", "hand", "course": {"cpu", "wall"}}``."""
    from shardtrain.shards import ShardSet

    quiet_lightning()
    dirs = fashion_dirs()
    ss = ShardSet(dirs["train"])
    images, labels = ss.concat("x"), ss.concat("label")  # (N, 28, 28) uint8, (N,) int64
    steps = 5 if smoke else 300 if quick else None
    repeats = 1 if smoke else 3 if quick else 5  # best of: this VM's speed swings +-15% within seconds
    loops: dict[str, Callable[[], None]] = {
        "course": lambda: course_epoch(images, labels, steps),
        "hand": lambda: hand_epoch(dirs["train"], steps),
        "ours": lambda: ours_epoch(dirs, steps),
    }
    result = best_of(loops, repeats)
    result["_steps"] = {"steps": steps if steps is not None else -(-len(labels) // BATCH)}
    return result


def run(quick: bool, only: Sequence[str] | None = None, smoke: bool = False, threads: int = 1) -> list[dict]:
    """The rows ``epoch_cpu_bs64`` and ``lightning_overhead_cpu`` (both from one measurement)."""
    set_threads(threads)
    t = measure(quick, smoke)
    steps = t.pop("_steps")["steps"]
    unit = f"CPU s / {steps} steps" if (quick or smoke) else "CPU s / epoch"
    ours, hand, course = t["ours"], t["hand"], t["course"]
    extra = {"threads": threads, "batch": BATCH, "steps": steps, "load_avg": load_avg(),
             "ours_wall_s": round(ours["wall"], 3)}
    rows = [
        row("epoch_cpu_bs64", ours["cpu"], course["cpu"], unit, course["cpu"] / ours["cpu"], "ratio >= 2",
            baseline_wall_s=round(course["wall"], 3), baseline_is="course loop: PIL+ToTensor Dataset, DataLoader",
            **extra),
        row("lightning_overhead_cpu", ours["cpu"], hand["cpu"], unit, hand["cpu"] / ours["cpu"], "ratio >= 1 / 1.15",
            baseline_wall_s=round(hand["wall"], 3), baseline_is="hand-written loop, one gather per batch",
            **extra),
    ]
    return [r for r in rows if only is None or r["name"] in only]


if __name__ == "__main__":
    import sys

    from benchmarks.common import format_table

    print(format_table(run("--quick" in sys.argv)))
