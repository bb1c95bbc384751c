"""Input blocks cut at line boundaries, and the map / map-reduce phases on both executors."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import numpy as np
import pytest

from shardtrain.shards import blocks
from shardtrain.stages import mapreduce
from shardtrain.stages.runner import Parts


def _lines(n: int, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    return "\n".join("x" * rng.randint(0, 40) + str(i) for i in range(n)).encode()


@pytest.mark.parametrize("block_bytes", [1, 5, 64, 999, 1 << 20])
@pytest.mark.parametrize("trailing_newline", [False, True])
def test_blocks_cover_every_line_exactly_once(tmp_path: Path, block_bytes: int, trailing_newline: bool) -> None:
    data = _lines(500) + (b"\n" if trailing_newline else b"")
    (tmp_path / "a.txt").write_bytes(data)
    (tmp_path / "b.txt").write_bytes(b"only line\n")
    planned = blocks.plan_line_blocks([tmp_path / "a.txt", tmp_path / "b.txt"], block_bytes)
    assert [b.index for b in planned] == list(range(len(planned)))
    parts = [blocks.read_block(b) for b in planned]
    a = b"".join(p for p, b in zip(parts, planned) if b.file_index == 0)
    assert a == data  # byte for byte, whatever the block size
    # only a file's last line may lack its newline
    assert all(p.endswith(b"\n") for p, b in zip(parts, planned) if p and b.file_index == 1)
    counts = [blocks.count_lines(p) for p in parts]
    assert sum(counts) == 501
    firsts = blocks.first_lines(counts)
    first_of_b = next(i for i, (p, b) in enumerate(zip(parts, planned)) if b.file_index == 1 and p)
    assert firsts[0] == 1 and firsts[first_of_b] == 501  # b.txt's one line is the 501st


def test_compressed_file_is_one_block_and_empty_file_one_empty_block(tmp_path: Path) -> None:
    data = _lines(100)
    with gzip.open(tmp_path / "a.log.gz", "wb") as f:
        f.write(data)
    (tmp_path / "empty.txt").write_bytes(b"")
    planned = blocks.plan_line_blocks([tmp_path / "a.log.gz", tmp_path / "empty.txt"], 10)
    assert [(b.stop, b.compression) for b in planned] == [(-1, "gzip"), (0, None)]
    assert blocks.read_block(planned[0]) == data
    assert blocks.read_block(planned[1]) == b""
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        blocks.plan_line_blocks([tmp_path / "missing.txt"])


def _count(item: int, offset: int) -> int:
    return item * 2 + offset


def _split(item: int, k: int) -> tuple[dict, list]:
    ids = np.arange(item * 10, item * 10 + 6)
    return {"n": len(ids)}, [{"sample_id": ids[ids % k == j]} for j in range(k)]


def _merge(j: int, parts: list, shared: int, k: int) -> tuple[dict, dict]:
    ids = np.concatenate([p["sample_id"] for p in parts])
    return {"j": j, "rows": len(ids), "total": shared}, {"sample_id": ids}


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_map_and_map_reduce_give_the_same_results_on_both_executors(executor: str) -> None:
    if executor == "ray":
        pytest.importorskip("ray")
        from shardtrain.stages.ray_exec import ensure_ray

        ensure_ray(num_cpus=2)
    assert mapreduce.map_tasks(_count, [3, 1, 2], executor, 1) == [7, 3, 5]
    maps, reduces, handles = mapreduce.map_reduce(_split, [0, 1, 2], _merge, 3, executor, 3,
                                                  between=lambda s: sum(x["n"] for x in s))
    assert maps == [{"n": 6}] * 3
    assert reduces == [{"j": j, "rows": 6, "total": 18} for j in range(3)]
    source = Parts([(h, r["rows"]) for h, r in zip(handles, reduces)], load=dict)
    assert source.rows() == 18
    got = source.read(4, 14)["sample_id"].tolist()
    every = np.concatenate([mapreduce.load_part(h)["sample_id"] for h in handles]).tolist()
    assert got == every[4:14]
    assert sorted(every) == sorted(i * 10 + d for i in range(3) for d in range(6))
