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

import json
from typing import Any

from shardtrain.core.errors import ShardtrainError
from shardtrain.shards import storage

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
# fnmatch patterns of what a stage run leaves in a split directory besides the index: shards,
# the writer's temporary files (a local write killed before its rename), rejects and previews.
SPLIT_FILE_PATTERNS = (SHARD_GLOB, ".part-*.tmp-*", "._*.tmp-*", ".index.json.tmp-*", ".rejects.jsonl.tmp-*",
                       REJECTS_NAME, LEGACY_REJECTS_NAME, PREVIEW_NAME, LEGACY_PREVIEW_NAME)

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


def index_location(directory: storage.Location) -> storage.Location:
    """The index of a split directory or URI: ``_index.json``, else a version 1/2 ``index.json``.

    A ``Path`` for a local directory, a URI string for a URI; the current name when neither
    exists (the caller reports it missing).
    """
    path = storage.join(directory, INDEX_NAME)
    legacy = storage.join(directory, LEGACY_INDEX_NAME)
    return legacy if not storage.exists(path) and storage.exists(legacy) else path


def load_index(directory: storage.Location) -> tuple[dict[str, Any], bytes, storage.Location]:
    """Read and check a split's index: ``(index, its raw bytes, where it is)``.

    Refuses (one-line ``ShardtrainError``) a missing directory or index (the stage did not
    finish), unreadable JSON, another format, or a version this code does not read.
    """
    path = index_location(directory)
    shown = storage.redact(path)
    try:
        raw = storage.read_bytes(path)
    except FileNotFoundError:
        if not storage.exists(directory):
            raise ShardtrainError(f"{storage.redact(directory)}: no such shard directory") from None
        raise ShardtrainError(f"{shown}: missing (the stage did not finish; re-run it)") from None
    except OSError as exc:
        raise ShardtrainError(f"{shown}: unreadable index ({storage.error_text(exc)})") from None
    try:
        index = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ShardtrainError(f"{shown}: unreadable index ({exc})") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT_NAME:
        found = index.get("format") if isinstance(index, dict) else type(index).__name__
        raise ShardtrainError(f"{shown}: format {found!r} is not {FORMAT_NAME!r}")
    if index.get("version") not in SUPPORTED_VERSIONS:
        raise ShardtrainError(
            f"{shown}: unknown shard format version {index.get('version')!r} "
            f"(this shardtrain reads {', '.join(map(str, SUPPORTED_VERSIONS))})"
        )
    if storage.basename(path) == LEGACY_INDEX_NAME and index["version"] not in LEGACY_VERSIONS:
        raise ShardtrainError(f"{shown}: version {index['version']} names its index {INDEX_NAME}")
    return index, raw, path
