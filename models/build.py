"""Build the model a config names for the features and labels a shard index describes.

Which model:

- ``kind == "mlp"``: an :class:`~models.mlp.MLP` (dense features) or an
  :class:`~models.text.EmbeddingBagMLP` (sparse features), one output per class
  (one output for a regression label).
- ``kind == "bagging"``: a :class:`~models.bagging.BaggingEnsemble` of ``members`` such models.
- ``kind == "multitask"``, **or automatically** whenever the labels are multitask
  (more than one label column, or any ``label_<task>`` column, i.e. whenever the
  DataModule yields ``y`` as a dict): a :class:`~models.multitask.MultiTaskMLP` whose trunk
  is the same network up to its last hidden layer (ending in the hidden activation),
  with one head per task. Bagging on multitask labels is refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from shardtrain.models.bagging import BaggingEnsemble
from shardtrain.models.mlp import MLP
from shardtrain.models.multitask import REGRESSION, MultiTaskMLP
from shardtrain.models.text import EmbeddingBagMLP
from shardtrain.core.errors import ShardtrainError

KINDS = ("mlp", "bagging", "multitask")


def task_specs(labels: Mapping[str, Mapping[str, Any]]) -> dict[str, int | str]:
    """``{task: class count or "regression"}`` from the index's label description.

    Column ``label`` becomes task ``"label"``; ``label_<task>`` becomes ``<task>``. A
    ``classes`` of ``None`` means regression.
    """
    if not labels:
        raise ShardtrainError("labels: the shard index describes no label column")
    specs: dict[str, int | str] = {}
    for column, desc in labels.items():
        if column != "label" and not column.startswith("label_"):
            raise ShardtrainError(f"labels.{column}: label columns must be 'label' or 'label_<task>'")
        task = "label" if column == "label" else column[len("label_"):]
        classes = desc.get("classes")
        if classes is not None and len(classes) < 2:
            raise ShardtrainError(f"labels.{column}.classes: need at least 2 classes, got {list(classes)}")
        specs[task] = REGRESSION if classes is None else len(classes)
    return specs


def is_multitask(model_cfg: Any, labels: Mapping[str, Any]) -> bool:
    """Whether :func:`build_model` builds a multitask model for these labels (see the module docstring)."""
    return model_cfg.kind == "multitask" or len(labels) > 1 or any(c.startswith("label_") for c in labels)


def _network(model_cfg: Any, feature: Mapping[str, Any], hidden: tuple[int, ...], out: int,
             output_activation: str | None = None) -> nn.Module:
    """The plain network (dense MLP or sparse EmbeddingBagMLP) from features to ``out`` units."""
    kind = feature.get("kind", "dense")
    if kind == "sparse":
        if "dim" not in feature:
            raise ShardtrainError("features.x.dim: a sparse feature needs its bucket count 'dim'")
        return EmbeddingBagMLP(int(feature["dim"]), model_cfg.embed_dim, hidden, out, model_cfg.dropout,
                               model_cfg.activation, output_activation=output_activation)
    if kind != "dense":
        raise ShardtrainError(f"features.x.kind: unknown feature kind {kind!r}; expected 'dense' or 'sparse'")
    if "shape" not in feature:
        raise ShardtrainError("features.x.shape: a dense feature needs its 'shape'")
    in_features = math.prod(int(d) for d in feature["shape"])
    return MLP(in_features, hidden, out, model_cfg.dropout, model_cfg.activation, output_activation=output_activation)


def build_model(model_cfg: Any, feature: Mapping[str, Any], labels: Mapping[str, Mapping[str, Any]]) -> nn.Module:
    """Build the ``nn.Module`` for ``model_cfg`` (``cfg.model``), the index's ``features["x"]`` and ``labels``.

    Initialisation is seeded from ``model_cfg.seed`` (the global RNG state is restored),
    so the same config builds the same weights.
    """
    if model_cfg.kind not in KINDS:
        raise ShardtrainError(f"model.kind: unknown model kind {model_cfg.kind!r}; expected one of {list(KINDS)}")
    specs = task_specs(labels)
    hidden = tuple(int(h) for h in model_cfg.hidden)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(model_cfg.seed)
        if is_multitask(model_cfg, labels):
            if model_cfg.kind == "bagging":
                raise ShardtrainError("model.kind: bagging is single-task; these labels are multitask "
                                      f"({sorted(labels)}); use model.kind=multitask")
            if hidden:
                trunk, trunk_out = _network(model_cfg, feature, hidden[:-1], hidden[-1], model_cfg.activation), hidden[-1]
            elif feature.get("kind", "dense") == "sparse":  # the EmbeddingBag front is the trunk's only hidden layer
                trunk = _network(model_cfg, feature, (), model_cfg.embed_dim, model_cfg.activation)
                trunk_out = model_cfg.embed_dim
            else:  # linear heads straight on the features
                trunk, trunk_out = nn.Flatten(), math.prod(int(d) for d in feature["shape"])
            return MultiTaskMLP(trunk, trunk_out, specs, model_cfg.task_weighting, dict(model_cfg.task_weights or {}))
        (spec,) = specs.values()
        out = 1 if spec == REGRESSION else int(spec)
        if model_cfg.kind == "bagging":
            return BaggingEnsemble(lambda: _network(model_cfg, feature, hidden, out), model_cfg.members,
                                   model_cfg.bootstrap, model_cfg.seed, model_cfg.impl)
        return _network(model_cfg, feature, hidden, out)
