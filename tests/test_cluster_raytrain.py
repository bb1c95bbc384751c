"""``train.launcher: ray``: the demo trained by Ray Train's TorchTrainer on two CPU workers (DDP over gloo).

One prepared demo (scikit-learn digits, ``--executor local``) serves both tests:

* a clean two-epoch run: checkpoints land under the Ray storage path, the driver gets
  ``best``/``last`` copies, ``evaluate`` validates and tests on the driver, and the
  per-rank data audit is merged;
* a run whose rank-1 worker SIGKILLs itself at step 5 of its first attempt (checkpoints
  every 2 steps, ``max_failures: 1``): Ray restarts the worker group, the workers resume
  from the step-4 checkpoint (mid-epoch) and the run finishes.
"""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from shardtrain.data.batching import per_rank_rows
from shardtrain.config import Config, load_config
from shardtrain.api import run_stages
from shardtrain.training.stage import RUN_DIR_ENV, evaluate
from tests.s3server import moto_endpoint, ray_in_s3_env, s3  # noqa: F401  (pytest fixtures; taken as arguments below)

pytestmark = [pytest.mark.cluster, pytest.mark.ray]

RAY_TRAIN = ["train.launcher=ray", "train.num_workers=2", "train.use_gpu=false", "train.accelerator=cpu"]


class KillOnce(pl.Callback):
    """On worker ``rank`` at global step ``step``: write ``marker`` (our pid) and SIGKILL ourselves, once."""

    def __init__(self, marker: Path, rank: int = 1, step: int = 5) -> None:
        self.marker, self.rank, self.step = Path(marker), rank, step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if trainer.global_rank == self.rank and trainer.global_step == self.step and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no Python exception: a lost worker


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """The demo's prepare stage (no augment), run in-process once for this module."""
    out = tmp_path_factory.mktemp("raytrain")
    run_stages(load_config("demo"), "prepare", out, executor="local")
    return out


@pytest.fixture
def fresh_run(monkeypatch):
    """Its own run directory per test (``new_run_dir`` remembers the last one in the environment).

    Also gives Ray Train's worker-group start more time than its 60 s default: on a busy
    two-core machine, starting two workers that import torch can take that long.
    """
    saved = os.environ.pop(RUN_DIR_ENV, None)
    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "300")  # the driver passes it to the controller
    yield
    os.environ.pop(RUN_DIR_ENV, None)
    if saved is not None:
        os.environ[RUN_DIR_ENV] = saved


def _cfg(*overrides: str) -> Config:
    return load_config("demo", [*RAY_TRAIN, *overrides])


def _ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _steps_per_epoch(result, cfg: Config, world: int = 2) -> int:
    """Optimizer steps per epoch on each of ``world`` ranks (from the driver's own DataModule)."""
    result.datamodule.setup("fit")
    rows = per_rank_rows(result.datamodule.split("train").rows, world)
    return math.ceil(rows / cfg.data.batch_size)


def _reported(storage: Path) -> list[dict]:
    """Metrics of every checkpoint Ray still keeps (from its checkpoint manager's snapshot)."""
    from ray.train import Result

    return [m for _, m in Result.from_path(str(storage)).best_checkpoints]


def test_ray_launcher_trains_checkpoints_and_evaluates(ray_local, prepared, fresh_run):
    cfg = _cfg("train.max_epochs=2", "data.audit=true")
    result = run_stages(cfg, "train", prepared)["train"]  # the entry point picks Ray Train
    run_dir = result.run_dir
    summary = json.loads((run_dir / "ray_train.json").read_text())
    assert summary["world_size"] == 2 and summary["epochs"] == 2 and summary["restored_step"] is None

    # Ray storage (default <run dir>/ray_train/<run name>): the kept checkpoints are full Lightning ones.
    storage = run_dir / "ray_train" / run_dir.name
    kept = sorted(storage.glob("epoch*/checkpoint.ckpt"))
    assert kept, f"no checkpoints under {storage}"
    assert Path(summary["last"]).name == "epoch0001-step%07d-end" % summary["global_step"]
    steps = _steps_per_epoch(result, cfg)
    last = _ckpt(run_dir / "checkpoints" / "last.ckpt")
    assert last["global_step"] == summary["global_step"] == 2 * steps
    assert _ckpt(Path(summary["last"]) / "checkpoint.ckpt")["global_step"] == last["global_step"]
    # The DataModule's position travels in the checkpoint, with the world size it ran with.
    assert last["ShardDataModule"] == {"epoch": 1, "batches_done": steps, "seed": 0,
                                       "world_size": 2, "batch_size": cfg.data.batch_size, "steps_per_call": 1}

    # The driver evaluates on one CPU process with the best checkpoint.
    assert result.trainer.world_size == 1 and result.trainer.current_epoch == 2
    assert result.best_ckpt == str(run_dir / "checkpoints" / "best.ckpt")
    metrics = evaluate(cfg, prepared, result)
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["test"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert metrics["test"]["accuracy"] > 0.3  # ten classes: chance is 0.1
    # Ray kept the epoch train.monitor (auto: val_accuracy, max) picks, as ModelCheckpoint would.
    assert metrics["val"]["accuracy"] == pytest.approx(max(
        m["val_accuracy"] for m in _reported(storage) if m["epoch_end"]), rel=1e-4)
    assert (run_dir / "logs" / "metrics.csv").is_file()

    # Both ranks' audits were merged: every training row exactly once per epoch.
    audit = json.loads((run_dir / "data_audit.json").read_text())
    assert audit["world_size"] == 2 and audit["ok"] is True and len(audit["epochs"]) == 2

    # evaluate() without the live objects reloads best.ckpt from the run dir: same numbers.
    again = evaluate(cfg, prepared)
    assert again["test"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"])


def test_killed_worker_resumes_from_last_checkpoint(ray_local, prepared, fresh_run, tmp_path):
    from shardtrain.cluster.ray_train import fit_with_ray
    from shardtrain.training.stage import check_shards, new_run_dir, shard_dirs

    marker = tmp_path / "killed"
    storage = tmp_path / "storage"
    cfg = _cfg("train.max_epochs=1", "train.checkpoint_every_n_steps=2", "train.max_failures=1",
               f"train.storage_path={storage}")
    dirs = shard_dirs(cfg, prepared)
    index = check_shards(dirs)
    run_dir = new_run_dir(cfg, prepared)
    result = fit_with_ray(cfg, prepared, run_dir, dirs, index, None, extra_callbacks=[KillOnce(marker, rank=1, step=5)])

    assert marker.is_file(), "the rank-1 worker never reached step 5"
    summary = json.loads((run_dir / "ray_train.json").read_text())
    # The surviving attempt started from the last checkpoint Ray registered before the kill: step 4,
    # or step 2 when the worker died before the controller's next poll collected step 4's report ...
    restored = summary["restored_step"]
    assert restored in (2, 4)
    assert Path(summary["restored_from"]).name == f"epoch0000-step{restored:07d}"
    # ... and finished the epoch with the step count of an uninterrupted one (no batch done twice).
    steps = _steps_per_epoch(result, cfg)
    assert summary["epochs"] == 1 and summary["global_step"] == steps > 5
    last = _ckpt(run_dir / "checkpoints" / "last.ckpt")
    assert last["global_step"] == steps and last["ShardDataModule"]["batches_done"] == steps
    assert Path(summary["storage"]) == storage / run_dir.name
    assert (storage / run_dir.name / f"epoch0000-step{summary['global_step']:07d}-end" / "checkpoint.ckpt").is_file()
    assert result.trainer.current_epoch == 1 and result.best_ckpt.endswith("best.ckpt")



def test_ray_launcher_with_an_s3_out_checkpoints_into_the_bucket(s3, ray_in_s3_env, fresh_run, tmp_path,  # noqa: F811
                                                                 monkeypatch, capfd):
    from shardtrain.shards import storage
    from tests.s3server import FAKE_KEY_ID, FAKE_SECRET

    monkeypatch.setenv("SHARDTRAIN_CACHE", str(tmp_path / "cache"))
    out = s3.uri("exp")
    run_stages(load_config("demo"), "prepare", out, executor="local")
    cfg = _cfg("train.max_epochs=1", "train.num_workers=1")
    result = run_stages(cfg, "train", out)["train"]
    runs = {k.split("/")[2] for k in s3.keys("exp/runs")}
    assert len(runs) == 1
    run = runs.pop()
    keys = set(s3.keys(f"exp/runs/{run}"))
    summary = json.loads(s3.get(f"exp/runs/{run}/ray_train.json"))
    # Ray's storage is the run's own prefix in the bucket; the worker uploaded the checkpoints there.
    assert summary["storage"] == s3.uri(f"exp/runs/{run}/ray_train/{run}")
    assert summary["last"].startswith(summary["storage"] + "/epoch0000-step")
    last_key = summary["last"][len(s3.uri("")) + 1:] + "/checkpoint.ckpt"
    assert last_key in keys
    assert not (result.run_dir / "ray_train").exists()  # nothing staged locally for Ray
    for name in ("checkpoints/best.ckpt", "checkpoints/last.ckpt", "logs/metrics.csv", "_COMPLETE", "config.yaml"):
        assert f"exp/runs/{run}/{name}" in keys, name
    import io

    last = torch.load(io.BytesIO(s3.get(f"exp/runs/{run}/checkpoints/last.ckpt")), map_location="cpu",
                      weights_only=False)
    ray_last = torch.load(io.BytesIO(storage.read_bytes(summary["last"] + "/checkpoint.ckpt")), map_location="cpu",
                          weights_only=False)
    assert last["global_step"] == ray_last["global_step"] == summary["global_step"] > 0

    # evaluate from the bucket alone (another machine: an empty cache) uses the run's best.ckpt.
    monkeypatch.setenv("SHARDTRAIN_CACHE", str(tmp_path / "cache-2"))
    metrics = run_stages(cfg, "evaluate", out)["evaluate"]
    assert metrics["test"]["accuracy"] > 0.2
    texts = [s3.get(k).decode("utf-8", "replace") for k in s3.keys(f"exp/runs/{run}")
             if k.endswith((".json", ".yaml", ".csv"))]
    captured = capfd.readouterr()
    for text in [*texts, captured.out, captured.err]:
        assert FAKE_SECRET not in text and FAKE_KEY_ID not in text
