"""The shardtrain shard format: Arrow IPC files plus an ``_index.json`` (see FORMAT.md)."""

from shardtrain.shards.format import (
    FORMAT_NAME,
    INDEX_NAME,
    SUPPORTED_VERSIONS,
    shard_name,
)
from shardtrain.shards.reader import ShardSet, index_path, verify_shards
from shardtrain.shards.writer import write_index, write_shard

__all__ = [
    "FORMAT_NAME",
    "INDEX_NAME",
    "SUPPORTED_VERSIONS",
    "ShardSet",
    "index_path",
    "shard_name",
    "verify_shards",
    "write_index",
    "write_shard",
]
