"""The shardtrain shard format: Arrow IPC files plus an ``_index.json`` (see FORMAT.md).

Every entry point takes a local path or a URI (``s3://``, ``file://``, ``gs://``, ...; see
``shardtrain.shards.storage``); remote splits are read through ``shardtrain.shards.cache``.
"""

from shardtrain.shards.format import (
    FORMAT_NAME,
    INDEX_NAME,
    SUPPORTED_VERSIONS,
    shard_name,
)
from shardtrain.shards.cache import local_split
from shardtrain.shards.reader import ShardSet, index_fingerprint, index_path, read_index, verify_shards
from shardtrain.shards.writer import clear_split, write_index, write_rejects, write_shard

__all__ = [
    "FORMAT_NAME",
    "INDEX_NAME",
    "SUPPORTED_VERSIONS",
    "ShardSet",
    "clear_split",
    "index_fingerprint",
    "index_path",
    "local_split",
    "read_index",
    "shard_name",
    "verify_shards",
    "write_index",
    "write_rejects",
    "write_shard",
]
