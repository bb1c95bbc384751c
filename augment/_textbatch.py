"""Shared plumbing for text augmenters: per-copy random streams and batch expansion.

Randomness. Copy `c` of the row with id `sample_id` draws from a Philox stream whose key is
(sample_id, seed) and whose counter starts at (0, c, 0, 0). Philox is counter-based, so a
stream is a pure function of (seed, sample_id, copy): no dependence on batch boundaries,
workers or how many numbers other copies used. Slot 0 (the original row, which needs no
randomness) is used for per-row choices such as which EDA operation each copy gets.

Sample ids. An augmented row keeps its source's id in ``source_id`` and gets
``sample_id = source_id + (aug_index << AUG_ID_SHIFT)`` (aug_index 0 = the untouched
original, which keeps its id), unique as long as source ids stay below 2**40.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pipelines.errors import ShardtrainError

AUG_ID_SHIFT = 40
_MASK64 = (1 << 64) - 1


def copy_rng(seed: int, sample_id: int, copy: int) -> np.random.Generator:
    """Return a fresh Generator for (seed, sample_id, copy); same stream as `CopyRngPool.at`."""
    key = (int(sample_id) & _MASK64) | ((int(seed) & _MASK64) << 64)
    return np.random.Generator(np.random.Philox(key=key, counter=(int(copy) & _MASK64) << 64))


class CopyRngPool:
    """One reusable Philox Generator re-keyed per (sample_id, copy): about 5x cheaper than
    constructing a Generator per copy, and yields exactly the streams of `copy_rng`."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed) & _MASK64
        self._bitgen = np.random.Philox(key=0)
        self.rng = np.random.Generator(self._bitgen)
        self._key = np.zeros(2, dtype=np.uint64)
        self._counter = np.zeros(4, dtype=np.uint64)
        self._state: dict[str, Any] = dict(self._bitgen.state)
        self._state["state"] = {"counter": self._counter, "key": self._key}

    def at(self, sample_id: int, copy: int) -> np.random.Generator:
        """Re-key the pooled Generator to the stream of (seed, sample_id, copy) and return it."""
        self._key[0] = int(sample_id) & _MASK64
        self._key[1] = self.seed
        self._counter[:] = 0
        self._counter[1] = int(copy) & _MASK64
        self._state["buffer_pos"] = 4  # drop any buffered output of the previous stream
        self._state["has_uint32"] = 0
        self._bitgen.state = self._state
        return self.rng


def texts_of(batch: dict[str, Any], text_col: str) -> list[str]:
    """Return the batch's text column as a list of str, or raise naming the column."""
    if text_col not in batch:
        raise ShardtrainError(f"text augmentation: batch has no column '{text_col}' "
                              f"(columns: {', '.join(sorted(batch))})")
    col = batch[text_col]
    texts = col.to_pylist() if hasattr(col, "to_pylist") else list(col)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ShardtrainError(f"text augmentation: column '{text_col}' row {i}: "
                                  f"expected str, got {type(t).__name__}")
    return texts


def ids_of(batch: dict[str, Any], id_col: str, n: int) -> np.ndarray:
    """Return the batch's id column as int64 (n,), or raise naming the column."""
    if id_col not in batch:
        raise ShardtrainError(f"text augmentation: batch has no column '{id_col}'")
    ids = np.asarray(batch[id_col], dtype=np.int64)
    if ids.shape != (n,):
        raise ShardtrainError(f"text augmentation: column '{id_col}' has shape {ids.shape}, expected ({n},)")
    return ids


def expand_batch(batch: dict[str, Any], copies: Sequence[Sequence[str]], texts: Sequence[str],
                 text_col: str, id_col: str, include_original: bool) -> dict[str, Any]:
    """Build the output batch: per input row, the original (when asked) then its copies.

    `copies[i]` holds the augmented texts of row i (all rows the same count). Other columns
    are repeated per output row; ``source_id``, ``aug_index`` (int32) and a fresh unique
    ``sample_id`` are set as described in the module docstring.
    """
    n = len(texts)
    n_aug = len(copies[0]) if n else 0  # all rows carry the same number of copies
    per_row = n_aug + int(include_original)
    ids = ids_of(batch, id_col, n)
    take = np.repeat(np.arange(n), per_row)                                   # (N * R,)
    out: dict[str, Any] = {}
    for name, col in batch.items():
        out[name] = col.take(take) if hasattr(col, "take") and not isinstance(col, np.ndarray) \
            else np.asarray(col)[take]
    flat: list[str] = []
    for text, row in zip(texts, copies):
        if include_original:
            flat.append(text)
        flat.extend(row)
    out[text_col] = np.array(flat, dtype=object) if flat else np.empty(0, dtype=object)
    first = 0 if include_original else 1
    aug_index = np.tile(np.arange(first, n_aug + 1, dtype=np.int32), n)      # (N * R,)
    source = ids[take]
    out["source_id"] = source
    out["aug_index"] = aug_index
    out[id_col] = source + (aug_index.astype(np.int64) << AUG_ID_SHIFT)
    return out
