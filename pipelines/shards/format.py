"""The one place the shard format is specified in code (FORMAT.md says it in prose).

Version 1: dense features (``x`` a fixed-size list of uint8 or float32), int64 labels.
Version 2: adds sparse features (``x_ids``/``x_weights`` variable-length lists sharing
offsets), used by text datasets. A reader refuses any version not listed here.
"""

from __future__ import annotations

FORMAT_NAME = "shardtrain-shards"
SUPPORTED_VERSIONS = (1, 2)
INDEX_NAME = "index.json"
REJECTS_NAME = "rejects.jsonl"
SHARD_GLOB = "part-*-of-*.arrow"

# Arrow schema metadata keys: every shard describes itself even without its index.
META_FORMAT = b"shardtrain.format"
META_VERSION = b"shardtrain.version"
META_SHARD = b"shardtrain.shard"
META_X_SHAPE = b"shardtrain.x_shape"

SPARSE_COLUMNS = ("x_ids", "x_weights")
# Augmented copies get sample_id = source_id + aug_index * AUG_ID_STRIDE, so ids stay unique
# and stable without any global coordination between the workers writing shards.
AUG_ID_STRIDE = 1 << 32


def shard_name(index: int, count: int) -> str:
    """The file name of shard ``index`` of ``count``: ``part-00003-of-00006.arrow``."""
    return f"part-{index:05d}-of-{count:05d}.arrow"


def version_for(columns: list[str]) -> int:
    """The lowest format version that can hold these columns."""
    return 2 if any(c in SPARSE_COLUMNS for c in columns) else 1
