"""Hashed word and character n-gram features for text (the sparse ``x_ids`` / ``x_weights`` pair).

Tokens. Text is lowercased (`TextFeatureConfig.lowercase`). Word tokens are maximal runs of
word characters (``str.isalnum()`` or "_", as regex ``\\w``) plus every other non-space
character on its own ("£", "!", "."), so "Call 0800-123!" -> call, 0800, -, 123, !. Character
n-grams follow scikit-learn's ``char_wb``: each whitespace-separated word is padded with one
space on each side and cut into n-grams for n in `char_ngrams` (a padded word shorter than the
smallest n counts once, whole).

Hash (stable across processes, machines and Python versions; all arithmetic mod 2**64):

    poly(s)        = sum_j ord(s[j]) * B**(len(s) - 1 - j),   B = 1099511628211 (FNV prime)
    h(ns, s)       = fmix64(poly(s) + len(s) * K_LEN + ns)     ns = NS_WORD or NS_CHAR
    word n-gram    : g1 = h(NS_WORD, t1);  g(m+1) = fmix64(g(m) * B + h(NS_WORD, t(m+1)) + NS_SEQ)
    bucket         = hash & (2**bits - 1)

fmix64 is MurmurHash3's 64-bit finaliser. poly is computed for every window at once from
prefix sums of ord(c) * B**-j (B is odd, so invertible mod 2**64), so the whole batch is
hashed with a few numpy passes. `token_hash` is the pure-Python definition (tests pin it).

Weights: per row, each bucket's count c becomes log1p(c) (sublinear tf), times the bucket's
inverse document frequency when ``idf`` is on, then the row is L2-normalised. Buckets are
sorted and unique per row; an empty text gives an empty row. The idf is fitted on the
training split (`fit_idf`, scikit-learn's smooth idf ``ln((1 + n) / (1 + df)) + 1`` per
bucket) and travels with the shards' index (`encode_idf` / `decode_idf`), so predict
re-applies the training split's weights.
"""

from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from shardtrain.core.errors import ShardtrainError
from shardtrain.core.hashing import fmix64, fmix64_int

B = 1099511628211
K_LEN = 0x9E3779B97F4A7C15
NS_WORD = 0x2545F4914F6CDD1D
NS_CHAR = 0x61C8864680B583EB
NS_SEQ = 0x165667B19E3779F9
_M64 = (1 << 64) - 1
_B_INV = pow(B, -1, 1 << 64)
_POW: list[tuple[np.ndarray, np.ndarray]] = [(np.ones(1, np.uint64), np.ones(1, np.uint64))]
# ^ cached (B**j, B**-j) tables, replaced whole (thread-safe reads) when a batch needs longer ones


@dataclass(frozen=True)
class TextFeatureConfig:
    """Hashed n-gram features: `2**bits` buckets, word and character n-gram sizes (lo, hi)
    (None switches one family off), lowercasing, log1p term frequencies, idf weights fitted on
    the training split, and L2 row norm (or None)."""

    __pydantic_config__ = {"extra": "forbid"}  # validated from the config by pydantic; unknown keys are errors

    bits: int = 16
    word_ngrams: tuple[int, int] | None = (1, 2)
    char_ngrams: tuple[int, int] | None = (3, 5)
    lowercase: bool = True
    sublinear_tf: bool = True
    norm: str | None = "l2"
    idf: bool = False
    text_col: str = "text"


def token_hash(token: str, namespace: int = NS_WORD) -> int:
    """The 64-bit hash of one token or character n-gram (pure Python definition)."""
    poly = 0
    for ch in token:
        poly = (poly * B + ord(ch)) & _M64
    return fmix64_int((poly + len(token) * K_LEN + namespace) & _M64)


def word_ngram_hash(tokens: list[str]) -> int:
    """The 64-bit hash of a word n-gram (pure Python definition; one token = `token_hash`)."""
    g = token_hash(tokens[0], NS_WORD)
    for tok in tokens[1:]:
        g = fmix64_int((g * B + token_hash(tok, NS_WORD) + NS_SEQ) & _M64)
    return g


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (B**j, B**-j) mod 2**64 for j < n as uint64 arrays (cached, grown x2)."""
    fwd, inv = _POW[0]
    if len(fwd) < n:
        size = max(n, 2 * len(fwd), 1024)
        fwd = np.concatenate([[np.uint64(1)], np.cumprod(np.full(size - 1, B, np.uint64))])
        inv = np.concatenate([[np.uint64(1)], np.cumprod(np.full(size - 1, _B_INV, np.uint64))])
        _POW[0] = (fwd, inv)
    return fwd[:n], inv[:n]


def _window_hash(prefix: np.ndarray, fwd: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                 namespace: int) -> np.ndarray:
    """h(namespace, s) for the windows [starts, ends) of the code point array behind `prefix`."""
    poly = (prefix[ends] - prefix[starts]) * fwd[ends - 1]           # (W,) sum cp_j B**(end-1-j)
    lengths = (ends - starts).astype(np.uint64)
    return fmix64(poly + lengths * np.uint64(K_LEN) + np.uint64(namespace))


def _codepoints(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate texts as uint64 code points (C,) and return them with the row of each (C,)."""
    joined = "".join(texts)
    cp = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)
    rows = np.repeat(np.arange(len(texts)), [len(t) for t in texts])
    return cp, rows


def _classes(cp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (is_space, is_word_char) masks (C,) using str.isspace / isalnum-or-underscore."""
    table_cp = np.arange(128)
    ascii_space = np.array([chr(c).isspace() for c in table_cp])
    ascii_word = np.array([chr(c).isalnum() or c == 95 for c in table_cp])
    small = cp < 128
    idx = np.where(small, cp, 0).astype(np.int64)
    space, word = ascii_space[idx] & small, ascii_word[idx] & small
    if not small.all():  # classify the few distinct non-ASCII code points in Python
        uniq, inv = np.unique(cp[~small], return_inverse=True)
        chars = [chr(int(c)) for c in uniq]
        space[~small] = np.array([c.isspace() for c in chars])[inv]
        word[~small] = np.array([c.isalnum() or c == "_" for c in chars])[inv]
    return space, word


def _runs(mask: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start/end (exclusive) of maximal True runs of `mask` that do not cross rows."""
    same_prev = np.zeros(len(mask), dtype=bool)
    same_prev[1:] = mask[:-1] & (rows[1:] == rows[:-1])
    same_next = np.zeros(len(mask), dtype=bool)
    same_next[:-1] = mask[1:] & (rows[1:] == rows[:-1])
    return np.flatnonzero(mask & ~same_prev), np.flatnonzero(mask & ~same_next) + 1


def _word_grams(cp: np.ndarray, rows: np.ndarray, space: np.ndarray, word: np.ndarray,
                cfg: TextFeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """Word n-gram hashes (G,) and their rows (G,)."""
    fwd, inv = _powers(len(cp) + 1)
    prefix = np.concatenate([[np.uint64(0)], np.cumsum(cp * inv[:len(cp)])])  # (C+1,)
    w_start, w_end = _runs(word, rows)
    punct = np.flatnonzero(~space & ~word)
    starts = np.concatenate([w_start, punct])
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], np.concatenate([w_end, punct + 1])[order]
    th = _window_hash(prefix, fwd, starts, ends, NS_WORD)                     # (T,)
    trow = rows[starts]
    hashes, grow = [], []
    lo, hi = cfg.word_ngrams
    g = th.copy()
    for n in range(1, hi + 1):
        if n > 1:   # fold token n onto every (n-1)-gram that has one in the same row
            g = fmix64(g[:-1] * np.uint64(B) + th[n - 1:] + np.uint64(NS_SEQ))
        if n >= lo:
            ok = trow[:len(g)] == trow[n - 1:]
            hashes.append(g[ok])
            grow.append(trow[:len(g)][ok])
    return np.concatenate(hashes), np.concatenate(grow)


def _char_grams(cp: np.ndarray, rows: np.ndarray, space: np.ndarray,
                cfg: TextFeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """char_wb n-gram hashes (G,) and their rows (G,)."""
    w_start, w_end = _runs(~space, rows)
    lengths = w_end - w_start + 2                                            # (K,) padded lengths
    off = np.cumsum(lengths) - lengths                                       # (K,) start in padded
    padded = np.full(int(lengths.sum()), 32, dtype=np.uint64)                # (P,) " w1  w2 ..."
    inner = lengths - 2                                                      # (K,) word lengths
    pos = np.arange(int(inner.sum())) - np.repeat(np.cumsum(inner) - inner, inner)  # index in word
    padded[np.repeat(off + 1, inner) + pos] = cp[np.repeat(w_start, inner) + pos]
    fwd, inv = _powers(len(padded) + 1)
    prefix = np.concatenate([[np.uint64(0)], np.cumsum(padded * inv[:len(padded)])])
    word_end = np.repeat(off + lengths, lengths)                             # (P,) end of own word
    prow = np.repeat(rows[w_start], lengths)                                 # (P,) row per position
    start_pos = np.arange(len(padded))
    hashes, grow = [], []
    lo, hi = cfg.char_ngrams
    for n in range(lo, hi + 1):
        starts = np.flatnonzero(start_pos + n <= word_end)                   # windows inside a word
        hashes.append(_window_hash(prefix, fwd, starts, starts + n, NS_CHAR))
        grow.append(prow[starts])
    short = np.flatnonzero(lengths < lo)                                     # padded word < lo: once
    if len(short):
        hashes.append(_window_hash(prefix, fwd, off[short], off[short] + lengths[short], NS_CHAR))
        grow.append(rows[w_start[short]])
    return np.concatenate(hashes), np.concatenate(grow)


def hashed_ngrams(batch: dict[str, Any], cfg: TextFeatureConfig, idf: np.ndarray | None = None) -> dict[str, Any]:
    """Stage function: replace the text column by ``x_ids`` / ``x_weights`` list columns.

    Every other column (sample_id, label, source_id, aug_index, ...) passes through unchanged.
    ``idf`` (float32, (2**bits,)) weights the buckets; ``cfg.idf`` needs it (`fit_idf`).
    """
    texts = _checked_texts(batch, cfg)
    if cfg.idf and idf is None:
        raise ShardtrainError("text features: prepare.text.idf is on but no idf weights were fitted")
    ids, weights, offsets = _featurize(texts, cfg, idf if cfg.idf else None)
    out = {k: v for k, v in batch.items() if k != cfg.text_col}
    pa_offsets = pa.array(offsets, type=pa.int32())
    out["x_ids"] = pa.ListArray.from_arrays(pa_offsets, pa.array(ids, type=pa.int32()))
    out["x_weights"] = pa.ListArray.from_arrays(pa_offsets, pa.array(weights, type=pa.float32()))
    return out


def weighted_ngrams(batch: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Stage function: `hashed_ngrams` with ``ctx = {"cfg": TextFeatureConfig, "idf": array or None}``."""
    return hashed_ngrams(batch, ctx["cfg"], ctx.get("idf"))


def fit_idf(texts: list[str], cfg: TextFeatureConfig) -> np.ndarray:
    """Smooth idf per bucket over ``texts`` (the training split): ``ln((1 + n) / (1 + df)) + 1``, float32."""
    plain = TextFeatureConfig(**{**cfg.__dict__, "idf": False, "norm": None})
    ids, _, _ = _featurize(_checked_texts({cfg.text_col: list(texts)}, plain), plain, None)
    df = np.bincount(ids, minlength=2 ** cfg.bits)                 # ids are unique per row: document counts
    return (np.log((1.0 + len(texts)) / (1.0 + df)) + 1.0).astype(np.float32)


def encode_idf(idf: np.ndarray) -> str:
    """The idf weights as text for an index (float32 little-endian, zlib, base64)."""
    return base64.b64encode(zlib.compress(np.asarray(idf, "<f4").tobytes(), 6)).decode("ascii")


def decode_idf(text: str, bits: int) -> np.ndarray:
    """Inverse of `encode_idf`; refuses weights of another size than ``2**bits``."""
    idf = np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype="<f4")
    if len(idf) != 2 ** bits:
        raise ShardtrainError(f"text features: the fitted idf has {len(idf)} buckets, features.bits={bits} needs "
                              f"{2 ** bits}")
    return idf.astype(np.float32)


def _checked_texts(batch: dict[str, Any], cfg: TextFeatureConfig) -> list[str]:
    """The batch's texts (lowercased when configured), after checking the config and the column."""
    if cfg.text_col not in batch:
        raise ShardtrainError(f"text features: batch has no column '{cfg.text_col}'")
    if not 1 <= cfg.bits <= 31:
        raise ShardtrainError(f"features.bits={cfg.bits}: must be within 1..31 (int32 ids)")
    for name in ("word_ngrams", "char_ngrams"):
        rng = getattr(cfg, name)
        if rng is not None and not (len(rng) == 2 and 1 <= rng[0] <= rng[1]):
            raise ShardtrainError(f"features.{name}={rng}: expected [lo, hi] with 1 <= lo <= hi, or null")
    if cfg.word_ngrams is None and cfg.char_ngrams is None:
        raise ShardtrainError("features: word_ngrams and char_ngrams are both null; nothing to hash")
    if cfg.norm not in ("l2", None):
        raise ShardtrainError(f"features.norm={cfg.norm!r}: expected 'l2' or null")
    col = batch[cfg.text_col]
    texts = col.to_pylist() if hasattr(col, "to_pylist") else list(col)
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise ShardtrainError(f"text features: column '{cfg.text_col}' row {bad} "
                              f"(sample_id {batch.get('sample_id', [None] * len(texts))[bad]}) is "
                              f"{type(texts[bad]).__name__}, expected str")
    return [t.lower() for t in texts] if cfg.lowercase else texts


def _featurize(texts: list[str], cfg: TextFeatureConfig,
               idf: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (ids int32 (nnz,), weights float32 (nnz,), offsets int32 (N+1,)) for `texts`."""
    n = len(texts)
    cp, rows = _codepoints(texts)
    space, word = _classes(cp)
    parts = []
    if cfg.word_ngrams is not None:
        parts.append(_word_grams(cp, rows, space, word, cfg))
    if cfg.char_ngrams is not None:
        parts.append(_char_grams(cp, rows, space, cfg))
    hashes = np.concatenate([p[0] for p in parts])
    grow = np.concatenate([p[1] for p in parts]).astype(np.int64)
    mask = np.uint64((1 << cfg.bits) - 1)
    keys, counts = np.unique((grow << cfg.bits) | (hashes & mask).astype(np.int64), return_counts=True)
    row, ids = keys >> cfg.bits, (keys & int(mask)).astype(np.int32)        # (nnz,) sorted per row
    w = np.log1p(counts) if cfg.sublinear_tf else counts.astype(np.float64)
    if idf is not None:
        w = w * idf[ids]
    if cfg.norm == "l2":
        norms = np.sqrt(np.bincount(row, weights=w * w, minlength=n))
        w = w / norms[row]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(row, minlength=n), out=offsets[1:])
    if offsets[-1] > np.iinfo(np.int32).max:
        raise ShardtrainError(f"text features: batch of {n} rows has {offsets[-1]} entries (> int32)")
    return ids, w.astype(np.float32), offsets.astype(np.int32)
