"""DDP through the CLI: two CPU ranks (gloo) share one run directory and a clean data audit."""

from __future__ import annotations

import json

from tests.conftest import run_cli


def test_cli_ddp_two_ranks_audit_is_exact(tmp_path):
    res = run_cli("run", "demo", "--executor", "local", "--out", str(tmp_path), "--set", "train.devices=2",
                  "train.strategy=ddp", "train.accelerator=cpu", "data.audit=true", "train.max_epochs=2",
                  timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    (run_dir,) = list((tmp_path / "runs").iterdir())  # both ranks wrote into rank 0's run dir
    audit = json.loads((run_dir / "data_audit.json").read_text())
    assert audit["ok"] and audit["world_size"] == 2 and len(audit["epochs"]) == 2
    for epoch in audit["epochs"]:
        assert epoch["steps_per_rank"][0] == epoch["steps_per_rank"][1]
        assert epoch["seen_once"] == audit["rows"] and epoch["duplicated"] == 0 and epoch["missing"] == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["samples"] == 359  # every test row counted once across the two ranks
