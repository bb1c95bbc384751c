"""Read a shard directory as a Ray Dataset (Ray Data has no Arrow IPC file reader).

Lives with the stages, which may import Ray; ``shardtrain.shards`` must not. Ray is
imported when the function runs, never at import time.

Example::

    from shardtrain.stages.ray_data import read_shards
    ds = read_shards("out/shards/prepare/train")   # one block per shard, in index order
    ds.take_batch(4)["label"]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from shardtrain.core.errors import ShardtrainError
from shardtrain.shards.reader import read_index, verify_shards


def _read_shard(path: str, columns: list[str] | None) -> pa.Table:
    """One shard as an Arrow table (runs in a Ray task, next to the data)."""
    with pa.memory_map(path, "r") as source:
        table = pa.ipc.open_file(source).read_all()
    return table.select(columns) if columns else table


def read_shards(directory: str | Path, *, columns: list[str] | None = None, verify: bool = False) -> Any:
    """A ``ray.data.Dataset`` over the shards the split's index names (nothing else).

    Each shard is read by its own Ray task straight from storage (a shared filesystem on
    a cluster); ``columns`` selects columns; ``verify`` re-hashes every shard first.
    """
    import ray

    directory = Path(directory)
    index = read_index(directory)
    if verify:
        problems = verify_shards(directory)
        if problems:
            raise ShardtrainError(f"{problems[0]} (shard verification failed)")
    read = ray.remote(_read_shard)
    refs = [read.remote(str(directory / entry["file"]), columns) for entry in index["shards"]]
    return ray.data.from_arrow_refs(refs)
