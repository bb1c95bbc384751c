"""The one seeding module: SplitMix64 and the keyed streams every random draw comes from.

Every random number in shardtrain is a pure function of its identity (seed, sample id,
copy, member, epoch, ...), never of the order rows arrive in, the worker that ran them
or how a split was cut. These are the primitives for that, one definition each, in
three spellings that agree bit for bit:

- numpy ``uint64`` arrays (stages, augmentation, splits): :func:`mix64`, :func:`chain_key`,
  :func:`to_unit`;
- Python ints (reference values, single seeds): :func:`mix64_int`;
- torch ``int64`` tensors on any device (bootstrap weights inside a training step):
  :func:`mix64_torch`, with int64 wraparound standing in for arithmetic mod 2**64.

``mix64`` is SplitMix64's finaliser (Steele, Lea & Flood 2014); ``splitmix64(z)`` is
``mix64(z + GOLDEN)``, one step of the generator from state ``z``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15  # 2**64 / golden ratio, SplitMix64's increment
_MUL1 = 0xBF58476D1CE4E5B9
_MUL2 = 0x94D049BB133111EB
_U_GOLDEN = np.uint64(GOLDEN)


def mix64(z: Any) -> np.ndarray:
    """SplitMix64's finaliser over uint64 values (vectorised; wraps mod 2**64); returns a new array."""
    z = np.array(z, dtype=np.uint64, copy=True)
    with np.errstate(over="ignore"):
        z ^= z >> np.uint64(30)
        z *= np.uint64(_MUL1)
        z ^= z >> np.uint64(27)
        z *= np.uint64(_MUL2)
        z ^= z >> np.uint64(31)
    return z


def as_uint64(values: Any) -> np.ndarray:
    """Integers (python or numpy, any sign) as a uint64 array of their two's-complement bits (at least 1-D)."""
    return np.atleast_1d(np.asarray(values, dtype=np.int64)).view(np.uint64)


def seed_array(seed: int) -> np.ndarray:
    """A seed as a (1,) uint64 array, reduced mod 2**64 (arrays wrap silently, Python ints do not)."""
    return np.array([int(seed) & MASK64], dtype=np.uint64)


def chain_key(seed: int, *parts: Any) -> np.ndarray:
    """The uint64 key of ``(seed, *parts)``: ``k = mix64(seed + G)``, then ``k = mix64((k ^ p) + G)`` per part.

    Parts broadcast against each other (e.g. sample ids (N,) and copies (N,) or (1,)), so
    one call keys a whole batch. Used for the per-(sample, copy) streams of augmentation.
    """
    with np.errstate(over="ignore"):
        key = mix64(seed_array(seed) + _U_GOLDEN)
        for part in parts:
            key = mix64((key ^ as_uint64(part)) + _U_GOLDEN)
    return key


def stream(keys: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Number ``j`` (0-based) of the SplitMix64 sequence started at each key: ``mix64(key + (j + 1) G)``."""
    with np.errstate(over="ignore"):
        return mix64(keys + (np.asarray(j).astype(np.uint64) + np.uint64(1)) * _U_GOLDEN)


def to_unit(h: np.ndarray) -> np.ndarray:
    """Uniform float64 in [0, 1) from the top 53 bits of uint64 hashes."""
    return (np.asarray(h, dtype=np.uint64) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def mix64_int(z: int) -> int:
    """SplitMix64's finaliser on one unsigned 64-bit Python int (returns it unsigned)."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * _MUL1) & MASK64
    z = ((z ^ (z >> 27)) * _MUL2) & MASK64
    return z ^ (z >> 31)


def splitmix64_int(z: int) -> int:
    """One SplitMix64 step from state ``z`` (unsigned 64-bit in and out): ``mix64(z + G)``."""
    return mix64_int((z + GOLDEN) & MASK64)


def signed64(c: int) -> int:
    """The int64 two's-complement value of the unsigned 64-bit integer ``c``."""
    c &= MASK64
    return c - (1 << 64) if c >= (1 << 63) else c


def shr_torch(z: "torch.Tensor", s: int) -> "torch.Tensor":
    """Logical (unsigned) right shift of an int64 tensor (torch's ``>>`` is arithmetic)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def mix64_torch(z: "torch.Tensor") -> "torch.Tensor":
    """SplitMix64's finaliser on an int64 tensor (any device), bit-equal to :func:`mix64` on the same bits."""
    z = (z ^ shr_torch(z, 30)) * signed64(_MUL1)
    z = (z ^ shr_torch(z, 27)) * signed64(_MUL2)
    return z ^ shr_torch(z, 31)


def splitmix64_torch(z: "torch.Tensor") -> "torch.Tensor":
    """One SplitMix64 step per element of an int64 tensor: ``mix64(z + G)`` with int64 wraparound."""
    return mix64_torch(z + signed64(GOLDEN))
