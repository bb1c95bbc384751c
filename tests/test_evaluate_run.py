"""``--stage evaluate`` and ``--run``: only runs whose training finished are evaluated.

One real offline demo run (one epoch) gives a complete run; incomplete runs are made by
hand (a ``config.yaml`` and no ``_COMPLETE`` marker), as a crashed training leaves them.
"""

from __future__ import annotations

import json
import shutil

import pytest

import shardtrain
from shardtrain.core.errors import ShardtrainError
from shardtrain.training.stage import COMPLETE_NAME, latest_run_dir
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An output root with one complete one-epoch demo run; returns (out, run_dir)."""
    out = tmp_path_factory.mktemp("evalrun")
    res = run_cli("run", "demo", "--executor", "local", "--out", str(out), "--set", "train.max_epochs=1",
                  env={"SHARDTRAIN_DATA": "/nonexistent"})
    assert res.returncode == 0, res.stderr[-3000:]
    (run_dir,) = list((out / "runs").iterdir())
    return out, run_dir


def _crashed_run(out, name, config):
    """A run directory as a crash during fit leaves it: the resolved config, a log, no marker."""
    run_dir = out / "runs" / name
    run_dir.mkdir(parents=True)
    shutil.copy(config, run_dir / "config.yaml")
    (run_dir / "logs").mkdir()
    return run_dir


def test_finished_training_writes_the_marker(trained):
    _, run_dir = trained
    info = json.loads((run_dir / COMPLETE_NAME).read_text())
    assert info["fit_seconds"] > 0 and info["finished"]
    assert not list(run_dir.glob(f".{COMPLETE_NAME}*"))  # no temporary file left behind


def test_an_incomplete_run_is_refused_in_one_line(trained):
    out, run_dir = trained
    crashed = _crashed_run(out, "29990101-000000-demo", run_dir / "config.yaml")
    try:
        res = run_cli("run", "demo", "--stage", "evaluate", "--executor", "local", "--out", str(out),
                      "--run", crashed.name)
    finally:
        shutil.rmtree(crashed)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr and "FileNotFoundError" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and crashed.name in last and "did not finish" in last, last
    assert not (crashed / "metrics.json").exists()


def test_newest_complete_run_is_chosen_over_a_newer_incomplete_one(trained):
    out, run_dir = trained
    crashed = _crashed_run(out, "29990101-000000-demo", run_dir / "config.yaml")
    try:
        assert latest_run_dir(out) == crashed  # train.resume=last still takes the newest, finished or not
        res = run_cli("run", "demo", "--stage", "evaluate", "--executor", "local", "--out", str(out))
    finally:
        shutil.rmtree(crashed)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"run: {run_dir}" in res.stdout
    assert (run_dir / "metrics.json").exists()


def test_run_picks_an_older_run(trained):
    out, run_dir = trained
    older = out / "runs" / "20000101-000000-demo"
    shutil.copytree(run_dir, older)
    for name in ("metrics.json", "run.json"):
        (older / name).unlink(missing_ok=True)
    try:
        res = run_cli("run", "demo", "--stage", "evaluate", "--executor", "local", "--out", str(out),
                      "--run", older.name)
        assert res.returncode == 0, res.stderr[-2000:]
        assert f"run: {older}" in res.stdout
        assert json.loads((older / "metrics.json").read_text())["test"]["accuracy"] > 0
        # From Python, a run directory path works too.
        metrics = shardtrain.run("demo", stage="evaluate", out=out, run=str(older))
        assert metrics["evaluate"]["test"]["accuracy"] > 0
    finally:
        shutil.rmtree(older)


def test_no_complete_run_says_so(trained, tmp_path):
    out, run_dir = trained
    lonely = tmp_path / "out"
    shutil.copytree(out / "shards", lonely / "shards")
    _crashed_run(lonely, "29990101-000000-demo", run_dir / "config.yaml")
    with pytest.raises(ShardtrainError, match="no complete run"):
        shardtrain.run("demo", stage="evaluate", out=lonely)
    with pytest.raises(ShardtrainError, match="did not finish"):
        shardtrain.run("demo", stage="evaluate", out=lonely, run="29990101-000000-demo")
    with pytest.raises(ShardtrainError, match="not a run directory"):
        shardtrain.run("demo", stage="evaluate", out=lonely, run="nope")


def test_run_is_only_for_the_evaluate_stage(tmp_path):
    with pytest.raises(ShardtrainError, match="--stage evaluate only"):
        shardtrain.run("demo", stage="train", out=tmp_path, run="x")
    assert not (tmp_path / "runs").exists()


def test_resume_last_finishes_a_crashed_run_and_marks_it(trained, tmp_path):
    out, run_dir = trained
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    crashed = copy / "runs" / run_dir.name
    (crashed / COMPLETE_NAME).unlink()  # as if it had crashed after its last checkpoint
    res = run_cli("run", "demo", "--stage", "train", "--executor", "local", "--out", str(copy),
                  "--set", "train.resume=last", "train.max_epochs=1")  # its last.ckpt is at the end: fit returns
    assert res.returncode == 0, res.stderr[-2000:]
    assert [p.name for p in (copy / "runs").iterdir()] == [run_dir.name]  # resumed in place, not a new run
    assert (crashed / COMPLETE_NAME).is_file()
