"""ShardTrainModule (the Lightning shell): the course's backprop example, weighted losses, tiny fits, metrics."""

import math
import warnings

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from shardtrain.models.build import build_model
from shardtrain.training.module import ShardTrainModule
from shardtrain.models.metrics import classification_report
from shardtrain.models.mlp import MLP
from shardtrain.config import BaggingConfig, EvaluateConfig, MLPConfig, ModelConfig, MultitaskConfig, TrainConfig
from shardtrain.core.errors import ShardtrainError


def model_cfg(kind: str = "mlp", **overrides) -> ModelConfig:
    """The real ``model`` config section of ``kind``, with small test sizes."""
    cls = {"mlp": MLPConfig, "bagging": BaggingConfig, "multitask": MultitaskConfig}[kind]
    return cls(**{"hidden": (16,), "embed_dim": 8, **({"members": 3} if kind == "bagging" else {}), **overrides})


def train_cfg(**overrides) -> TrainConfig:
    """The real ``train`` config section, tuned for tiny fast fits."""
    return TrainConfig(**{"optimizer": "adam", "lr": 0.05, "momentum": 0.0, "max_epochs": 3,
                          "log_every_n_steps": 2, **overrides})


BINARY = {"label": {"classes": ["ham", "spam"]}}
MULTI = {"label_colour": {"classes": ["red", "green", "blue"]}, "label_spam": {"classes": ["ham", "spam"]},
         "label_size": {"classes": None}}
COMMON_KEYS = {"samples", "loss", "accuracy", "precision_macro", "recall_macro", "f1_macro", "mcc", "coverage",
               "coverage_accuracy", "confusion_matrix", "recall_per_class"}


def _trainer(**kwargs) -> pl.Trainer:
    args = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, log_every_n_steps=2, num_sanity_val_steps=0)
    return pl.Trainer(**{**args, **kwargs})


def _loader(batches: list[dict]) -> DataLoader:
    return DataLoader(batches, batch_size=None)  # a plain list of ready-made dict batches


def _separable_batches(n_batches=6, size=16, multitask=False, seed=0, noise=0.3) -> list[dict]:
    """Two Gaussian blobs in 4-D; class = blob. Multitask adds a 3-class and a regression target."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for b in range(n_batches):
        y = torch.randint(0, 2, (size,), generator=g)
        x = torch.randn(size, 4, generator=g) * noise + (y[:, None] * 2.0 - 1.0)
        ids = torch.arange(b * size, (b + 1) * size)
        w = torch.ones(size)
        w[-1] = 0.0  # a DDP padding row
        batch = {"x": x, "w": w, "sample_id": ids, "source_id": ids}
        if multitask:
            colour = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
            colour[::5] = -1  # missing labels
            batch["y"] = {"colour": colour, "spam": y, "size": x[:, 2] * 2.0}
        else:
            batch["y"] = y
        batches.append(batch)
    return batches


def test_course_backprop_example_through_training_step():
    """x = (0.5, 1), y = 0, w = (1, 2), no bias, sigmoid output, squared loss, SGD lr 0.1."""
    def fresh() -> ShardTrainModule:
        model = MLP(2, hidden=(), out_features=1, bias=False, output_activation="sigmoid", objective="mse")
        with torch.no_grad():
            model.net[0].weight.copy_(torch.tensor([[1.0, 2.0]]))
        cfg = train_cfg(optimizer="sgd", lr=0.1, momentum=0.0, loss="mse")
        return ShardTrainModule(model, model_cfg(), cfg, EvaluateConfig(), {"label": {"classes": ["0", "1"]}})

    batch = {"x": torch.tensor([[0.5, 1.0]]), "y": torch.tensor([0]), "w": torch.ones(1),
             "sample_id": torch.tensor([0]), "source_id": torch.tensor([0])}
    module = fresh()
    assert round(module.model(batch["x"]).item(), 3) == 0.924  # z
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a trainer
        loss = module.training_loss(batch)
    assert loss.item() == pytest.approx(0.924 ** 2, abs=1e-3)
    loss.backward()
    grad = module.model.net[0].weight.grad[0].tolist()
    assert [round(g, 3) for g in grad] == [0.065, 0.130]

    module = fresh()  # the same step through Lightning: configure_optimizers + one optimizer step
    _trainer(max_steps=1).fit(module, train_dataloaders=_loader([batch]))
    weights = module.model.net[0].weight[0].tolist()
    assert round(weights[0], 4) == 0.9935 and round(weights[1], 3) == 1.987


def test_zero_weight_row_changes_nothing():
    torch.manual_seed(0)
    model = MLP(4, (8,), 2)
    module = ShardTrainModule(model, model_cfg(), train_cfg(l1=0.01, l2=0.01), EvaluateConfig(), BINARY)
    batch = _separable_batches(1)[0]
    (padded := dict(batch))["x"] = batch["x"].clone()
    padded["x"][-1] = 1e3  # the w = 0 row holds garbage
    padded["y"] = batch["y"].clone()
    padded["y"][-1] = 1 - padded["y"][-1]
    trimmed = {k: v[:-1] for k, v in batch.items()}
    losses, grads = [], []
    for b in (batch, padded, trimmed):
        model.zero_grad()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loss = module.training_loss(b)
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad.clone() for p in model.parameters()])
    for i in (1, 2):
        torch.testing.assert_close(losses[i], losses[0])
        for a, b in zip(grads[i], grads[0]):
            torch.testing.assert_close(a, b)


def test_bagging_loss_is_the_sum_of_bootstrap_weighted_member_losses():
    model = build_model(model_cfg(kind="bagging", hidden=(8,)), {"kind": "dense", "shape": [4]}, BINARY)
    module = ShardTrainModule(model, model_cfg(kind="bagging"), train_cfg(), EvaluateConfig(), BINARY)
    batch = _separable_batches(1)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = module.training_loss(batch)
    counts = model.bootstrap_weights(batch["source_id"])  # (K, B)
    w = batch["w"]
    expected = sum(
        (counts[k] * w * torch.nn.functional.cross_entropy(model.member(k)(batch["x"]), batch["y"], reduction="none")).sum()
        / w.sum() for k in range(model.members))
    torch.testing.assert_close(loss, expected)


def _fit_and_test(model_cfg, labels, batches, train_cfg=train_cfg(), **trainer_kwargs) -> ShardTrainModule:
    feature = {"kind": "dense", "shape": [4]}
    module = ShardTrainModule(build_model(model_cfg, feature, labels), model_cfg, train_cfg, EvaluateConfig(), labels)
    trainer = _trainer(max_epochs=train_cfg.max_epochs, **trainer_kwargs)
    trainer.fit(module, train_dataloaders=_loader(batches), val_dataloaders=_loader(batches[:2]))
    assert "val_loss" in trainer.callback_metrics
    trainer.test(module, dataloaders=_loader(batches[:3]), verbose=False)
    return module


def test_single_task_fit_gives_the_documented_metrics():
    module = _fit_and_test(model_cfg(), BINARY, _separable_batches(), train_cfg(schedule="onecycle"))
    m = module.metrics_dict("test")
    assert set(m) == COMMON_KEYS | {"precision_spam", "recall_spam", "f1_spam"}
    assert m["samples"] == 3 * 15  # padding rows are not counted
    assert m["accuracy"] > 0.9 and m["mcc"] > 0.8 and 0.0 <= m["coverage"] <= 1.0
    assert set(m["recall_per_class"]) == {"ham", "spam"}
    assert np.array(m["confusion_matrix"]).sum() == 45
    assert module.metrics_dict("val")["samples"] == 30
    with pytest.raises(ShardtrainError, match="predict"):
        module.metrics_dict("predict")


def test_bagging_fit_gives_ensemble_member_and_oob_metrics():
    module = _fit_and_test(model_cfg(kind="bagging", members=3), BINARY, _separable_batches(noise=1.5),
                           train_cfg(optimizer="sgd", lr=0.1, momentum=0.9, schedule="cosine"))
    m = module.metrics_dict("test")
    assert COMMON_KEYS <= set(m) and len(m["members"]) == 3 and len(m["oob_accuracy"]) == 3
    assert all(COMMON_KEYS <= set(member) for member in m["members"])
    assert all(0.0 <= a <= 1.0 for a in m["oob_accuracy"])
    assert m["accuracy"] > 0.6
    # the ensemble's loss is the NLL of the mean member probability: below the mean member NLL (Jensen)
    assert m["loss"] < np.mean([member["loss"] for member in m["members"]]) - 1e-4


@pytest.mark.parametrize("kind", ["mlp", "bagging"])
def test_epoch_row_has_train_and_val_loss_accuracy_and_lr(kind):
    """What the loggers get once per epoch; the train accuracy is the weighted share right in the last epoch."""
    batches = _separable_batches()
    module = _fit_and_test(model_cfg(kind=kind, **({"members": 3} if kind == "bagging" else {})), BINARY, batches,
                           train_cfg(schedule="cosine"))
    row = module.epoch_row()
    assert row["epoch"] == 3 and row["step"] == 3 * len(batches)  # optimizer steps
    assert set(row) == {"epoch", "step", "train_loss", "val_loss", "train_accuracy", "val_accuracy", "lr"}
    assert row["train_accuracy"] > 0.9 and row["val_accuracy"] > 0.9 and row["train_loss"] < 0.5
    assert row["lr"] == module.trainer.optimizers[0].param_groups[0]["lr"]
    module.eval()
    with torch.no_grad():  # the last epoch's weights are not those of the epoch's steps: bound, not equality
        right = sum(float(((module.model.predict(b["x"])["label"].argmax(-1) == b["y"]) * b["w"]).sum())
                    for b in batches)
    total = sum(float(b["w"].sum()) for b in batches)
    assert abs(row["train_accuracy"] - right / total) < 0.1


def test_multitask_fit_gives_nested_per_task_metrics():
    cfg = model_cfg(kind="multitask", task_weighting="uncertainty")
    module = _fit_and_test(cfg, MULTI, _separable_batches(multitask=True), train_cfg(optimizer="adamw", l2=1e-4))
    m = module.metrics_dict("test")
    assert set(m) == {"colour", "spam", "size"}
    assert COMMON_KEYS | {"log_variance"} <= set(m["colour"]) and "f1_spam" in m["spam"]
    assert {"loss", "mse", "rmse", "mae", "samples", "log_variance"} <= set(m["size"])
    assert m["colour"]["samples"] < m["spam"]["samples"] == 45  # missing colour labels are not counted
    assert any(abs(m[t]["log_variance"]) > 0 for t in m)


def test_classification_report_matches_sklearn():
    from sklearn import metrics as skm

    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    y_pred[:50] = y_true[:50]
    y_pred[y_pred == 3] = 2  # class 3 is never predicted: zero-division path
    cm = skm.confusion_matrix(y_true, y_pred, labels=range(4))
    r = classification_report(cm, 10, 7, 5.0, 4.0, ["a", "b", "c", "d"])
    assert r["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    for avg in ("precision", "recall", "f1"):
        fn = getattr(skm, f"{avg}_score")
        assert r[f"{avg}_macro"] == pytest.approx(fn(y_true, y_pred, average="macro", zero_division=0))
    assert r["mcc"] == pytest.approx(skm.matthews_corrcoef(y_true, y_pred))
    assert r["recall_per_class"]["b"] == pytest.approx(skm.recall_score(y_true, y_pred, labels=[1], average="macro"))
    assert (r["coverage"], r["coverage_accuracy"], r["loss"]) == (10 / 200, 0.7, 1.25)
    binary = classification_report(np.array([[5, 1], [2, 4]]), 0, 0, 0.0, 0.0, ["ham", "spam"])
    assert binary["precision_spam"] == pytest.approx(0.8) and binary["recall_spam"] == pytest.approx(4 / 6)
    assert binary["coverage_accuracy"] is None and binary["loss"] is None
    assert not math.isnan(binary["mcc"])


def test_bad_train_config_names_the_key():
    bad = train_cfg().model_copy(update={"optimizer": "lbfgs-ish"})  # past the config's own check
    module = ShardTrainModule(MLP(4, (8,), 2), model_cfg(), bad, EvaluateConfig(), BINARY)
    with pytest.raises(ShardtrainError, match="train.optimizer"):
        module.configure_optimizers()
    with pytest.raises(ShardtrainError, match="train.schedule"):
        ShardTrainModule(MLP(4, (8,), 2), model_cfg(), train_cfg().model_copy(update={"schedule": "steps"}), EvaluateConfig(),
                         BINARY).configure_optimizers()
    with pytest.raises(ShardtrainError, match="train.loss"):  # the model owns its loss: build_model resolves it
        build_model(model_cfg(), {"kind": "dense", "shape": [4]}, BINARY, loss="hinge")
    with pytest.raises(ShardtrainError, match="model.kind=multitask"):
        ShardTrainModule(MLP(4, (8,), 2), model_cfg(), train_cfg(), EvaluateConfig(), MULTI)
    with pytest.raises(ShardtrainError, match="labels"):  # 3 outputs for 2 classes
        ShardTrainModule(MLP(4, (8,), 3), model_cfg(), train_cfg(), EvaluateConfig(), BINARY)
