"""ShardDataModule with the features resident on a CUDA device (skipped without one)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shardtrain.models.inputs import SparseBatch
from shardtrain.data.datamodule import ShardDataModule
from tests.test_datamodule_core import dm_kwargs, epoch_batches, make_shards
from tests.test_datamodule_resume import check_resume

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _cpu(v):
    """A batch value moved to the CPU (tensors, SparseBatch, dicts of tensors)."""
    if isinstance(v, dict):
        return {k: _cpu(u) for k, u in v.items()}
    return v.to("cpu")


@pytest.mark.parametrize("sparse", [False, True])
def test_gpu_cache_equals_cpu_cache(tmp_path: Path, sparse: bool) -> None:
    """Resident-on-GPU batches (already on cuda) equal the CPU-cache batches, train and val."""
    d = make_shards(tmp_path / "train", [13, 0, 29, 4], sparse=sparse, copies=1)
    got = {}
    for cache in ("cpu", "gpu"):
        dm = ShardDataModule(d, **dm_kwargs(device_cache=cache, val_fraction=0.2), seed=5,
                             rank=1, world_size=2, device="cuda")
        dm.setup("fit")
        assert dm.cache_modes["train"] == cache
        got[cache] = epoch_batches(dm, 1) + list(dm.val_dataloader())
    for a, b in zip(got["cpu"], got["gpu"]):
        assert b["w"].is_cuda and (b["x"].ids if sparse else b["x"]).is_cuda
        for key in a:
            if sparse and key == "x":
                assert isinstance(b[key], SparseBatch)
                assert all(torch.equal(u, v) for u, v in zip(a[key], _cpu(b[key])))
            elif key == "unit_weights":  # a Python flag, not a tensor
                assert a[key] is b[key]
            else:
                assert torch.equal(a[key], _cpu(b[key])), key


def test_auto_picks_gpu_for_a_small_split(tmp_path: Path) -> None:
    """``auto`` keeps a small split resident on the CUDA device."""
    d = make_shards(tmp_path / "train", [50])
    dm = ShardDataModule(d, **dm_kwargs(device_cache="auto"), seed=0, device="cuda")
    dm.setup("fit")
    assert dm.cache_modes["train"] == "gpu"
    assert next(iter(dm.train_dataloader()))["x"].device.type == "cuda"


def test_gpu_resume_mid_epoch_matches_uninterrupted(tmp_path: Path) -> None:
    """The Lightning resume check on the GPU with the gpu cache."""
    check_resume(tmp_path, stop_at=11, accelerator="gpu", cache="gpu")
