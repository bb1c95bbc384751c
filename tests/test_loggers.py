"""train.logger: CSV, TensorBoard and MLflow read back; steps are optimizer steps; progress lines off a TTY."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import pytorch_lightning as pl
from torch.utils.data import DataLoader

from shardtrain.config import Config, load_config
from shardtrain.core.errors import ShardtrainError
from shardtrain.models.mlp import MLP
from shardtrain.training import loggers as lg
from shardtrain.training.module import ShardTrainModule
from tests.test_models_lit import BINARY, _separable_batches, model_cfg, train_cfg

GROUP, CALLS, EPOCHS = 2, 3, 3  # 2 optimizer steps per call, 3 calls per epoch: 6 steps per epoch
EPOCH_KEYS = ("train_loss", "val_loss", "train_accuracy", "val_accuracy", "lr")


def _cfg(names: list[str]) -> Config:
    return load_config("demo", [f"train.logger=[{','.join(names)}]"])


def _fit(run_dir: Path, names: list[str], capsys: pytest.CaptureFixture) -> tuple[ShardTrainModule, str]:
    """A tiny fit with grouped steps through the real loggers and progress callbacks (not a TTY)."""
    batches = _separable_batches(n_batches=GROUP * CALLS)
    groups = [batches[i:i + GROUP] for i in range(0, len(batches), GROUP)]  # each call: a list of batches
    module = ShardTrainModule(MLP(4, (16,), 2), model_cfg(), train_cfg(max_epochs=EPOCHS, log_every_n_steps=4,
                                                                      schedule="cosine"), _cfg(names).evaluate, BINARY)
    callbacks, bar = lg.progress_callbacks(GROUP, run_dir, tty=False)
    callbacks.append(lg.ConfigHyperparams({"train": {"lr": 0.05}, "name": "tiny"}))
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=EPOCHS, logger=lg.build_loggers(_cfg(names), run_dir),
                         callbacks=callbacks, enable_progress_bar=bar, enable_checkpointing=False,
                         enable_model_summary=False, log_every_n_steps=0, num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=DataLoader(groups, batch_size=None),
                val_dataloaders=DataLoader(batches[:2], batch_size=None))
    return module, capsys.readouterr().err


def _expected_steps() -> list[int]:
    return [GROUP * CALLS * (e + 1) for e in range(EPOCHS)]


def test_csv_rows_per_epoch_at_optimizer_steps_and_plain_progress_lines(tmp_path: Path, capsys) -> None:
    module, err = _fit(tmp_path, ["csv"], capsys)
    for name in ("train_loss", "train_accuracy", "lr", "val_loss"):  # checkpoints, early stopping, Ray Train reports
        assert float(module.trainer.callback_metrics[name]) == pytest.approx(module.epoch_row()[name])
    with open(tmp_path / "logs" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    epoch_rows = [r for r in rows if r["train_loss"]]
    assert [int(r["step"]) for r in epoch_rows] == _expected_steps()  # optimizer steps, not calls (3 per epoch)
    for r in epoch_rows:
        assert all(r[k] for k in EPOCH_KEYS), r
        assert 0.0 <= float(r["train_accuracy"]) <= 1.0
    # log_every_n_steps=4 optimizer steps: calls end at steps 2, 4, ..., 18; those reaching a multiple of 4 log
    step_rows = [int(r["step"]) for r in rows if r["train_loss_step"]]
    assert step_rows == [4, 8, 12, 16]
    assert (tmp_path / "logs" / "hparams.yaml").exists()
    with open(tmp_path / lg.EPOCHS_CSV, newline="") as fh:
        record = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in record] == [1, 2, 3] and [int(r["step"]) for r in record] == _expected_steps()
    lines = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert len(lines) == EPOCHS
    assert lines[-1].startswith(f"epoch 3/{EPOCHS}  step 18  train_loss ")
    for word in ("val_loss", "train_accuracy", "val_accuracy", " lr ", " s"):
        assert word in lines[-1]


def test_tensorboard_event_files_read_back(tmp_path: Path, capsys) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    module, _ = _fit(tmp_path, ["tensorboard"], capsys)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    for key in EPOCH_KEYS:
        assert [e.step for e in events.Scalars(key)] == _expected_steps(), key
    lrs = [e.value for e in events.Scalars("lr")]
    assert lrs[0] != lrs[-1]  # cosine: the learning rate moves
    assert events.Scalars("val_accuracy")[-1].value == pytest.approx(module.epoch_row()["val_accuracy"], abs=1e-6)
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tensorboard").iterdir())
    assert (tmp_path / "tensorboard" / "hparams.yaml").exists()


def test_mlflow_local_file_store_reads_back(tmp_path: Path, capsys, monkeypatch) -> None:
    pytest.importorskip("mlflow")
    monkeypatch.delenv(lg.MLFLOW_URI_ENV, raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    _fit(tmp_path, ["mlflow"], capsys)
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == "demo"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == tmp_path.name
    for key in EPOCH_KEYS:
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == _expected_steps(), key
    assert run.data.params["train/lr"] == "0.05" and run.data.params["name"] == "tiny"


def test_mlflow_uses_the_tracking_uri_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "elsewhere").as_uri()
    monkeypatch.setenv(lg.MLFLOW_URI_ENV, uri)
    (logger,) = lg.build_loggers(_cfg(["mlflow"]), tmp_path / "run")
    assert logger._tracking_uri == uri


def test_logger_config_is_checked_at_load_and_a_missing_package_names_the_extra(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(ShardtrainError, match="train.logger"):
        load_config("demo", ["train.logger=wandb"])
    assert lg.logger_names(_cfg(["csv", "tensorboard", "csv"]).train) == ["csv", "tensorboard"]
    assert lg.logger_names(load_config("demo", ["train.logger=tensorboard"]).train) == ["tensorboard"]
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ShardtrainError, match=r"pip install 'shardtrain\[loggers\]'"):
        lg.build_loggers(_cfg(["tensorboard"]), tmp_path)


def test_tty_gets_the_step_counting_bar(tmp_path: Path) -> None:
    callbacks, bar = lg.progress_callbacks(16, tmp_path, tty=True)
    assert bar and any(isinstance(cb, lg.StepProgressBar) and cb.steps_per_call == 16 for cb in callbacks)
    callbacks, bar = lg.progress_callbacks(16, tmp_path, tty=False)
    assert not bar and not any(isinstance(cb, lg.StepProgressBar) for cb in callbacks)


def test_trainer_kwargs_wire_the_loggers_progress_and_config(tmp_path: Path) -> None:
    from shardtrain.config import to_dict
    from shardtrain.training.stage import trainer_kwargs

    pytest.importorskip("tensorboard")
    cfg = _cfg(["csv", "tensorboard"])
    kw = trainer_kwargs(cfg, tmp_path, has_val=True)
    assert [type(x).__name__ for x in kw["logger"]] == ["CSVLogger", "TensorBoardLogger"]
    assert kw["log_every_n_steps"] == 0  # the shell logs at optimizer steps itself; no per-call flush
    (hp,) = [cb for cb in kw["callbacks"] if isinstance(cb, lg.ConfigHyperparams)]
    assert hp.config == to_dict(cfg)
    assert any(isinstance(cb, lg.EpochRecord) for cb in kw["callbacks"])
