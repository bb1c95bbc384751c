"""Exact sums of float64 values, so statistics merged from parts do not depend on the cut.

A data stage whose driver only merges summaries computes a mean from per-part sums. A
float sum depends on the order of its terms, so the same data cut into other blocks,
partitions or tasks would give another last bit, and other shards. Here a sum is kept
exactly, as a Python integer ``S`` with ``sum = S * 2**-SCALE``: every finite float64 is
an integer multiple of ``2**-1074``, so the integers add without rounding, in any order.
The result is rounded once, at the end (:func:`exact_mean`, :func:`moments`), and equals
the correctly rounded value of the exact sum, for every partitioning and executor.

The work is vectorised: mantissas are split into two 26/27-bit halves and summed per
binary exponent with ``np.bincount`` (partial sums of 2**24 halves stay below 2**53, so
the float64 accumulator is exact), and only one Python integer per occurring exponent is
built.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

SCALE = 1126  # 2**SCALE * (every finite float64) is an integer: the smallest subnormal is 2**-1074
_CHUNK = 1 << 24  # values per bincount: a sum of 2**24 halves below 2**27 is exact in float64


def exact_sum(values: np.ndarray) -> int:
    """``sum(values) * 2**SCALE`` as an exact integer (``values``: finite floats, any shape)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[v != 0]  # most columns of the data we see are mostly zeros
    if v.size == 0:
        return 0
    if np.abs(v).max() < float(1 << 52) / v.size:  # then, if all are integers, an int64 sum is exact
        as_int = v.astype(np.int64)
        if np.array_equal(as_int, v):
            return int(as_int.sum()) << SCALE
    m, e = np.frexp(v)
    mant = (m * float(1 << 53)).astype(np.int64)  # exact: |m| in [0.5, 1) has 53 bits
    e = e.astype(np.int64) - 53 + SCALE  # v = mant * 2**(e - SCALE), e >= 0
    hi, lo = mant >> 26, mant & ((1 << 26) - 1)  # mant = hi * 2**26 + lo
    total = 0
    for start in range(0, v.size, _CHUNK):
        ek = e[start:start + _CHUNK]
        sh = np.bincount(ek, weights=hi[start:start + _CHUNK].astype(np.float64))
        sl = np.bincount(ek, weights=lo[start:start + _CHUNK].astype(np.float64))
        for k in np.flatnonzero((sh != 0) | (sl != 0)):
            total += ((int(sh[k]) << 26) + int(sl[k])) << int(k)
    return total


def exact_square_sum(values: np.ndarray) -> int:
    """``sum(values**2) * 2**SCALE``: each square as the unevaluated float sum ``p + err`` (Dekker).

    Exact for every value whose square neither overflows nor underflows (|v| between about
    1e-146 and 1e146); grouping-independent always, since each square's two terms are fixed.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    p = v * v
    a = v * float((1 << 27) + 1)
    hi = a - (a - v)
    lo = v - hi
    err = ((hi * hi - p) + 2.0 * hi * lo) + lo * lo
    return exact_sum(p) + exact_sum(err)


def scaled(value: float, count: int = 1) -> int:
    """``count`` copies of ``value`` as an exact sum (imputed cells, all equal to one value)."""
    return exact_sum(np.array([value])) * int(count)


def to_fraction(total: int) -> Fraction:
    """The exact sum as a rational number."""
    return Fraction(total, 1 << SCALE)


def exact_mean(total: int, n: int) -> float:
    """``total * 2**-SCALE / n``, correctly rounded to float64 (0.0 for no values)."""
    return float(Fraction(total, n << SCALE)) if n else 0.0


def moments(n: int, s1: list[int], s2: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population std (ddof 0, as numpy's) per column from exact sums and square sums.

    The mean and the variance are exact rationals, each rounded once; the std is the
    float64 square root of the rounded variance. ``n == 0`` gives zeros.
    """
    if n == 0:
        return np.zeros(len(s1)), np.zeros(len(s1))
    scale = n << SCALE
    mean = [Fraction(a, scale) for a in s1]
    var = [max(Fraction(b, scale) - m * m, Fraction(0)) for b, m in zip(s2, mean)]
    return np.array([float(m) for m in mean]), np.sqrt(np.array([float(x) for x in var]))
