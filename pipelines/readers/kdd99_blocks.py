"""The kdd99 reader's passes over input blocks: small summaries for the driver, rows for the shard tasks.

Every function here runs inside a task (module level, so Ray pickles it by reference)
and reads its own block straight from storage (``shards.blocks.read_block``), parsed
exactly as :func:`shardtrain.readers.kdd99.read_kdd_file` parses a whole file. A
*piece* is ``(block, first_line)``: the block and the line number of its first line,
so line numbers (the ``sample_id``) run on across blocks and across the files of one
input, as they do in one file.

The driver (``shardtrain.stages.kdd99``) merges the summaries in block order:

1. :func:`count_piece`: physical lines per block (only needed when an input has more
   than one block), so each block gets its first line number.
2. :func:`scan_piece`: rejects, per-attack counts and, for the training input,
   per-attack histograms of ``hash_unit(seed, line_no)`` in :data:`BUCKETS` buckets.
3. :func:`boundary_piece`: the ``(hash, line)`` of the rows in each class's boundary
   bucket, from which the driver finds each class's cutoff: the validation rows of a
   class are exactly its ``round(fraction * n)`` smallest ``(hash, line)``, the rule of
   :func:`~shardtrain.readers.kdd99.validation_mask`.
4. :func:`stats_piece`: per-split row counts, vocabularies and *exact* sums of the
   train rows' (log1p'd) numeric columns and of their squares, as integers, so mean and
   standard deviation do not depend on block size, executor or merge order.
5. :func:`load_piece`: one split's featurised rows of one block, for the shard tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shardtrain.core.errors import ShardtrainError
from shardtrain.core.exact import exact_square_sum, exact_sum
from shardtrain.features.logs import hash_unit
from shardtrain.readers import kdd99
from shardtrain.shards import storage
from shardtrain.shards.blocks import Block, read_block

BUCKETS = 1 << 12  # hash buckets per attack class: the boundary pass returns ~n_class / BUCKETS rows

Piece = tuple[Block, int]  # (block, line number of its first line)


def _bytes(block: Block) -> bytes:
    """The block's lines, a read error as one line naming the file."""
    try:
        return read_block(block)
    except (OSError, pa.ArrowInvalid) as e:
        where = storage.redact(block.location)
        raise ShardtrainError(f"{where}: cannot read KDD records ({str(e).splitlines()[0]})") from e


def line_count(data: bytes) -> int:
    """Lines as Arrow's CSV reader counts them: ``\\n``, ``\\r\\n`` and a lone ``\\r`` each end one."""
    ends = data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")
    return ends + (1 if data and data[-1:] not in (b"\n", b"\r") else 0)


def count_piece(block: Block) -> int:
    """Pass 1: the block's physical lines (no parse)."""
    return line_count(_bytes(block))


_LAST: list[Any] = []  # [(key, parsed)]: the last block this process parsed


def parse_piece(piece: Piece, detail_chars: int) -> tuple[dict[str, Any], dict[str, np.ndarray], int]:
    """The block's records parsed as a whole file is (``kdd99.parse_kdd``), numbered from its first line.

    The last parse is kept (one block per process): consecutive passes and shard tasks
    on the same block (a .gz input is one block feeding every shard of a split) parse it once.
    """
    key = (piece, detail_chars)
    if _LAST and _LAST[0][0] == key:
        return _LAST[0][1]
    _LAST.clear()  # drop the previous block before parsing the next
    parsed = _parse(piece, detail_chars)
    _LAST.append((key, parsed))
    return parsed


def _parse(piece: Piece, detail_chars: int) -> tuple[dict[str, Any], dict[str, np.ndarray], int]:
    """:func:`parse_piece` without the cache."""
    block, first = piece
    data = _bytes(block)
    cols, rejects, n_lines = kdd99.parse_kdd(data, detail_chars, first, name=storage.redact(block.location))
    if n_lines != line_count(data):  # the count pass and the parser must agree, or line numbers drift
        raise RuntimeError(f"{block.name}: {n_lines} records parsed, {line_count(data)} lines counted")
    return cols, rejects, n_lines


def _counts(values: pa.Array) -> dict[str, int]:
    """Value -> count in order of first appearance (as Arrow's value_counts gives them)."""
    return {d["values"]: int(d["counts"]) for d in values.value_counts().to_pylist()}


def _buckets(h: np.ndarray) -> np.ndarray:
    """Bucket of each hash in [0, 1): ``floor(h * BUCKETS)``."""
    return np.minimum((h * BUCKETS).astype(np.int64), BUCKETS - 1)


def scan_piece(piece: Piece, detail_chars: int, seed: int | None) -> dict[str, Any]:
    """Pass 2: lines, rows, rejects, per-attack counts; hash histograms per attack when ``seed`` is given.

    ``hist`` maps an attack name to ``(buckets, counts)`` (sparse, int64). ``values``
    (symbolic column -> value counts) lets the driver count a test split's unseen values.
    """
    cols, rejects, n_lines = parse_piece(piece, detail_chars)
    out: dict[str, Any] = {"lines": n_lines, "rows": len(cols["line_no"]), "rejects": rejects,
                           "attacks": _counts(cols["attack"])}
    if seed is None:
        out["values"] = {c: _counts(cols[c]) for c in kdd99.SYMBOLIC}
        return out
    enc = pc.dictionary_encode(cols["attack"])
    names = enc.dictionary.to_pylist()
    codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    keys, counts = np.unique(codes * BUCKETS + _buckets(hash_unit(seed, cols["line_no"])), return_counts=True)
    out["hist"] = {}
    for k, name in enumerate(names):
        sel = (keys // BUCKETS) == k
        out["hist"][name] = (keys[sel] % BUCKETS, counts[sel].astype(np.int64))
    return out


def boundary_piece(piece: Piece, detail_chars: int, seed: int, boundary: dict[str, int]) -> dict[str, Any]:
    """Pass 3: ``attack -> (hash, line)`` arrays of the rows in that attack's ``boundary`` bucket."""
    cols, _, _ = parse_piece(piece, detail_chars)
    h = hash_unit(seed, cols["line_no"])
    bucket = _buckets(h)
    out = {}
    for name, b in boundary.items():
        sel = pc.equal(cols["attack"], name).to_numpy(zero_copy_only=False) & (bucket == b)
        if sel.any():
            out[name] = (h[sel], cols["line_no"][sel])
    return out


@dataclass(frozen=True)
class Carve:
    """The validation rule as cutoffs: a row of attack ``a`` is validation iff ``(hash, line) <= cutoff[a]``."""

    seed: int
    cutoff: dict[str, tuple[float, int]]  # attacks with no validation row are absent

    def mask(self, cols: dict[str, Any]) -> np.ndarray:
        """bool (N,): which of the parsed rows ``cols`` are validation rows."""
        names = sorted(self.cutoff)
        if not names or len(cols["line_no"]) == 0:
            return np.zeros(len(cols["line_no"]), dtype=bool)
        idx = pc.index_in(cols["attack"], value_set=pa.array(names, pa.string())).fill_null(len(names))
        idx = idx.to_numpy(zero_copy_only=False)
        h_cut = np.array([self.cutoff[n][0] for n in names] + [-1.0])  # -1: below every hash, never val
        l_cut = np.array([self.cutoff[n][1] for n in names] + [0], dtype=np.int64)
        h, line = hash_unit(self.seed, cols["line_no"]), cols["line_no"]
        return (h < h_cut[idx]) | ((h == h_cut[idx]) & (line <= l_cut[idx]))


def stats_piece(piece: Piece, detail_chars: int, carve: Carve, log_cols: np.ndarray) -> dict[str, Any]:
    """Pass 4: train/val rows, train vocabularies, exact numeric sums of train rows, per-split counts."""
    cols, _, _ = parse_piece(piece, detail_chars)
    val = carve.mask(cols)
    train = kdd99._subset(cols, ~val)
    vcols = kdd99._subset(cols, val)
    num = kdd99._numeric_by_column(train["numeric"], log_cols)  # (38, N_train)
    return {"train": len(train["line_no"]), "val": len(vcols["line_no"]),
            "s1": [exact_sum(col) for col in num], "s2": [exact_square_sum(col) for col in num],
            "vocab": {c: pc.unique(train[c]).to_pylist() for c in kdd99.SYMBOLIC},
            "attacks": {"train": _counts(train["attack"]), "val": _counts(vcols["attack"])},
            "values": {c: _counts(vcols[c]) for c in kdd99.SYMBOLIC}}


@dataclass(frozen=True)
class Fitted:
    """What a shard task needs to featurise its block: the split, the carve and the train transform."""

    split: str  # "train", "val" or "test"
    detail_chars: int
    carve: Carve | None  # None for the test input
    log_cols: np.ndarray  # bool (38,)
    mean: np.ndarray
    std: np.ndarray
    vocab: dict[str, list[str]]
    categories: dict[str, str]


def featurise(cols: dict[str, Any], fitted: Fitted) -> dict[str, np.ndarray]:
    """``sample_id``, float32 ``x`` and both labels of parsed rows, with the fitted transform."""
    num = kdd99._numeric_by_column(cols["numeric"], fitted.log_cols)
    x, _ = kdd99._features(cols, num, fitted.mean, fitted.std, fitted.vocab)
    is_attack, category = kdd99.labels(cols["attack"], fitted.categories)
    return {"sample_id": cols["line_no"].astype(np.int64), "x": x, "label_attack": is_attack,
            "label_category": category}


def load_piece(fitted: Fitted, piece: Piece) -> dict[str, np.ndarray]:
    """Shard tasks: the block's rows of ``fitted.split``, featurised, in line order."""
    cols, _, _ = parse_piece(piece, fitted.detail_chars)
    if fitted.carve is not None:
        val = fitted.carve.mask(cols)
        cols = kdd99._subset(cols, val if fitted.split == "val" else ~val)
    return featurise(cols, fitted)
