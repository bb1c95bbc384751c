"""A K=8 bagging ensemble on the CPU: our batched BaggingEnsemble vs K members trained one by one.

``ensemble_vmap_cpu``: one epoch (``--quick``: 20 batches) of the fashion-mnist preset
with ``model.kind=bagging, members=8, impl=auto`` (``sequential`` on the CPU: the members'
forward passes in one autograd graph, one fused AdamW step) through our Lightning stack, against the same
eight members trained one after another by a plain PyTorch loop over the same batches
(the epoch order of ``shardtrain.data.batching.plan_epoch``), each with its own Poisson(1)
bootstrap weights from ``shardtrain.models.bagging.bootstrap_weights`` and its own AdamW. Same
784-512-512-10 members, batch 512, no dropout, no schedule. CPU seconds of this process,
one torch thread, best of N. Goal: ratio >= 1.0 (the ensemble is no slower than the loop).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from benchmarks.bench_train import lightning_fit
from benchmarks.common import best_of, fashion_dirs, load_avg, quiet_lightning, row, set_threads

MEMBERS = 8
BATCH = 512
LR, WEIGHT_DECAY = 2e-3, 0.01  # the fashion-mnist preset's AdamW


def overrides(max_steps: int | None) -> list[str]:
    """The preset as a K=8 bagging ensemble on the CPU, one epoch (or ``max_steps`` batches)."""
    steps = [f"train.max_steps={max_steps}"] if max_steps is not None else []
    return ["model.kind=bagging", f"model.members={MEMBERS}", "model.impl=auto", "model.dropout=0",
            f"data.batch_size={BATCH}", "data.val_fraction=0", "data.device_cache=cpu", "train.schedule=none",
            "train.max_epochs=1", "train.accelerator=cpu", "train.devices=1"] + steps


def sequential_members(train_dir: Path, max_steps: int | None, seed: int = 0) -> None:
    """The baseline: K plain PyTorch loops, one member after another, bootstrap-weighted loss."""
    import torch
    from torch.nn import functional as F

    from shardtrain.models.bagging import bootstrap_weights, member_seed
    from shardtrain.models.mlp import MLP
    from shardtrain.data.batching import plan_epoch
    from shardtrain.shards import ShardSet

    ss = ShardSet(train_dir)
    x = torch.from_numpy(ss.concat("x").reshape(ss.rows, -1).copy())  # (N, 784) uint8
    y = torch.from_numpy(ss.concat("label").astype("int64"))  # (N,)
    ids = torch.from_numpy(ss.concat("sample_id").astype("int64"))  # (N,)
    plan = plan_epoch(len(x), BATCH, 0, 1, seed, 0, shuffle=True)
    steps = plan.steps if max_steps is None else min(plan.steps, max_steps)
    for k in range(MEMBERS):
        torch.manual_seed(member_seed(seed, k))
        model = MLP(x.shape[1], (512, 512), 10)
        opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        member = torch.tensor([k])
        for step in range(steps):
            idx = plan.indices[step * BATCH:(step + 1) * BATCH]  # (B,)
            counts = bootstrap_weights(seed, member, ids.index_select(0, idx))[0]  # (B,) Poisson(1) counts
            per = F.cross_entropy(model(x.index_select(0, idx).float().mul_(1 / 255)), y.index_select(0, idx),
                                  reduction="none")  # (B,)
            loss = (per * counts).sum() / len(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def run(quick: bool, only: Sequence[str] | None = None, smoke: bool = False, threads: int = 1) -> list[dict]:
    """The ``ensemble_vmap_cpu`` row."""
    if only is not None and "ensemble_vmap_cpu" not in only:
        return []
    set_threads(threads)
    quiet_lightning()
    dirs = fashion_dirs()
    steps = 2 if smoke else 20 if quick else None
    t = best_of({
        "ours": lambda: lightning_fit(overrides(steps), {"train": dirs["train"]}),
        "sequential": lambda: sequential_members(dirs["train"], steps),
    }, 1 if smoke else 2)
    ours, base = t["ours"], t["sequential"]
    unit = f"CPU s / {steps} steps" if steps is not None else "CPU s / epoch"
    return [row("ensemble_vmap_cpu", ours["cpu"], base["cpu"], unit, base["cpu"] / ours["cpu"], "ratio >= 1.0",
                members=MEMBERS, batch=BATCH, threads=threads, impl="sequential (auto on CPU)",
                ours_wall_s=round(ours["wall"], 3), baseline_wall_s=round(base["wall"], 3), load_avg=load_avg())]
