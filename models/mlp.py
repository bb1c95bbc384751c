"""The multilayer perceptron every shardtrain model is built from.

The defaults reproduce the course's Fashion-MNIST network, 784-512-512-10:
``Linear(784, 512) - ReLU - Linear(512, 512) - ReLU - Linear(512, 10)``, which
outputs logits (the softmax lives in the loss).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from shardtrain.core.errors import ShardtrainError
from shardtrain.models.objective import Objective, SingleTaskModel

#: Hidden-layer activations by config name.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "softplus": nn.Softplus,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
}


def make_activation(name: str, key: str = "model.activation") -> nn.Module:
    """Return a fresh activation module for ``name`` (one of :data:`ACTIVATIONS`).

    ``key`` names the config key in the error raised for an unknown name, so a
    typo in a YAML file is reported where it was made.
    """
    if name not in ACTIVATIONS:
        raise ShardtrainError(f"{key}: unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class MLP(SingleTaskModel, nn.Module):
    """A stack of Linear layers with an activation (and optional dropout) after each hidden one.

    ``hidden=()`` gives a single Linear layer (a linear / logistic model). Inputs with
    more than two dimensions are flattened after the batch dimension, so ``(B, 28, 28)``
    and ``(B, 784)`` both work. ``output_activation`` is applied after the last layer
    (``None`` = raw logits, the default; ``"sigmoid"`` reproduces the course's
    one-unit backprop example; any :data:`ACTIVATIONS` name is accepted, which is how
    a multitask trunk ends in its hidden activation).

    ``objective`` (``"cross_entropy"``, ``"mse"`` or ``"regression"``) is the loss
    :meth:`loss` applies to a batch (see ``shardtrain.models.objective``); it is unused
    when the MLP is a multitask trunk.

    The layers live in ``self.net`` (an ``nn.Sequential``); :meth:`linear_names`
    lists the Linear layers' names in order, which the bagging ensemble's fused
    batched-matmul path uses.

    Example::

        >>> MLP(784)(torch.zeros(2, 784)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (512, 512),
        out_features: int = 10,
        dropout: float = 0.0,
        activation: str = "relu",
        bias: bool = True,
        output_activation: str | None = None,
        objective: str = "cross_entropy",
    ) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1 or any(h < 1 for h in hidden):
            raise ShardtrainError(
                f"model.hidden: layer sizes must be >= 1, got in={in_features} hidden={tuple(hidden)} out={out_features}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ShardtrainError(f"model.dropout: must be in [0, 1), got {dropout}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.hidden = tuple(int(h) for h in hidden)
        self.activation = activation
        self.dropout = float(dropout)
        self.bias = bool(bias)
        self.output_activation = output_activation
        layers: list[nn.Module] = []
        widths = (self.in_features, *self.hidden)
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(fan_in, fan_out, bias=bias), make_activation(activation)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(widths[-1], self.out_features, bias=bias))
        if output_activation is not None:
            layers.append(make_activation(output_activation, key="model.output_activation"))
        self.net = nn.Sequential(*layers)
        self.objective = Objective(objective, self.out_features)

    def linear_names(self) -> list[str]:
        """Names (inside this module) of the Linear layers in forward order, e.g. ``["net.0", "net.2", "net.4"]``."""
        return [f"net.{i}" for i, m in enumerate(self.net) if isinstance(m, nn.Linear)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map features ``(B, F)`` (or ``(B, *shape)``) to outputs ``(B, out_features)``."""
        if x.dim() > 2:
            x = x.flatten(1)  # (B, *shape) -> (B, F), a view
        return self.net(x)
