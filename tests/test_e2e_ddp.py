"""DDP through the CLI: two CPU ranks (gloo) share one run directory and a clean data audit."""

from __future__ import annotations

import json

import torch

from tests.conftest import run_cli


def _ddp_run(out, *extra):
    res = run_cli("run", "demo", "--executor", "local", "--out", str(out), "--set", "train.devices=2",
                  "train.strategy=ddp", "train.accelerator=cpu", "data.audit=true", "train.max_epochs=2",
                  "model.dropout=0.2", *extra, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    (run_dir,) = list((out / "runs").iterdir())  # both ranks wrote into rank 0's run dir
    return run_dir


def test_grouped_steps_under_ddp_equal_one_step_per_call(tmp_path):
    """16 steps per call (auto) under DDP: each backward still all-reduces, weights are bit-identical."""
    grouped = _ddp_run(tmp_path / "grouped")  # auto: 16 steps per call
    single = _ddp_run(tmp_path / "single", "train.steps_per_call=1")
    a = torch.load(grouped / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    b = torch.load(single / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert a["global_step"] == b["global_step"] == 42  # 21 steps per rank per epoch
    for name, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][name]), name
    assert json.loads((grouped / "data_audit.json").read_text())["ok"]
    for run in (grouped, single):  # and both ranks ended with the same weights: every step was all-reduced
        assert json.loads((run / "run.json").read_text())["ranks_agree"] is True


def test_cli_ddp_two_ranks_audit_is_exact(tmp_path):
    run_dir = _ddp_run(tmp_path)
    audit = json.loads((run_dir / "data_audit.json").read_text())
    assert audit["ok"] and audit["world_size"] == 2 and len(audit["epochs"]) == 2
    for epoch in audit["epochs"]:
        assert epoch["steps_per_rank"][0] == epoch["steps_per_rank"][1]
        assert epoch["seen_once"] == audit["rows"] and epoch["duplicated"] == 0 and epoch["missing"] == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["samples"] == 359  # every test row counted once across the two ranks
