"""Read a shard set: memory-mapped Arrow tables and zero-copy numpy/torch views.

``ShardSet`` refuses what it cannot trust: a directory without an index (``_index.json``,
or ``index.json`` for versions 1 and 2: the stage never finished), a format or version it does not know, a missing shard file,
or, with ``verify=True``, a shard whose size or sha256 differs from the index.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from shardtrain.core.errors import ShardtrainError
from shardtrain.core.hashing import file_digest
from shardtrain.shards import format as fmt


def index_path(directory: str | Path) -> Path:
    """The index file of a split directory: ``_index.json``, else a version 1/2 ``index.json``.

    Returns the current name when neither exists (the caller reports it missing).
    """
    directory = Path(directory)
    path = directory / fmt.INDEX_NAME
    legacy = directory / fmt.LEGACY_INDEX_NAME
    return legacy if not path.exists() and legacy.exists() else path


def read_index(directory: str | Path) -> dict[str, Any]:
    """Load and check the index of a split directory (format name and version)."""
    directory = Path(directory)
    path = index_path(directory)
    if not path.exists():
        if not directory.exists():
            raise ShardtrainError(f"{directory}: no such shard directory")
        raise ShardtrainError(f"{path}: missing (the stage did not finish; re-run it)")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ShardtrainError(f"{path}: unreadable index ({exc})") from None
    if index.get("format") != fmt.FORMAT_NAME:
        raise ShardtrainError(f"{path}: format {index.get('format')!r} is not {fmt.FORMAT_NAME!r}")
    if index.get("version") not in fmt.SUPPORTED_VERSIONS:
        raise ShardtrainError(
            f"{path}: unknown shard format version {index.get('version')!r} "
            f"(this shardtrain reads {', '.join(map(str, fmt.SUPPORTED_VERSIONS))})"
        )
    if path.name == fmt.LEGACY_INDEX_NAME and index["version"] not in fmt.LEGACY_VERSIONS:
        raise ShardtrainError(f"{path}: version {index['version']} names its index {fmt.INDEX_NAME}")
    return index


def verify_shards(directory: str | Path) -> list[str]:
    """Re-hash every shard of a split; return one message per problem (empty = all good)."""
    directory = Path(directory)
    try:
        index = read_index(directory)
    except ShardtrainError as exc:
        return [str(exc)]
    problems = []
    total = 0
    for entry in index.get("shards", []):
        path = directory / entry["file"]
        if not path.exists():
            problems.append(f"{path}: missing shard file")
            continue
        size = path.stat().st_size
        if size != entry["bytes"]:
            problems.append(f"{path}: {size} bytes, index says {entry['bytes']}")
        elif file_digest(path) != entry["sha256"]:
            problems.append(f"{path}: sha256 mismatch")
        total += entry["rows"]
    if total != index.get("rows") and not problems:
        problems.append(f"{index_path(directory)}: shards hold {total} rows, index says {index.get('rows')}")
    return problems


class ShardSet:
    """One split's shards, memory-mapped once; columns come back as zero-copy views.

    Example::

        ss = ShardSet("out/shards/prepare/train")
        xs = ss.column("x")          # list of (rows_i, 28, 28) uint8 views, one per shard
        t = ss.torch_column("label")  # list of int64 tensors sharing the mapped memory
    """

    def __init__(self, directory: str | Path, verify: bool = False) -> None:
        self.directory = Path(directory)
        self.index = read_index(self.directory)
        if verify:
            problems = verify_shards(self.directory)
            if problems:
                raise ShardtrainError(f"{problems[0]} (shard verification failed)")
        self.tables: list[pa.Table] = []
        for entry in self.index["shards"]:
            path = self.directory / entry["file"]
            if not path.exists():
                raise ShardtrainError(f"{path}: missing shard file")
            try:
                source = pa.memory_map(str(path), "r")
                table = pa.ipc.open_file(source).read_all()
            except pa.ArrowInvalid as exc:
                raise ShardtrainError(f"{path}: not a readable Arrow file ({exc})") from None
            if table.num_rows != entry["rows"]:
                raise ShardtrainError(f"{path}: {table.num_rows} rows, index says {entry['rows']}")
            self.tables.append(table)

    @property
    def rows(self) -> int:
        """Total rows over all shards."""
        return int(self.index["rows"])

    @property
    def shards(self) -> list[dict[str, Any]]:
        """The per-shard index entries ``{file, rows, bytes, sha256}``."""
        return list(self.index["shards"])

    @property
    def feature(self) -> dict[str, Any]:
        """The description of the feature column ``x`` (dtype, shape, scale, offset, kind)."""
        return dict(self.index.get("features", {}).get("x", {}))

    @property
    def labels(self) -> dict[str, Any]:
        """Label columns and their descriptions (class names, counts)."""
        return dict(self.index.get("labels", {}))

    @property
    def column_names(self) -> list[str]:
        """The column names of the shards' schema."""
        return [c["name"] for c in self.index.get("schema", [])]

    def has_column(self, name: str) -> bool:
        """Whether the shards have column ``name``."""
        return name in self.column_names

    def _chunk(self, table: pa.Table, name: str) -> pa.Array:
        """The single chunk of a column (shards hold one record batch)."""
        if name not in table.column_names:
            raise ShardtrainError(f"{self.directory}: no column {name!r} (have {', '.join(table.column_names)})")
        col = table.column(name)
        return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()

    def column(self, name: str) -> list[np.ndarray]:
        """Zero-copy numpy views of a column, one per shard; ``x`` gets its row shape back."""
        out = []
        shape = self.feature.get("shape") if name == "x" else None
        for table in self.tables:
            arr = self._chunk(table, name)
            if pa.types.is_fixed_size_list(arr.type):
                # Version 3 nests one fixed-size list per dimension; 1/2 hold a flat one whose
                # shape is in the index. Either way: one contiguous buffer, reshaped in place.
                flat, dims = arr, []
                while pa.types.is_fixed_size_list(flat.type):
                    width = flat.type.list_size
                    dims.append(width)
                    flat = flat.values.slice(flat.offset * width, len(flat) * width)
                values = flat.to_numpy(zero_copy_only=True)
                out.append(values.reshape((len(arr), *(shape or dims))))
            else:
                out.append(arr.to_numpy(zero_copy_only=not pa.types.is_string(arr.type)))
        return out

    def sparse_column(self, name: str) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per shard, the ``(offsets (rows+1,), values (nnz,))`` views of a list column."""
        out = []
        for table in self.tables:
            arr = self._chunk(table, name)
            offsets = arr.offsets.to_numpy(zero_copy_only=True)
            values = arr.values.to_numpy(zero_copy_only=True)
            out.append((offsets, values))
        return out

    def torch_column(self, name: str) -> list[Any]:
        """Zero-copy torch views of a column (the memory is the read-only mapped file)."""
        import warnings

        import torch

        tensors = []
        for arr in self.column(name):
            with warnings.catch_warnings():
                # The mapping is read-only; we never write through these tensors.
                warnings.simplefilter("ignore", UserWarning)
                tensors.append(torch.from_numpy(arr))
        return tensors

    def concat(self, name: str) -> np.ndarray:
        """One contiguous array of a column over all shards (a copy unless there is one shard)."""
        parts = self.column(name)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)
