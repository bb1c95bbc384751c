"""A run resumed from a mid-epoch checkpoint ends with exactly the weights of an uninterrupted run."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import run_cli

# demo: 2578 training rows after carving validation, batch 64 -> 41 steps per epoch, 82 in all.
COMMON = ["--executor", "local", "--set", "model.dropout=0.2", "train.schedule=none", "train.max_epochs=2"]


def _weights(path):
    state = torch.load(path, map_location="cpu", weights_only=False)
    return state["global_step"], state["state_dict"]


@pytest.mark.parametrize("steps_per_call, mid_step", [
    (1, 60),   # one optimizer step per Lightning call: checkpoints at multiples of 30
    (0, 73),   # auto = 16 per call, groups restart each epoch: calls end at 16 32 41 | 57 73 82
])
def test_resume_mid_epoch_matches_uninterrupted(tmp_path, steps_per_call, mid_step):
    out = tmp_path / "out"
    common = [*COMMON, f"train.steps_per_call={steps_per_call}"]
    full = run_cli("run", "demo", "--out", str(out), *common, "train.checkpoint_every_n_steps=30")
    assert full.returncode == 0, full.stderr[-3000:]
    (run_a,) = list((out / "runs").iterdir())
    mid = run_a / "checkpoints" / f"step-{mid_step:07d}.ckpt"   # inside the second epoch
    assert mid.exists(), sorted(p.name for p in (run_a / "checkpoints").iterdir())
    state = torch.load(mid, map_location="cpu", weights_only=False)
    assert state["ShardDataModule"]["batches_done"] == mid_step - 41

    resumed = run_cli("run", "demo", "--stage", "train", "--out", str(out), *common, f"train.resume={mid}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run_b = max((out / "runs").iterdir(), key=lambda p: p.name)
    assert run_b != run_a
    step_a, weights_a = _weights(run_a / "checkpoints" / "last.ckpt")
    step_b, weights_b = _weights(run_b / "checkpoints" / "last.ckpt")
    assert step_a == step_b == 82
    for name, tensor in weights_a.items():
        assert torch.equal(tensor, weights_b[name]), name
