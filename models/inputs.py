"""Input containers shared by the DataModule and the models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch


class SparseBatch(NamedTuple):
    """A batch of sparse feature vectors in ``nn.EmbeddingBag`` convention.

    Row ``b`` holds the (bucket id, weight) pairs ``ids[offsets[b]:offsets[b+1]]`` /
    ``weights[...]`` (the last row runs to ``nnz``); an empty row has
    ``offsets[b] == offsets[b+1]``. Being a NamedTuple, Lightning's
    ``move_data_to_device`` moves it to the accelerator field by field.

    Fields: ``ids`` int64 ``(nnz,)``, ``offsets`` int64 ``(B,)`` (start of each row),
    ``weights`` float32 ``(nnz,)``.
    """

    ids: torch.Tensor
    offsets: torch.Tensor
    weights: torch.Tensor

    @property
    def batch_size(self) -> int:
        """Number of rows ``B`` (a shape, so no device sync)."""
        return self.offsets.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> SparseBatch:
        """Return a copy with all three tensors on ``device``."""
        return SparseBatch(*(t.to(device, non_blocking=non_blocking) for t in self))

    @classmethod
    def from_rows(cls, ids: Sequence[Sequence[int]], weights: Sequence[Sequence[float]]) -> SparseBatch:
        """Build a batch from per-row id and weight lists (for tests and small tools, not the hot path)."""
        lengths = torch.tensor([len(r) for r in ids], dtype=torch.int64)  # (B,)
        offsets = torch.cumsum(lengths, 0) - lengths  # (B,) exclusive prefix sum
        flat_ids = torch.tensor([i for r in ids for i in r], dtype=torch.int64)  # (nnz,)
        flat_w = torch.tensor([v for r in weights for v in r], dtype=torch.float32)  # (nnz,)
        return cls(flat_ids, offsets, flat_w)

    def to_dense(self, dim: int) -> torch.Tensor:
        """Scatter into a dense ``(B, dim)`` float32 matrix (duplicate ids add up); a test oracle."""
        b = self.batch_size
        row = torch.searchsorted(self.offsets, torch.arange(self.ids.numel(), device=self.ids.device), right=True) - 1
        dense = torch.zeros(b, dim, dtype=torch.float32, device=self.ids.device)
        dense.index_put_((row, self.ids), self.weights.float(), accumulate=True)
        return dense
