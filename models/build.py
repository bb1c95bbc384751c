"""Build the model a config names for the features and labels a shard index describes.

Which model:

- ``kind == "mlp"``: an :class:`~models.mlp.MLP` (dense features) or an
  :class:`~models.text.EmbeddingBagMLP` (sparse features), one output per class
  (one output for a regression label).
- ``kind == "bagging"``: a :class:`~models.bagging.BaggingEnsemble` of ``members`` such models.
- ``kind == "multitask"``: a :class:`~models.multitask.MultiTaskMLP` whose trunk
  is the same network up to its last hidden layer (ending in the hidden activation),
  with one head per task. A ``kind == "mlp"`` whose one label column is named
  ``label_<task>`` (the DataModule then yields ``y`` as a dict) is built the same way;
  several label columns need ``kind: multitask`` (refused otherwise, as is bagging on them).

Each model owns its loss (``shardtrain.models.protocol``): single-task networks get the
objective ``train.loss`` resolves to (``build_model(..., loss=cfg.train.loss)``).
Kind-specific fields are read only for their kind (``members``/``bootstrap``/``impl`` for
bagging, ``task_weighting``/``task_weights`` for multitask), so a config class per kind works.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from shardtrain.models.bagging import BaggingEnsemble
from shardtrain.models.mlp import MLP
from shardtrain.models.multitask import MultiTaskMLP
from shardtrain.models.objective import Objective, resolve_loss
from shardtrain.models.protocol import REGRESSION
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
    """Whether :func:`build_model` builds a multitask model for these labels (see the module docstring).

    Several label columns with a single-task ``model.kind`` are refused here, naming the fix.
    """
    if model_cfg.kind == "multitask":
        return True
    named = any(c.startswith("label_") for c in labels)
    if len(labels) > 1 or (named and model_cfg.kind == "bagging"):
        raise ShardtrainError(f"model.kind: {model_cfg.kind} is single-task but the shards' labels are multitask "
                              f"({sorted(labels)}); use model.kind=multitask")
    return named


def _network(model_cfg: Any, feature: Mapping[str, Any], hidden: tuple[int, ...], out: int,
             output_activation: str | None = None, objective: str = "cross_entropy") -> nn.Module:
    """The plain network (dense MLP or sparse EmbeddingBagMLP) from features to ``out`` units."""
    kind = feature.get("kind", "dense")
    if kind == "sparse":
        if "dim" not in feature:
            raise ShardtrainError("features.x.dim: a sparse feature needs its bucket count 'dim'")
        return EmbeddingBagMLP(int(feature["dim"]), model_cfg.embed_dim, hidden, out, model_cfg.dropout,
                               model_cfg.activation, output_activation=output_activation, objective=objective)
    if kind != "dense":
        raise ShardtrainError(f"features.x.kind: unknown feature kind {kind!r}; expected 'dense' or 'sparse'")
    if "shape" not in feature:
        raise ShardtrainError("features.x.shape: a dense feature needs its 'shape'")
    in_features = math.prod(int(d) for d in feature["shape"])
    return MLP(in_features, hidden, out, model_cfg.dropout, model_cfg.activation, output_activation=output_activation,
               objective=objective)


def build_model(model_cfg: Any, feature: Mapping[str, Any], labels: Mapping[str, Mapping[str, Any]],
                loss: str = "auto") -> nn.Module:
    """Build the ``nn.Module`` for ``model_cfg`` (``cfg.model``), the index's ``features["x"]`` and ``labels``.

    ``loss`` is ``cfg.train.loss`` (``"auto"``, ``"cross_entropy"`` or ``"mse"``); multitask
    models take cross-entropy / squared error per task and accept only ``"auto"``.

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
            resolve_loss(loss, 2)  # refuses an unknown name, naming the allowed ones
            if loss == "mse":
                raise ShardtrainError("train.loss: multitask models use cross-entropy / squared error per task; use 'auto'")
            if hidden:
                trunk, trunk_out = _network(model_cfg, feature, hidden[:-1], hidden[-1], model_cfg.activation), hidden[-1]
            elif feature.get("kind", "dense") == "sparse":  # the EmbeddingBag front is the trunk's only hidden layer
                trunk = _network(model_cfg, feature, (), model_cfg.embed_dim, model_cfg.activation)
                trunk_out = model_cfg.embed_dim
            else:  # linear heads straight on the features
                trunk, trunk_out = nn.Flatten(), math.prod(int(d) for d in feature["shape"])
            if model_cfg.kind == "multitask":
                weighting, weights = model_cfg.task_weighting, dict(model_cfg.task_weights or {})
            else:  # an mlp on one label_<task> column: a one-head multitask model, equally weighted
                weighting, weights = "equal", {}
            return MultiTaskMLP(trunk, trunk_out, specs, weighting, weights)
        (spec,) = specs.values()
        objective = resolve_loss(loss, spec)
        out = 1 if spec == REGRESSION else int(spec)
        if model_cfg.kind == "bagging":
            model = BaggingEnsemble(lambda: _network(model_cfg, feature, hidden, out, objective=objective),
                                    model_cfg.members, model_cfg.bootstrap, model_cfg.seed, model_cfg.impl)
        else:
            model = _network(model_cfg, feature, hidden, out, objective=objective)
    (desc,) = labels.values()
    if objective == REGRESSION and desc.get("mean") is not None:
        # The label's training mean/std (the index's label description): fit in standard units.
        for part in model.modules():
            if isinstance(getattr(part, "objective", None), Objective):
                part.objective.set_target_scale(desc["mean"], desc.get("std") or 1.0)
    return model
