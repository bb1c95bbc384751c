"""The one place the shard format is specified in code (FORMAT.md says it in prose).

Version 1: dense features (``x`` a fixed-size list of uint8 or float32), int64 labels.
Version 2: adds sparse features (``x_ids``/``x_weights`` variable-length lists sharing
offsets), used by text datasets.
Version 3 (written now): the same columns, readable by other tools as the directory stands:
every file that is not a shard starts with ``_`` (``_index.json``, ``_rejects.jsonl``,
``_preview.png``), which pyarrow.dataset, polars and Hugging Face ``datasets`` skip; a
multi-dimensional ``x`` is a nested fixed-size list (``[28][28]``, so its shape is in its
type); and every shard carries the ``huggingface`` schema metadata (features with
``ClassLabel`` names) that ``datasets`` reads. Versions 1 and 2 (``index.json``,
``rejects.jsonl``, a flat ``x`` whose shape is in the index) are still read.
A reader refuses any version not listed here.
"""

from __future__ import annotations

FORMAT_NAME = "shardtrain-shards"
SUPPORTED_VERSIONS = (1, 2, 3)
CURRENT_VERSION = 3
INDEX_NAME = "_index.json"
REJECTS_NAME = "_rejects.jsonl"
PREVIEW_NAME = "_preview.png"
# Versions 1 and 2 named their index and rejects without the leading underscore.
LEGACY_INDEX_NAME = "index.json"
LEGACY_REJECTS_NAME = "rejects.jsonl"
LEGACY_PREVIEW_NAME = "preview.png"
LEGACY_VERSIONS = (1, 2)
SHARD_GLOB = "part-*-of-*.arrow"

# Arrow schema metadata keys: every shard describes itself even without its index.
META_FORMAT = b"shardtrain.format"
META_VERSION = b"shardtrain.version"
META_SHARD = b"shardtrain.shard"
META_X_SHAPE = b"shardtrain.x_shape"
# The key Hugging Face ``datasets`` reads features (ClassLabel names, shapes) from.
META_HUGGINGFACE = b"huggingface"

SPARSE_COLUMNS = ("x_ids", "x_weights")
# Augmented copies get sample_id = source_id + aug_index * AUG_ID_STRIDE, so ids stay unique
# and stable without any global coordination between the workers writing shards.
AUG_ID_STRIDE = 1 << 32


def shard_name(index: int, count: int) -> str:
    """The file name of shard ``index`` of ``count``: ``part-00003-of-00006.arrow``."""
    return f"part-{index:05d}-of-{count:05d}.arrow"


def version_for(columns: list[str]) -> int:
    """The format version written for these columns (dense or sparse: both are version 3)."""
    return CURRENT_VERSION
