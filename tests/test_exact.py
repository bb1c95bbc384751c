"""Exact sums: the same integer whatever the grouping, equal to rational arithmetic, rounded once."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from shardtrain.core import exact


def _values() -> np.ndarray:
    rng = np.random.default_rng(5)
    v = np.r_[rng.normal(0, 1e6, 5000), rng.random(5000) * 1e-3, -rng.random(100),
              rng.integers(-3, 3, 500).astype(float), [0.0, -0.0, 1e-300, 5e-324, -1e300, 3.5]]
    return rng.permutation(v)


def test_exact_sums_equal_rational_arithmetic_whatever_the_grouping() -> None:
    v = _values()
    oracle = sum((Fraction(float(x)) for x in v), Fraction(0))
    assert exact.to_fraction(exact.exact_sum(v)) == oracle
    mid = v[(np.abs(v) > 1e-140) & (np.abs(v) < 1e140)]  # squares neither underflow nor overflow
    squares = sum((Fraction(float(x)) ** 2 for x in mid), Fraction(0))
    assert exact.to_fraction(exact.exact_square_sum(mid)) == squares
    for cuts in (1, 7, 64):
        parts = np.array_split(v, cuts)
        assert sum(exact.exact_sum(p) for p in parts) == exact.exact_sum(v)
        assert sum(exact.exact_square_sum(p) for p in parts) == exact.exact_square_sum(v)
    ints = np.arange(-1000, 5000, dtype=np.float64)  # the all-integer fast path
    assert exact.to_fraction(exact.exact_sum(ints)) == int(ints.sum())
    assert exact.exact_sum(np.zeros(0)) == 0 and exact.scaled(2.5, 4) == exact.exact_sum(np.full(4, 2.5))


def test_mean_and_std_are_rounded_once_and_match_numpy() -> None:
    v = _values()
    v = v[np.abs(v) < 1e100]
    n = v.size
    mean, std = exact.moments(n, [exact.exact_sum(v)], [exact.exact_square_sum(v)])
    oracle = sum((Fraction(float(x)) for x in v), Fraction(0)) / n
    assert mean[0] == float(oracle) == exact.exact_mean(exact.exact_sum(v), n)
    assert mean[0] == pytest.approx(v.mean(), rel=1e-12) and std[0] == pytest.approx(v.std(), rel=1e-12)
    assert exact.exact_mean(0, 0) == 0.0
