"""Read a shard directory as a Ray Dataset (Ray Data has no Arrow IPC file reader).

Lives with the stages, which may import Ray; ``shardtrain.shards`` must not. Ray is
imported when the function runs, never at import time.

Example::

    from shardtrain.stages.ray_data import read_shards
    ds = read_shards("out/shards/prepare/train")   # or "s3://bucket/out/shards/prepare/train"
    ds.take_batch(4)["label"]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa

from shardtrain.core.errors import ShardtrainError
from shardtrain.shards import storage
from shardtrain.shards.reader import read_index, verify_shards


def _read_shard(path: str, columns: list[str] | None, storage_env: dict[str, str] | None = None) -> pa.Table:
    """One shard as an Arrow table (runs in a Ray task): memory-mapped locally, ranged reads from a store."""
    for key, value in (storage_env or {}).items():
        os.environ.setdefault(key, value)
    with storage.open_input(path) as source:
        table = pa.ipc.open_file(source).read_all()
    return table.select(columns) if columns else table


def read_shards(directory: str | Path, *, columns: list[str] | None = None, verify: bool = False) -> Any:
    """A ``ray.data.Dataset`` over the shards the split's index names (nothing else).

    Each shard is read by its own Ray task straight from storage (a shared filesystem on
    a cluster, or a URI such as ``s3://``, whose endpoint and region travel with the task);
    ``columns`` selects columns; ``verify`` re-hashes every shard first.
    """
    import ray

    from shardtrain.stages.runner import STORAGE_ENVS

    if not storage.is_uri(directory):
        directory = Path(directory)
    env = None if storage.is_local(directory) else {k: os.environ[k] for k in STORAGE_ENVS if os.environ.get(k)}
    index = read_index(directory)
    if verify:
        problems = verify_shards(directory)
        if problems:
            raise ShardtrainError(f"{problems[0]} (shard verification failed)")
    read = ray.remote(_read_shard)
    refs = [read.remote(str(storage.join(directory, entry["file"])), columns, env) for entry in index["shards"]]
    return ray.data.from_arrow_refs(refs)
