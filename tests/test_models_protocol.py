"""The model protocol without a Trainer: each model's ``loss``/``predict``/``eval_outputs`` against plain PyTorch."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from shardtrain.models import MLP, BaggingEnsemble, EmbeddingBagMLP, MultiTaskMLP
from shardtrain.models.inputs import SparseBatch
from shardtrain.models.multitask import masked_task_loss
from shardtrain.models.protocol import EvalOutput, Loss, SupervisedModel


def _batch(n=12, classes=3, seed=0, missing=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    if missing:
        y[2] = -1  # an unlabelled row
    w = torch.rand(n, generator=g) + 0.5
    w[-1] = 0.0  # a DDP padding row
    ids = torch.arange(100, 100 + n)
    return {"x": x, "y": y, "w": w, "sample_id": ids, "source_id": ids}


def _weighted_ce(logits, y, w):
    keep = y >= 0
    per = F.cross_entropy(logits[keep], y[keep], reduction="none")
    return (per * w[keep]).sum() / w[keep].sum()


def test_every_model_follows_the_protocol():
    models = [MLP(5, (4,), 3), EmbeddingBagMLP(10, 4, (), 2),
              BaggingEnsemble(lambda: MLP(5, (4,), 3), members=2),
              MultiTaskMLP(nn.Sequential(nn.Linear(5, 4), nn.ReLU()), 4, {"a": 3, "b": "regression"})]
    for model in models:
        assert isinstance(model, SupervisedModel) and isinstance(model, nn.Module), type(model).__name__
    assert [m.metric_heads for m in models] == [1, 1, 3, 1]
    assert [dict(m.tasks) for m in models] == [{"label": 3}, {"label": 2}, {"label": 3}, {"a": 3, "b": "regression"}]


def test_mlp_loss_is_weighted_cross_entropy_over_labelled_rows():
    torch.manual_seed(0)
    model, batch = MLP(5, (8,), 3), _batch()
    loss = model.loss(batch)
    assert isinstance(loss, Loss) and set(loss.stats) == {"train_correct", "train_count"}  # the train accuracy's
    torch.testing.assert_close(loss.value, _weighted_ce(model(batch["x"]), batch["y"], batch["w"]))
    wv = batch["w"] * (batch["y"] >= 0)
    torch.testing.assert_close(loss.stats["train_correct"], ((model(batch["x"]).argmax(-1) == batch["y"]) * wv).sum())
    torch.testing.assert_close(loss.stats["train_count"], wv.sum())
    full = _batch(missing=False)
    unit = {**full, "w": torch.ones(12), "unit_weights": True}  # the DataModule's fast path: plain mean
    torch.testing.assert_close(model.loss(unit).value, F.cross_entropy(model(full["x"]), full["y"]))
    torch.testing.assert_close(model.loss(unit).value, model.loss({**unit, "unit_weights": False}).value)
    probs = model.predict(batch["x"])["label"]
    torch.testing.assert_close(probs, torch.softmax(model(batch["x"]), -1))
    (out,) = model.eval_outputs(batch).values()
    assert isinstance(out, EvalOutput) and out.pred.shape == (1, 12, 3) and out.loss[0, 2] == 0.0


def test_mse_and_regression_objectives():
    torch.manual_seed(0)
    batch = _batch(classes=2)
    one = MLP(5, (), 1, output_activation="sigmoid", objective="mse")  # the course's one-unit network
    z = one(batch["x"])[:, 0]
    keep = batch["y"] >= 0
    expected = ((z - batch["y"].float()).square() * batch["w"])[keep].sum() / batch["w"][keep].sum()
    torch.testing.assert_close(one.loss(batch).value, expected)
    assert one.tasks == {"label": 2}
    torch.testing.assert_close(one.predict(batch["x"])["label"], torch.stack([1 - z, z], -1))
    wide = MLP(5, (), 2, objective="mse")
    out = wide(batch["x"])
    per = (out - F.one_hot(batch["y"].clamp_min(0), 2)).square().mean(-1)
    torch.testing.assert_close(wide.loss(batch).value, (per * batch["w"])[keep].sum() / batch["w"][keep].sum())
    reg = MLP(5, (4,), 1, objective="regression")
    target = batch["x"][:, 0].clone()
    target[3] = float("nan")  # missing
    rb = {**batch, "y": target}
    pred = reg(batch["x"])[:, 0]
    ok = ~torch.isnan(target)
    torch.testing.assert_close(reg.loss(rb).value, ((pred - target).square() * batch["w"])[ok].sum() / batch["w"][ok].sum())
    torch.testing.assert_close(reg.predict(batch["x"])["label"], pred)
    assert reg.tasks == {"label": "regression"}


def test_embedding_bag_mlp_loss_on_sparse_batches():
    torch.manual_seed(0)
    model = EmbeddingBagMLP(20, 4, (), 2)
    x = SparseBatch.from_rows([[1, 2], [3], [], [19, 4]], [[1.0, 0.5], [2.0], [], [0.3, 0.3]])
    batch = {"x": x, "y": torch.tensor([0, 1, 1, -1]), "w": torch.tensor([1.0, 2.0, 0.5, 1.0])}
    torch.testing.assert_close(model.loss(batch).value, _weighted_ce(model(x), batch["y"], batch["w"]))
    assert model.predict(x)["label"].shape == (4, 2)


@pytest.mark.parametrize("impl", ["sequential", "vmap", "bmm"])
def test_bagging_loss_sums_bootstrap_weighted_member_losses(impl):
    ens = BaggingEnsemble(lambda: MLP(5, (8,), 3), members=3, seed=4, impl=impl)
    batch = _batch()
    loss = ens.loss(batch)
    counts = ens.bootstrap_weights(batch["source_id"])  # (K, B)
    keep = batch["y"] >= 0
    w = batch["w"] * keep
    expected = sum((counts[k] * w * F.cross_entropy(ens.member(k)(batch["x"]), batch["y"].clamp_min(0),
                                                    reduction="none")).sum() / w.sum() for k in range(3))
    torch.testing.assert_close(loss.value, expected)
    oob = (counts == 0) & keep & (batch["w"] > 0)  # (K, B)
    assert loss.stats["oob_total"].tolist() == oob.sum(1).tolist()
    right = torch.stack([ens.member(k)(batch["x"]).argmax(-1) == batch["y"] for k in range(3)])
    assert loss.stats["oob_correct"].tolist() == (oob & right).sum(1).tolist()
    metrics = ens.training_metrics(loss.stats)["oob_accuracy"]
    assert [m is None for m in metrics] == (oob.sum(1) == 0).tolist()
    assert ens.training_metrics(None) == {"oob_accuracy": [None] * 3}
    probs = torch.stack([torch.softmax(ens.member(k)(batch["x"]), -1) for k in range(3)]).mean(0)
    torch.testing.assert_close(ens.predict(batch["x"])["label"], probs)
    (out,) = ens.eval_outputs(batch).values()
    assert out.pred.shape == (4, 12, 3)  # the ensemble, then each member
    torch.testing.assert_close(out.pred[0], probs)
    p_true = probs[keep].gather(1, batch["y"][keep][:, None])[:, 0]
    torch.testing.assert_close(out.loss[0][keep], -torch.log(p_true))


def test_multitask_loss_masks_missing_labels_and_weights_tasks():
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(5, 8), nn.ReLU())
    model = MultiTaskMLP(trunk, 8, {"kind": 3, "size": "regression"}, "uncertainty")
    with torch.no_grad():
        model.log_vars.copy_(torch.tensor([0.3, -0.2]))
    batch = _batch()
    size = batch["x"][:, 1].clone()
    size[0] = float("nan")
    batch["y"] = {"label_kind": batch["y"], "label_size": size.double()}  # as the DataModule names them
    out = model(batch["x"])
    ce = masked_task_loss(out["kind"], batch["y"]["label_kind"], batch["w"])
    ok = ~torch.isnan(size)
    se = ((out["size"] - size).square() * batch["w"])[ok].sum() / batch["w"][ok].sum()
    torch.testing.assert_close(ce, _weighted_ce(out["kind"], batch["y"]["label_kind"], batch["w"]))
    expected = torch.exp(torch.tensor(-0.3)) * ce + 0.15 + 0.5 * torch.exp(torch.tensor(0.2)) * se - 0.1
    torch.testing.assert_close(model.loss(batch).value, expected)
    preds = model.predict(batch["x"])
    torch.testing.assert_close(preds["kind"], torch.softmax(out["kind"], -1))
    torch.testing.assert_close(preds["size"], out["size"])
    evals = model.eval_outputs(batch)
    assert evals["kind"].pred.shape == (1, 12, 3) and evals["size"].loss[0, 0] == 0.0


def test_a_model_of_ones_own_plugs_into_the_shell():
    """Any nn.Module with the protocol trains through ShardTrainModule (plain tensor loss allowed)."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    from shardtrain.config import EvaluateConfig, MLPConfig, TrainConfig
    from shardtrain.training.module import ShardTrainModule

    class Linear(nn.Module):
        tasks, metric_heads = {"label": 3}, 1

        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(5, 3)

        def forward(self, x):
            return self.lin(x)

        def loss(self, batch):
            return _weighted_ce(self(batch["x"]), batch["y"], batch["w"])

        def predict(self, x):
            return {"label": torch.softmax(self(x), -1)}

        def eval_outputs(self, batch):
            out = self(batch["x"])
            per = F.cross_entropy(out, batch["y"].clamp_min(0), reduction="none") * (batch["y"] >= 0)
            return {"label": EvalOutput(torch.softmax(out, -1)[None], batch["y"], per[None])}

        def training_metrics(self, stats):
            return {}

        def summarize(self, reports):
            result = dict(reports["label"][0])
            return result, {"loss": result["loss"]}

    labels = {"label": {"classes": ["a", "b", "c"]}}
    module = ShardTrainModule(Linear(), MLPConfig(), TrainConfig(optimizer="sgd", lr=0.1, max_epochs=2),
                              EvaluateConfig(), labels)
    batches = [_batch(seed=s) for s in range(3)]
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    trainer.test(module, dataloaders=DataLoader(batches, batch_size=None), verbose=False)
    assert trainer.global_step == 6 and module.metrics_dict("test")["samples"] == 3 * 10
