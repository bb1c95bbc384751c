"""The table stage's plan: input parts read by the tasks, and statistics merged from their summaries.

The driver cuts every input into :class:`Part` s without reading data: CSV and JSON Lines
files into byte ranges at line boundaries (``shardtrain.shards.blocks``; a CSV header
belongs to the first block, later blocks get the names from the plan), Parquet files
by row group and Arrow IPC files by record batch (only footers are read), compressed
files, IPC streams and Feather v1 files whole. :func:`read_part` is what a task runs to
get a part's rows from storage.

Statistics that one numpy call gave over all training rows are merged from per-part
summaries so that the result does not depend on how the input was cut:

- sums are exact (:func:`exact_sum`: float64 mantissas added as integers per exponent),
  so a mean (and a variance from exact sums of the rounded squared deviations) is the
  correctly rounded value whatever the block size or executor, within an ulp or two of
  numpy's pairwise sums;
- a median is exact (:func:`select_step`): the values' order-preserving 64-bit keys are
  narrowed 16 bits a pass by merged histograms until the middle values are known, the
  last pass usually sending the few distinct values left.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import pyarrow as pa

from shardtrain.core.errors import ShardtrainError
from shardtrain.readers.table import read_arrow_whole, read_csv_bytes, read_jsonl_bytes
from shardtrain.shards import blocks as blk
from shardtrain.shards import storage

SCALE = 1126  # every float64 is an integer multiple of 2**-1126 once split as M * 2**(e-53)
DIGITS = 1 << 16  # one radix level of a median search: 16 bits of the key
FEW = 4096  # a part sends its matching values themselves (distinct, with counts) when it has at most this many


@dataclass(frozen=True)
class Part:
    """One piece of an input file that one task reads: a line block, a row group, a record batch or the whole file.

    ``role`` is ``path``/``val_path``/``test_path``, ``file_index`` the file's position in
    the role's files, ``piece`` the row group / record batch (``-1``: a line block or the
    whole file). After the first pass: ``rows`` (data rows), ``first_row`` (1-based row in
    its file), ``offset`` (0-based row over all inputs: the sample id without ``id_col``)
    and ``ranks`` (per stratum, the main-input rows of it in earlier parts).
    """

    index: int
    role: str
    location: str
    file_index: int
    fmt: str
    block: blk.Block | None = None
    piece: int = -1
    rows: int = -1
    first_row: int = 1
    offset: int = 0
    ranks: tuple[int, ...] = ()

    def with_(self, **changes: Any) -> Part:
        """A copy with ``changes`` (the first passes fill in counts)."""
        return dataclasses.replace(self, **changes)


def plan_parts(roles: dict[str, tuple[list[str], str]], block_bytes: int) -> list[Part]:
    """Every input's parts in input order (roles, files, then position in the file); reads footers only."""
    parts: list[Part] = []
    for role, (files, fmt) in roles.items():
        for fi, location in enumerate(files):
            for block, piece in _pieces(location, fmt, block_bytes):
                parts.append(Part(len(parts), role, location, fi, fmt, block, piece))
    return parts


def _pieces(location: str, fmt: str, block_bytes: int) -> list[tuple[blk.Block | None, int]]:
    """``(block, piece)`` per part of one file."""
    try:
        if fmt in ("csv", "jsonl"):
            return [(b, -1) for b in blk.plan_line_blocks([location], block_bytes)]
        if fmt == "parquet":
            import pyarrow.parquet as pq

            with storage.open_input(location) as fh:
                groups = pq.ParquetFile(fh).metadata.num_row_groups
            return [(None, g) for g in range(max(groups, 1))]
        with storage.open_input(location) as fh:
            try:
                batches = pa.ipc.open_file(fh).num_record_batches
            except pa.ArrowInvalid:  # an IPC stream or Feather v1: no footer to index, read whole
                return [(None, -1)]
        return [(None, b) for b in range(max(batches, 1))]
    except FileNotFoundError:
        raise ShardtrainError(f"{storage.redact(location)}: table file not found") from None
    except (OSError, pa.ArrowInvalid) as e:
        raise ShardtrainError(f"{storage.redact(location)}: cannot read as {fmt} ({storage.error_text(e)})") from e


def read_part(part: Part, names: list[str], delimiter: str, header: bool,
              text_cols: frozenset[str] = frozenset()) -> pa.Table:
    """The part's rows from storage, columns ``names`` (its file's), as the whole-file reader would give them."""
    try:
        if part.fmt == "csv":
            first = part.block.start == 0
            return read_csv_bytes(blk.read_block(part.block), names, header and first, delimiter)
        if part.fmt == "jsonl":
            return read_jsonl_bytes(blk.read_block(part.block), names, text_cols)
        if part.fmt == "parquet":
            import pyarrow.parquet as pq

            with storage.open_input(part.location) as fh:
                pf = pq.ParquetFile(fh)
                if pf.metadata.num_row_groups == 0:
                    return pf.schema_arrow.empty_table()
                return pf.read_row_group(part.piece)
        if part.piece < 0:
            return read_arrow_whole(part.location)
        with storage.open_input(part.location) as fh:
            return pa.Table.from_batches([pa.ipc.open_file(fh).get_batch(part.piece)])
    except (OSError, pa.ArrowInvalid, ValueError, UnicodeDecodeError) as e:
        where = f" bytes {part.block.start}-{part.block.stop}" if part.block is not None and part.block.start else ""
        raise ShardtrainError(f"{storage.redact(part.location)}{where}: cannot read as {part.fmt} "
                              f"({str(e).splitlines()[0] if str(e) else e})") from e


# --- exact sums ---------------------------------------------------------------------------

def exact_sum(values: np.ndarray) -> int:
    """The exact sum of float64 ``values`` (finite) as an integer ``S``: the sum is ``S * 2**-SCALE``."""
    v = np.asarray(values, dtype=np.float64)
    v = v[v != 0]
    if not v.size:
        return 0
    m, e = np.frexp(v)
    mant = (m * (1 << 53)).astype(np.int64)  # exact: |m| < 1 has 53 bits
    order = np.argsort(e, kind="stable")
    e, mant = e[order], mant[order]
    starts = np.flatnonzero(np.concatenate([[True], e[1:] != e[:-1]]))
    hi = np.add.reduceat(mant >> 26, starts)  # halves: 2**27 each, so 2**36 of them fit an int64
    lo = np.add.reduceat(mant & ((1 << 26) - 1), starts)
    total = 0
    for ex, h, low in zip(e[starts].tolist(), hi.tolist(), lo.tolist()):
        total += ((h << 26) + low) << (ex - 53 + SCALE)
    return total


def exact_mean(total: int, n: int) -> float:
    """``total * 2**-SCALE / n``, correctly rounded to float64."""
    return float(Fraction(total, n << SCALE)) if n else 0.0


def scaled(value: float, count: int = 1) -> int:
    """``count`` copies of ``value`` as an exact sum (for imputed cells, all equal to the median)."""
    return exact_sum(np.array([value])) * int(count)


# --- exact medians ------------------------------------------------------------------------

def keys(values: np.ndarray) -> np.ndarray:
    """Order-preserving uint64 keys of float64 values (no NaN; -0.0 counts as 0.0)."""
    bits = (np.asarray(values, dtype=np.float64) + 0.0).view(np.uint64)
    neg = (bits >> np.uint64(63)).astype(bool)
    return np.where(neg, ~bits, bits | np.uint64(1 << 63))


def from_key(key: int) -> float:
    """The float64 a key stands for."""
    bits = (key & ~(1 << 63)) if key >> 63 else (~key & ((1 << 64) - 1))
    return float(np.array([bits], dtype=np.uint64).view(np.float64)[0])


def select_summary(k: np.ndarray, targets: list[tuple[int, int]]) -> list[Any]:
    """Per target ``(prefix, level)``: what this part's keys ``k`` say about the next 16 bits below ``prefix``.

    ``("few", keys, counts)`` when at most :data:`FEW` distinct keys share the prefix (then
    they settle the search), else ``("hist", digits, counts)``.
    """
    out = []
    for prefix, level in targets:
        shift = 64 - 16 * level
        mine = k if level == 0 else k[(k >> np.uint64(shift)) == np.uint64(prefix)]
        uniq, counts = np.unique(mine, return_counts=True)
        if uniq.size <= FEW:
            out.append(("few", uniq, counts))
            continue
        digit = ((mine >> np.uint64(shift - 16)) & np.uint64(DIGITS - 1)).astype(np.int64)
        hist = np.bincount(digit, minlength=DIGITS)
        nz = np.flatnonzero(hist)
        out.append(("hist", nz, hist[nz]))
    return out


def select_step(summaries: list[Any], prefix: int, level: int, rank: int) -> tuple[bool, int, int]:
    """Merge the parts' summaries of one target (in part order); ``(done, key or prefix, rank left)``.

    ``done``: the key of rank ``rank`` among the prefix's values is known. Else the next
    target is the returned prefix (16 bits longer) and the rank within it.
    """
    shift = 64 - 16 * level
    if all(s[0] == "few" for s in summaries):
        merged: dict[int, int] = {}
        for _, uniq, counts in summaries:
            for u, c in zip(uniq.tolist(), counts.tolist()):
                merged[u] = merged.get(u, 0) + c
        for u in sorted(merged):
            if rank < merged[u]:
                return True, u, 0
            rank -= merged[u]
        raise AssertionError("rank beyond the values")  # internal: counts were merged wrongly
    hist = np.zeros(DIGITS, dtype=np.int64)
    for kind, a, b in summaries:
        if kind == "hist":
            np.add.at(hist, a, b)
        else:
            np.add.at(hist, ((a >> np.uint64(shift - 16)) & np.uint64(DIGITS - 1)).astype(np.int64), b)
    cum = np.cumsum(hist)
    digit = int(np.searchsorted(cum, rank, side="right"))
    rank -= int(cum[digit - 1]) if digit else 0
    return False, (prefix << 16) | digit if level else digit, rank
