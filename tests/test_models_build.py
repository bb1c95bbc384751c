"""build_model: which network a config and a shard index's feature/label description give."""

import pytest
import torch
from torch import nn

from shardtrain.models.bagging import BaggingEnsemble
from shardtrain.models.build import build_model, is_multitask, task_specs
from shardtrain.models.inputs import SparseBatch
from shardtrain.models.mlp import MLP
from shardtrain.models.multitask import MultiTaskMLP
from shardtrain.models.text import EmbeddingBagMLP
from shardtrain.config import BaggingConfig, MLPConfig, ModelConfig, MultitaskConfig
from shardtrain.core.errors import ShardtrainError


def model_cfg(kind: str = "mlp", **overrides) -> ModelConfig:
    """The real ``model`` config section of ``kind``, with small test sizes."""
    if kind not in ("mlp", "bagging", "multitask"):  # what an unvalidated config could carry
        return MLPConfig.model_construct(kind=kind, hidden=(32, 16), embed_dim=8, **overrides)
    cls = {"mlp": MLPConfig, "bagging": BaggingConfig, "multitask": MultitaskConfig}[kind]
    return cls(**{"hidden": (32, 16), "embed_dim": 8, **({"members": 3} if kind == "bagging" else {}), **overrides})


DENSE = {"kind": "dense", "shape": [28, 28], "dtype": "uint8", "scale": 1 / 255, "offset": 0.0}
SPARSE = {"kind": "sparse", "dim": 1000}
ONE = {"label": {"classes": ["ham", "spam"]}}
MULTI = {"label_service": {"classes": ["http", "ftp", "smtp"]}, "label_bytes": {"classes": None}}


def test_dense_single_task_is_an_mlp():
    model = build_model(model_cfg(), DENSE, {"label": {"classes": list("abcdefghij")}})
    assert isinstance(model, MLP) and (model.in_features, model.hidden, model.out_features) == (784, (32, 16), 10)
    assert model(torch.zeros(2, 784)).shape == (2, 10)


def test_sparse_single_task_is_an_embedding_bag_mlp():
    model = build_model(model_cfg(), SPARSE, ONE)
    assert isinstance(model, EmbeddingBagMLP) and model.num_buckets == 1000 and model.embed_dim == 8
    assert model(SparseBatch.from_rows([[3, 999]], [[1.0, 1.0]])).shape == (1, 2)


def test_regression_label_has_one_output():
    assert build_model(model_cfg(), DENSE, {"label": {"classes": None}}).out_features == 1


def test_build_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b = build_model(model_cfg(), DENSE, ONE), build_model(model_cfg(), DENSE, ONE)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    c = build_model(model_cfg(seed=1), DENSE, ONE)
    assert not torch.equal(a.net[0].weight, c.net[0].weight)


@pytest.mark.parametrize("feature", [DENSE, SPARSE])
def test_bagging_builds_an_ensemble_of_the_single_task_network(feature):
    model = build_model(model_cfg(kind="bagging", members=4), feature, ONE)
    assert isinstance(model, BaggingEnsemble) and model.members == 4
    assert isinstance(model.template, MLP if feature is DENSE else EmbeddingBagMLP)


def test_several_label_columns_need_kind_multitask():
    assert task_specs(MULTI) == {"service": 3, "bytes": "regression"}
    assert is_multitask(model_cfg(kind="multitask"), MULTI) and not is_multitask(model_cfg(), ONE)
    assert is_multitask(model_cfg(), {"label_spam": {"classes": ["no", "yes"]}})  # y arrives as a dict
    with pytest.raises(ShardtrainError, match="use model.kind=multitask"):
        is_multitask(model_cfg(), MULTI)
    with pytest.raises(ShardtrainError, match="use model.kind=multitask"):
        build_model(model_cfg(), DENSE, MULTI)
    model = build_model(model_cfg(kind="multitask", task_weighting="uncertainty"), DENSE, MULTI)
    assert isinstance(model, MultiTaskMLP) and model.log_vars is not None
    out = model(torch.zeros(2, 784))
    assert out["service"].shape == (2, 3) and out["bytes"].shape == (2,)
    # trunk = the MLP up to its last hidden layer, ending in the activation
    assert isinstance(model.trunk, MLP) and model.trunk.hidden == (32,) and model.trunk.out_features == 16
    assert isinstance(model.trunk.net[-1], nn.ReLU)


@pytest.mark.parametrize("hidden", [(), (16,)])
def test_multitask_on_sparse_features_and_without_hidden_layers(hidden):
    model = build_model(model_cfg(kind="multitask", hidden=hidden), SPARSE, MULTI)
    out = model(SparseBatch.from_rows([[1], [2, 3]], [[1.0], [0.5, 0.5]]))
    assert out["service"].shape == (2, 3)
    dense = build_model(model_cfg(kind="multitask", hidden=()), DENSE, ONE)
    assert isinstance(dense.trunk, nn.Flatten) and dense(torch.zeros(1, 784))["label"].shape == (1, 2)


def test_bad_configs_name_the_key():
    with pytest.raises(ShardtrainError, match="model.kind"):
        build_model(model_cfg(kind="transformer"), DENSE, ONE)
    with pytest.raises(ShardtrainError, match="model.kind"):
        build_model(model_cfg(kind="bagging"), DENSE, MULTI)
    with pytest.raises(ShardtrainError, match="features.x.kind"):
        build_model(model_cfg(), {"kind": "graph"}, ONE)
    with pytest.raises(ShardtrainError, match="labels.label.classes"):
        build_model(model_cfg(), DENSE, {"label": {"classes": ["only"]}})
    with pytest.raises(ShardtrainError, match="model.task_weighting"):
        build_model(model_cfg(kind="multitask").model_copy(update={"task_weighting": "magic"}), DENSE, MULTI)
    with pytest.raises(ShardtrainError, match="train.loss"):
        build_model(model_cfg(), DENSE, ONE, loss="hinge")
    with pytest.raises(ShardtrainError, match="train.loss"):
        build_model(model_cfg(), DENSE, {"label": {"classes": None}}, loss="cross_entropy")
    with pytest.raises(ShardtrainError, match="train.loss"):
        build_model(model_cfg(kind="multitask"), DENSE, MULTI, loss="mse")


class _PerKind:
    """A config class per ``model.kind`` (the pydantic union): no fields of the other kinds."""

    def __init__(self, **fields) -> None:
        self.__dict__.update(fields)


def test_only_kind_specific_fields_of_the_kind_are_read():
    common = dict(hidden=(8,), dropout=0.0, activation="relu", embed_dim=8, seed=0)
    assert isinstance(build_model(_PerKind(kind="mlp", **common), DENSE, ONE), MLP)
    assert isinstance(build_model(_PerKind(kind="mlp", **common), DENSE, {"label_spam": {"classes": ["n", "y"]}}),
                      MultiTaskMLP)
    bag = build_model(_PerKind(kind="bagging", members=2, bootstrap="poisson", impl="auto", **common), DENSE, ONE)
    assert isinstance(bag, BaggingEnsemble) and bag.members == 2
    multi = _PerKind(kind="multitask", task_weighting="static", task_weights={"service": 2.0}, **common)
    assert build_model(multi, DENSE, MULTI).static_weights.tolist() == [2.0, 1.0]


def test_train_loss_picks_each_single_task_objective():
    assert build_model(model_cfg(), DENSE, ONE).objective.kind == "cross_entropy"
    assert build_model(model_cfg(), DENSE, ONE, loss="mse").objective.kind == "mse"
    assert build_model(model_cfg(), DENSE, {"label": {"classes": None}}).objective.kind == "regression"
    bag = build_model(model_cfg(kind="bagging"), SPARSE, ONE, loss="mse")
    assert bag.objective.kind == "mse" and bag.tasks == {"label": 2}
