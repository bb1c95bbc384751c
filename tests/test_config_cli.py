"""Bad configs fail at load: ``shardtrain run`` exits 2 with one ``error:`` line and writes nothing.

Each case runs the real CLI in a subprocess, so what is asserted is what a user sees:
the exit code, stderr, and that the ``--out`` directory was never created.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``python -m shardtrain.cli ARGS`` offline and capture its output."""
    env = {"SHARDTRAIN_OFFLINE": "1", "PATH": "/usr/bin:/bin", "XDG_CACHE_HOME": str(cwd / "cache")}  # no real data
    return subprocess.run([sys.executable, "-m", "shardtrain.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("preset, override, fragment", [
    ("demo", "data.batch_size=0", "config key 'data.batch_size': must be >= 1, got 0"),
    ("demo", "train.lr=-1", "config key 'train.lr': must be > 0, got -1"),
    ("demo", "train.accelerator=tpux", "config key 'train.accelerator': 'tpux' is not one of"),
    ("demo", "model.dropout=1.5", "config key 'model.dropout': must be >= 0 and < 1, got 1.5"),
    ("demo", "model.kind=bagging model.members=0", "config key 'model.members': must be >= 1, got 0"),
    ("demo", "train.max_epochs=0", "config key 'train.max_epochs'"),
    ("demo", "train.max_epoch=2", "did you mean 'train.max_epochs'?"),
    ("sms-spam", "dataset.name=oewn-2025", "'oewn-2025' is a resource"),
    ("kdd99", "prepare.features=handcrafted", "config key 'prepare.features': only applies to image datasets"),
    ("kdd99", "dataset.options.coarse=true", "unknown config key 'dataset.options.coarse'"),
    ("kdd99", "augment.copies=2", "config key 'augment.copies'"),
    ("sms-spam", "augment.pipeline={}", "config key 'augment.pipeline': only applies to image datasets"),
    ("sms-spam", "dataset.options.split=[0.5,0.5,0.5]", "config key 'dataset.options.split'"),
    ("demo", "dataset.options.test_fraction=1.5", "config key 'dataset.options.test_fraction'"),
])
def test_bad_config_fails_before_any_output(tmp_path: Path, preset: str, override: str, fragment: str) -> None:
    out = tmp_path / "out"
    proc = _cli("run", preset, "--executor", "local", "--out", str(out), "--set", *override.split(), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert fragment in lines[0]
    assert not out.exists()


def test_print_config_prints_resolved_yaml_and_runs_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _cli("run", "demo", "--print-config", "--out", str(out), "--set", "train.lr=1e-3", "model.kind=bagging",
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    resolved = yaml.safe_load(proc.stdout)
    assert resolved["train"]["lr"] == 0.001 and resolved["model"]["kind"] == "bagging"
    assert resolved["model"]["members"] == 8 and resolved["dataset"]["name"] == "digits"
    assert not out.exists()


def test_presets_lists_each_with_its_description(tmp_path: Path) -> None:
    from shardtrain.config import PRESETS

    proc = _cli("presets", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(PRESETS)
    assert all(len(line.split(None, 1)) == 2 for line in lines)  # every preset has a description


def test_missing_data_or_resource_fails_before_any_output(tmp_path: Path) -> None:
    for stage, fragment in (("all", "error: dataset sms-spam: missing"), ("augment", "error: resource oewn-2025: missing")):
        out = tmp_path / f"out-{stage}"
        proc = _cli("run", "sms-spam", "--stage", stage, "--executor", "local", "--data-dir", str(tmp_path / "none"),
                    "--out", str(out), cwd=tmp_path)
        assert proc.returncode == 2 and proc.stderr.strip().startswith(fragment), proc.stderr
        assert not out.exists()
