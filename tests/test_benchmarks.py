"""Smoke test of the benchmark runner: it lists its benchmarks and writes rows of the documented shape.

No timing is asserted (the numbers of a ``--smoke`` run mean nothing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.common import KEYS, check_row, goal_met, row

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "benchmarks", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_list_names_every_benchmark() -> None:
    proc = _run("run", "--list", timeout=60)
    assert proc.returncode == 0, proc.stderr
    names = [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]
    for expected in ("feed_cpu", "rss_feed", "epoch_cpu_bs64", "lightning_overhead_cpu", "augment_scaling",
                     "ensemble_vmap_cpu", "eda_throughput", "log_parse", "time_to_89_gpu", "epoch_gpu_bs512",
                     "ensemble_vmap_gpu", "scale_prepare"):
        assert expected in names


def test_unknown_name_is_refused() -> None:
    proc = _run("run", "--only", "no_such_benchmark", timeout=60)
    assert proc.returncode != 0
    assert "no_such_benchmark" in proc.stderr


@pytest.mark.dataset("fashion-mnist")
def test_smoke_run_writes_rows_of_the_documented_shape(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "rows.json"
    proc = _run("run", "--smoke", "--only", "lightning_overhead_cpu", "epoch_gpu_bs512", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    rows = [r for r in rows if "." not in r["name"]]  # sub-rows (e.g. epoch_gpu_bs512.steps_per_call_1) aside
    assert [r["name"] for r in rows] == ["lightning_overhead_cpu", "epoch_gpu_bs512"]
    for r in rows:
        check_row(r)
        assert set(KEYS) <= set(r) and "load_avg" in r
    cpu, gpu = rows
    assert cpu["ours"] > 0 and cpu["baseline"] > 0 and cpu["ratio"] == pytest.approx(cpu["baseline"] / cpu["ours"], rel=0.01)
    assert cpu["met"] in (True, False)
    if not gpu.get("skipped"):  # on a CUDA machine it really ran
        assert gpu["ours"] > 0
    else:
        assert gpu["ours"] is None and gpu["met"] is None and "CUDA" in gpu["skipped"]
    assert "lightning_overhead_cpu" in proc.stdout  # the table


@pytest.mark.parametrize("goal, values, met", [
    ("ratio >= 2", {"ratio": 2.5}, True),
    ("ratio >= 1 / 1.15", {"ratio": 0.86}, False),
    ("ours <= baseline + 300", {"ours": 350.0, "baseline": 60.0}, True),
    ("ratio >= 0.8 * cores", {"ratio": 1.5, "cores": 2}, False),
    ("ours <= 1.0", {"ours": None}, None),
])
def test_goal_expressions(goal: str, values: dict, met: bool | None) -> None:
    r = row("x", values.get("ours", 1.0), values.get("baseline", 1.0), "s", values.get("ratio", 1.0), goal,
            **({"cores": values["cores"]} if "cores" in values else {}))
    assert goal_met(r) is met


def test_goal_refuses_code() -> None:
    with pytest.raises(ValueError):
        goal_met({"name": "x", "goal": "__import__('os')", "ratio": 1.0, "ours": 1.0, "baseline": 1.0})
