"""The one hashing module: file digests, config fingerprints and the 64-bit fmix64 mixer.

Digests identify bytes (shards in an index, downloaded files, stage inputs);
fingerprints identify what a stage's output depends on; ``fmix64`` (MurmurHash3's
finaliser) spreads 64-bit n-gram hashes over the feature buckets. Randomness lives in
:mod:`shardtrain.core.seeding`, not here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

MASK64 = (1 << 64) - 1
_CHUNK = 8 << 20  # bytes read at a time: large enough to stay I/O bound, small enough to stream


def file_digest(path: str | Path, algo: str = "sha256") -> str:
    """The hex digest of a file's bytes (``algo`` is any ``hashlib`` name), read in 8 MiB chunks."""
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def bytes_digest(data: bytes | memoryview) -> str:
    """The sha256 hex digest of a buffer (a shard before it is written)."""
    return hashlib.sha256(data).hexdigest()


def fingerprint(*parts: Any) -> str:
    """A stable 32-hex-digit sha256 over JSON-serialisable parts (config sections, input digests, versions)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def fmix64_int(k: int) -> int:
    """MurmurHash3's fmix64 on one unsigned 64-bit Python int (the reference for :func:`fmix64`)."""
    k &= MASK64
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & MASK64
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & MASK64
    return k ^ (k >> 33)


def fmix64(k: np.ndarray) -> np.ndarray:
    """Vectorised fmix64 on uint64 arrays (wrapping multiply); returns a new array."""
    with np.errstate(over="ignore"):
        k = k ^ (k >> np.uint64(33))
        k = k * np.uint64(0xFF51AFD7ED558CCD)
        k = k ^ (k >> np.uint64(33))
        k = k * np.uint64(0xC4CEB9FE1A85EC53)
        return k ^ (k >> np.uint64(33))
