"""The one seeding module: its numpy, Python-int and torch spellings agree bit for bit."""

from __future__ import annotations

import numpy as np
import torch

from shardtrain.core import seeding

VALUES = [0, 1, 2, 12345, -1, -(2**63), 2**63 - 1, 987654321987654321]


def test_splitmix64_matches_the_published_reference():
    # 0xE220A8397B1DCDAF is SplitMix64's first output from state 0 (Vigna's reference code).
    assert seeding.splitmix64_int(0) == 0xE220A8397B1DCDAF
    assert seeding.signed64(seeding.splitmix64_int(0)) == -2152535657050944081


def test_numpy_int_and_torch_spellings_agree():
    ints = [seeding.mix64_int(v % 2**64) for v in VALUES]
    assert seeding.mix64(seeding.as_uint64(VALUES)).tolist() == ints
    got = seeding.mix64_torch(torch.tensor(VALUES, dtype=torch.int64)).tolist()
    assert got == [seeding.signed64(v) for v in ints]
    steps = seeding.splitmix64_torch(torch.tensor(VALUES, dtype=torch.int64)).tolist()
    assert steps == [seeding.signed64(seeding.splitmix64_int(v % 2**64)) for v in VALUES]


def test_chain_key_and_stream_are_pure_functions_of_identity():
    ids = np.arange(1000, dtype=np.int64)
    whole = seeding.chain_key(7, ids, np.ones(1000, np.int64))
    parts = np.concatenate([seeding.chain_key(7, ids[i:i + 37], 1) for i in range(0, 1000, 37)])
    assert np.array_equal(whole, parts)  # batch boundaries do not matter
    assert len(np.unique(whole)) == 1000
    assert not np.array_equal(whole, seeding.chain_key(8, ids, 1))  # the seed does
    u = seeding.to_unit(seeding.stream(whole, np.zeros(1000, np.int64)))
    assert u.min() >= 0.0 and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.05
