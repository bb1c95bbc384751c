"""An MLP whose first layer reads hashed sparse features through ``nn.EmbeddingBag``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from shardtrain.models.inputs import SparseBatch
from shardtrain.models.mlp import MLP, make_activation
from shardtrain.models.objective import Objective, SingleTaskModel
from shardtrain.core.errors import ShardtrainError


class EmbeddingBagMLP(SingleTaskModel, nn.Module):
    """``MLP(num_buckets, (embed_dim, *hidden), out_features)`` evaluated on a sparse input.

    The first layer is ``nn.EmbeddingBag(num_buckets, embed_dim, mode="sum")`` with
    per-sample weights plus a bias, followed by the hidden activation (and dropout):
    it computes exactly ``act(dense_x @ W + b)`` without materialising the
    ``(B, num_buckets)`` dense matrix (``W`` is the embedding table). The rest is an
    :class:`~models.mlp.MLP` from ``embed_dim`` to ``out_features``. The table keeps
    EmbeddingBag's ``N(0, 1)`` init, which gives unit-scale pre-activations for
    L2-normalised tf-idf rows. ``objective`` is the loss, as for :class:`~models.mlp.MLP`.

    Example::

        >>> m = EmbeddingBagMLP(1000, embed_dim=8, hidden=(), out_features=2)
        >>> m(SparseBatch.from_rows([[1, 5], []], [[0.5, 0.5], []])).shape
        torch.Size([2, 2])
    """

    def __init__(
        self,
        num_buckets: int,
        embed_dim: int = 64,
        hidden: Sequence[int] = (256,),
        out_features: int = 2,
        dropout: float = 0.0,
        activation: str = "relu",
        output_activation: str | None = None,
        objective: str = "cross_entropy",
    ) -> None:
        super().__init__()
        if num_buckets < 1 or embed_dim < 1:
            raise ShardtrainError(f"model.embed_dim: need num_buckets >= 1 and embed_dim >= 1, got {num_buckets}, {embed_dim}")
        self.num_buckets = int(num_buckets)
        self.embed_dim = int(embed_dim)
        self.out_features = int(out_features)
        self.embed = nn.EmbeddingBag(num_buckets, embed_dim, mode="sum")
        self.embed_bias = nn.Parameter(torch.zeros(embed_dim))
        self.act = make_activation(activation)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.mlp = MLP(embed_dim, hidden, out_features, dropout, activation, output_activation=output_activation)
        self.objective = Objective(objective, self.out_features)

    def forward(self, x: SparseBatch) -> torch.Tensor:
        """Map a :class:`SparseBatch` of ``B`` rows to outputs ``(B, out_features)``."""
        h = self.embed(x.ids, x.offsets, per_sample_weights=x.weights)  # (B, embed_dim)
        return self.mlp(self.drop(self.act(h + self.embed_bias)))
