"""Same numbers on every rank and after every resume: dropout seeding and the DDP weight check.

Dropout masks are drawn from a generator reseeded before every optimizer step from
``(seed, rank, global step)``, so they depend only on where training is, not on what ran
before: a run resumed mid-epoch draws exactly the masks the uninterrupted run drew, on
every rank, without storing RNG states. After a DDP fit, :func:`ranks_agree` checks once
that every rank ended with the same weights.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

log = logging.getLogger("shardtrain")


def uses_dropout(model: nn.Module, model_cfg: Any) -> bool:
    """Whether ``model`` draws dropout masks (``model.dropout`` > 0, or any active ``nn.Dropout``).

    The config is asked too because a bagging ensemble's member template is not a registered submodule.
    """
    return float(getattr(model_cfg, "dropout", 0.0)) > 0 or any(
        isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())


def dropout_seed(seed: int, rank: int, step: int) -> int:
    """The generator seed of optimizer step ``step`` on rank ``rank`` (a pure function of the three)."""
    return ((seed * 1_000_003 + rank) * 1_000_000_007 + step) % (1 << 63)


def seed_dropout(device: torch.device, seed: int, rank: int, step: int) -> None:
    """Reseed the generator dropout draws from on ``device`` for ``(seed, rank, step)``."""
    value = dropout_seed(seed, rank, step)
    # Seed only the generator dropout draws from: torch.manual_seed also queues lazy
    # CUDA/XPU/MTIA seeding with a captured stack trace, ~1 ms per step on CPU.
    if device.type == "cuda":
        torch.cuda.default_generators[device.index or 0].manual_seed(value)
    else:
        torch.default_generator.manual_seed(value)


def ranks_agree(module: Any) -> bool | None:
    """Under DDP, whether every rank ends with the same weights (``None`` on one process).

    Ranks start equal and apply the same all-reduced gradients, so any difference means a
    step was not synchronised; it is logged as an error and reported in ``run.json``.
    ``module`` is the LightningModule (its ``all_gather`` is a collective: call on every rank).
    """
    if module.trainer.world_size <= 1:
        return None
    checksum = torch.stack([p.detach().double().sum() for p in module.parameters()]).sum()
    gathered = module.all_gather(checksum)  # (world,)
    agree = bool((gathered == gathered[0]).all())
    if not agree:
        log.error("DDP ranks ended with different weights (parameter sums %s)", gathered.tolist())
    return agree
