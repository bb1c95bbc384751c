"""ShardDataModule under real DDP: two CPU processes (gloo) via ``tests/ddp_audit_script.py``.

The script is run as a subprocess because Lightning's ``ddp`` strategy re-launches the
current command for each rank (inside pytest that would be pytest itself).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.test_datamodule_core import make_shards

ROOT = Path(__file__).resolve().parents[1]


def test_ddp_two_ranks_see_every_sample_once(tmp_path: Path) -> None:
    """World size 2, shards of 1000, 1000 and 1 rows: equal steps, each sample once per epoch."""
    train = make_shards(tmp_path / "train", [1000, 1000, 1])
    audit = tmp_path / "audit"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "ddp_audit_script.py"), "--train", str(train), "--audit", str(audit)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in audit.glob("data_audit.rank*.json")) == ["data_audit.rank0.json",
                                                                          "data_audit.rank1.json"]
    report = json.loads((audit / "data_audit.json").read_text())
    assert report["ok"] and report["world_size"] == 2 and report["rows"] == 2001
    assert len(report["epochs"]) == 2
    for e in report["epochs"]:
        assert e["steps_per_rank"] == [16, 16]  # ceil(ceil(2001 / 2) / 64)
        assert e["seen_once"] == 2001 and e["duplicated"] == 0 and e["missing"] == 0
        assert e["padding"] == 1
