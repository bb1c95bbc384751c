"""Shared plumbing for text augmenters: per-copy random streams and batch expansion.

Randomness. Copy `c` of the row with id `sample_id` draws from its own stream of uniforms,
a SplitMix64 sequence keyed by a hash of (seed, sample_id, c): number j of the stream is
``splitmix64(key + (j + 1) * 0x9E3779B97F4A7C15) >> 11`` scaled to [0, 1). A stream is a pure
function of (seed, sample_id, copy): no dependence on batch boundaries, workers, or how many
numbers other copies used, and `copy_uniforms` computes any set of streams in one vectorised
numpy pass. Stream 0 (the original row, which needs no randomness) holds per-row choices
such as which EDA operation each copy gets.

Sample ids (the same scheme as `shardtrain.augment.image`). An augmented row keeps its source's id in
``source_id`` and gets ``sample_id = source_id + aug_index * 2**32`` (aug_index 0 = the
untouched original, which keeps its id); source ids must lie in [0, 2**32).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from shardtrain.core.errors import ShardtrainError
from shardtrain.core.seeding import chain_key, stream, to_unit

AUG_ID_SHIFT = 32  # an augmented copy's sample_id is source_id + aug_index * 2**32


def stream_keys(seed: int, sample_ids: np.ndarray, copies: np.ndarray) -> np.ndarray:
    """Key (uint64) of the stream of each (seed, sample_id, copy); inputs broadcast."""
    return chain_key(seed, sample_ids, copies)


def copy_uniforms(seed: int, sample_ids: np.ndarray, copies: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenate, for each i, the first counts[i] uniforms of stream (seed, sample_ids[i],
    copies[i]); returns float64 (sum(counts),) in [0, 1)."""
    counts = np.asarray(counts, dtype=np.int64)
    keys = np.broadcast_to(stream_keys(seed, sample_ids, copies), counts.shape)
    j = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    return to_unit(stream(np.repeat(keys, counts), j))


def texts_of(batch: dict[str, Any], text_col: str) -> list[str]:
    """Return the batch's text column as a list of str, or raise naming the column."""
    if text_col not in batch:
        raise ShardtrainError(f"text augmentation: batch has no column '{text_col}' "
                              f"(columns: {', '.join(sorted(batch))})")
    col = batch[text_col]
    texts = col.to_pylist() if hasattr(col, "to_pylist") else list(col)
    for i, t in enumerate(texts):
        if type(t) is not str:
            if not isinstance(t, str):
                raise ShardtrainError(f"text augmentation: column '{text_col}' row {i}: "
                                      f"expected str, got {type(t).__name__}")
            texts[i] = str(t)  # numpy str_ from a fixed-width '<U' column
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
    if "aug_index" in batch or "source_id" in batch:
        raise ShardtrainError("text augmentation: the input already has aug_index/source_id columns "
                              "(augmented twice?)")
    if n and (ids.min() < 0 or ids.max() >= 1 << AUG_ID_SHIFT):
        raise ShardtrainError(f"text augmentation: {id_col} outside [0, 2**{AUG_ID_SHIFT}); "
                              f"copy ids would collide")
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
