"""train.monitor: the evaluated checkpoint is the best epoch by the monitored metric, and says so.

Tiny synthetic shards written straight to ``O/shards/prepare/{train,val,test}``: noisy
labels and a wide MLP with a high learning rate overfit within a few epochs, so the
validation loss and the validation accuracy need not peak at the same epoch (the bug
report: best accuracy at epoch 8, lowest loss at epoch 5, and the latter was evaluated).
The assertions do not depend on where they peak: the evaluated epoch must be the argmax
of ``val_accuracy`` (auto, classification) or the argmin of ``val_loss`` in ``epochs.csv``,
the same as ``metrics.json``'s ``selection`` and ``run.json``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from shardtrain.config import from_dict
from shardtrain.core.errors import ShardtrainError
from shardtrain.shards import shard_name, write_index, write_shard
from shardtrain.training.stage import evaluate, train

WIDTH = 8


def write_split(directory: Path, split: str, n: int, *, seed: int, labels: str = "class", noise: float = 0.3,
                shards: int = 2) -> Path:
    """A split of ``n`` rows: float32 ``x`` (WIDTH,) and labels from a fixed linear rule, ``noise`` of them flipped.

    ``labels``: ``class`` (one 3-class ``label``), ``regression`` (a float ``label``) or
    ``multitask`` (``label_colour`` 3 classes, ``label_size`` 2 classes).
    """
    rng = np.random.default_rng(seed)
    w = np.random.default_rng(12345).normal(size=(WIDTH, 3))  # the same rule in every split
    x = rng.normal(size=(n, WIDTH)).astype(np.float32)
    score = x @ w  # (n, 3)
    flip = rng.random(n) < noise
    columns: dict[str, np.ndarray] = {}
    if labels == "regression":
        columns["label"] = (score[:, 0] + rng.normal(scale=1.0, size=n)).astype(np.float32)
        desc = {"label": {"classes": None}}
    else:
        colour = np.where(flip, rng.integers(0, 3, n), score.argmax(1)).astype(np.int64)
        if labels == "class":
            columns["label"] = colour
            desc = {"label": {"classes": ["a", "b", "c"]}}
        else:
            size = np.where(rng.random(n) < noise, rng.integers(0, 2, n), score[:, 1] > 0).astype(np.int64)
            columns["label_colour"], columns["label_size"] = colour, size
            desc = {"label_colour": {"classes": ["red", "green", "blue"]}, "label_size": {"classes": ["s", "l"]}}
    for column, d in desc.items():
        if d["classes"] is not None:
            d["counts"] = {str(k): int(v) for k, v in zip(*np.unique(columns[column], return_counts=True))}
    directory.mkdir(parents=True, exist_ok=True)
    entries, bounds = [], np.linspace(0, n, shards + 1).astype(int)
    for s in range(shards):
        lo, hi = bounds[s], bounds[s + 1]
        cols = {"sample_id": np.arange(lo, hi, dtype=np.int64) + seed * 10**6, "x": x[lo:hi],
                **{k: v[lo:hi] for k, v in columns.items()}}
        entries.append(write_shard(directory / shard_name(s, shards), cols))
    schema = [{"name": c, "type": "?"} for c in cols]
    write_index(directory, {"format": "shardtrain-shards", "version": 1, "split": split, "rows": n, "schema": schema,
                            "features": {"x": {"kind": "dense", "dtype": "float32", "shape": [WIDTH]}},
                            "labels": desc, "shards": entries})
    return directory


def make_out(root: Path, labels: str = "class", train_rows: int = 600, val_rows: int = 200) -> Path:
    """An output root with prepare shards for train, val and test."""
    prep = root / "shards" / "prepare"
    write_split(prep / "train", "train", train_rows, seed=1, labels=labels)
    write_split(prep / "val", "val", val_rows, seed=2, labels=labels)
    write_split(prep / "test", "test", val_rows, seed=3, labels=labels)
    return root


def config(**train: object) -> object:
    """A small CPU config: a wide MLP on noisy labels, 8 epochs (it overfits within a few)."""
    model = train.pop("model", {"kind": "mlp", "hidden": [256], "dropout": 0.0})
    return from_dict({"name": "monitor", "seed": 0, "data": {"batch_size": 32, "device_cache": "cpu"},
                      "model": model,
                      "train": {"max_epochs": 8, "lr": 0.005, "accelerator": "cpu", "cpu_threads": 1, **train}})


def epochs(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "epochs.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def fit_and_evaluate(out: Path, cfg: object) -> tuple[Path, dict, list[dict[str, str]]]:
    result = train(cfg, out)
    metrics = evaluate(cfg, out, result)
    return result.run_dir, metrics, epochs(result.run_dir)


@pytest.fixture(scope="module")
def classification(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_out(tmp_path_factory.mktemp("monitor"))


def test_auto_evaluates_the_epoch_of_best_val_accuracy_not_of_lowest_loss(classification: Path) -> None:
    run_dir, metrics, rows = fit_and_evaluate(classification, config())
    accuracy = [float(r["val_accuracy"]) for r in rows]
    best = int(np.argmax(accuracy)) + 1  # first of the best, as ModelCheckpoint keeps it
    lowest_loss = int(np.argmin([float(r["val_loss"]) for r in rows])) + 1
    assert best != lowest_loss, "fixture: the seeded run should peak in accuracy and in loss at different epochs"
    chosen = metrics["selection"]
    assert chosen == {"monitor": "val_accuracy", "mode": "max", "epoch": best, "value": pytest.approx(max(accuracy)),
                      "checkpoint": "best.ckpt"}
    assert json.loads((run_dir / "metrics.json").read_text())["selection"]["epoch"] == best
    info = json.loads((run_dir / "run.json").read_text())
    assert info["evaluated_epoch"] == best and info["resolved"]["train.monitor"]["from"] == "auto"
    # The val metrics reported are those of the chosen weights (evaluate re-validates best.ckpt).
    assert metrics["val"]["accuracy"] == pytest.approx(max(accuracy))


def test_val_loss_monitor_evaluates_the_epoch_of_lowest_val_loss(classification: Path) -> None:
    run_dir, metrics, rows = fit_and_evaluate(classification, config(monitor="val_loss"))
    losses = [float(r["val_loss"]) for r in rows]
    best = int(np.argmin(losses)) + 1
    assert metrics["selection"]["monitor"] == "val_loss" and metrics["selection"]["mode"] == "min"
    assert metrics["selection"]["epoch"] == best and metrics["selection"]["value"] == pytest.approx(min(losses))
    assert metrics["val"]["loss"] == pytest.approx(min(losses), rel=1e-5)
    assert metrics["selection"]["epoch"] != int(np.argmax([float(r["val_accuracy"]) for r in rows])) + 1


def test_early_stopping_follows_the_same_monitor(classification: Path) -> None:
    # patience 1 on val_accuracy (max): training stops one epoch after accuracy first fails to improve
    run_dir, metrics, rows = fit_and_evaluate(classification, config(early_stopping_patience=1, max_epochs=12))
    accuracy = [float(r["val_accuracy"]) for r in rows]
    stall = next((i for i in range(1, len(accuracy)) if accuracy[i] <= max(accuracy[:i])), None)
    assert len(rows) == (stall + 1 if stall is not None else 12)
    assert metrics["selection"]["epoch"] == int(np.argmax(accuracy)) + 1


def test_regression_defaults_to_val_loss_and_refuses_val_accuracy(tmp_path: Path) -> None:
    out = make_out(tmp_path, labels="regression", train_rows=200, val_rows=80)
    with pytest.raises(ShardtrainError, match="train.monitor") as err:
        train(config(monitor="val_accuracy", max_epochs=1), out)
    assert "\n" not in str(err.value) and not (out / "runs").exists()  # refused before a run dir is made
    _, metrics, rows = fit_and_evaluate(out, config(max_epochs=2))
    assert metrics["selection"]["monitor"] == "val_loss" and metrics["selection"]["mode"] == "min"
    assert metrics["selection"]["epoch"] == int(np.argmin([float(r["val_loss"]) for r in rows])) + 1


def test_multitask_monitors_the_mean_task_accuracy_and_has_per_task_curves(tmp_path: Path) -> None:
    out = make_out(tmp_path, labels="multitask", train_rows=300, val_rows=100)
    cfg = config(max_epochs=3, model={"kind": "multitask", "hidden": [64]})
    run_dir, metrics, rows = fit_and_evaluate(out, cfg)
    for r in rows:  # val_accuracy is the mean of the tasks' accuracies, each also logged
        tasks = [float(r["val_colour_accuracy"]), float(r["val_size_accuracy"])]
        assert float(r["val_accuracy"]) == pytest.approx(sum(tasks) / 2)
    accuracy = [float(r["val_accuracy"]) for r in rows]
    assert metrics["selection"]["monitor"] == "val_accuracy"
    assert metrics["selection"]["epoch"] == int(np.argmax(accuracy)) + 1
    if rows[0].get("train_colour_accuracy"):  # the model reports train_correct_<task> / train_count_<task> stats
        for r in rows:
            tasks = [float(r["train_colour_accuracy"]), float(r["train_size_accuracy"])]
            assert float(r["train_accuracy"]) == pytest.approx(sum(tasks) / 2)
    assert (run_dir / "learning_curves.png").stat().st_size > 0


def test_the_shell_derives_mean_and_per_task_accuracies() -> None:
    import torch

    from shardtrain.training.module import train_accuracies, with_mean_accuracy

    scalars = with_mean_accuracy({"colour_accuracy": 0.5, "size_accuracy": 0.75, "price_accuracy": None, "loss": 1.0})
    assert scalars["accuracy"] == pytest.approx(0.625)  # the regression task (None) is left out
    assert with_mean_accuracy({"accuracy": 0.9, "loss": 0.1})["accuracy"] == 0.9  # a model's own accuracy wins
    assert "accuracy" not in with_mean_accuracy({"loss": 0.3})  # regression only: nothing to average
    stats = {"train_correct_colour": torch.tensor(3.0), "train_count_colour": torch.tensor(4.0),
             "train_correct_size": torch.tensor(1.0), "train_count_size": torch.tensor(4.0)}
    overall, per_task = train_accuracies(stats)
    assert per_task == {"colour": 0.75, "size": 0.25} and overall == pytest.approx(0.5)
    overall, _ = train_accuracies({**stats, "train_correct": torch.tensor(6.0), "train_count": torch.tensor(8.0)})
    assert overall == pytest.approx(0.75)
