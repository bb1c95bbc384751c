"""Read a shard set: memory-mapped Arrow tables and zero-copy numpy/torch views.

``ShardSet`` refuses what it cannot trust: a directory without an index (``_index.json``,
or ``index.json`` for versions 1 and 2: the stage never finished), a format or version it does not know, a missing shard file,
or, with ``verify=True``, a shard whose size or sha256 differs from the index.

Every function takes a local directory or a URI (``s3://bucket/out/shards/prepare/train``,
``file:///...``). A remote ``ShardSet`` reads through the local cache
(``shardtrain.shards.cache``), which copies the shards the index names and checks their
sha256, so columns are memory-mapped zero-copy views either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from shardtrain.core.errors import ShardtrainError
from shardtrain.core.hashing import file_digest
from shardtrain.shards import cache, storage
from shardtrain.shards import format as fmt


def index_path(directory: storage.Location) -> storage.Location:
    """The index file of a split directory: ``_index.json``, else a version 1/2 ``index.json``.

    A ``Path`` for a local directory, a URI string for a URI. Returns the current name when
    neither exists (the caller reports it missing).
    """
    return fmt.index_location(directory)


def read_index(directory: storage.Location) -> dict[str, Any]:
    """Load and check the index of a split directory or URI (format name and version)."""
    return fmt.load_index(directory)[0]


def index_fingerprint(directory: storage.Location) -> str | None:
    """The ``fingerprint`` of a split's index, or ``None`` when it has no readable index.

    What a stage runner compares to decide whether a split (local or remote) is up to date.
    """
    try:
        return read_index(directory).get("fingerprint")
    except ShardtrainError:
        return None


def _check_local(path: Path, entry: dict[str, Any]) -> str | None:
    """The problem with one local shard file, or ``None`` when its size and sha256 match."""
    if not path.exists():
        return f"{path}: missing shard file"
    size = path.stat().st_size
    if size != entry["bytes"]:
        return f"{path}: {size} bytes, index says {entry['bytes']}"
    if file_digest(path) != entry["sha256"]:
        return f"{path}: sha256 mismatch"
    return None


def _check_remote(location: str, entry: dict[str, Any]) -> str | None:
    """The problem with one shard object (streamed and hashed, never held whole), or ``None``."""
    shown = storage.redact(location)
    size = storage.file_size(location)
    if size is None:
        return f"{shown}: missing shard object"
    if size != entry["bytes"]:
        return f"{shown}: {size} bytes, index says {entry['bytes']}"
    try:
        size, digest = storage.digest(location)
    except FileNotFoundError:
        return f"{shown}: missing shard object"
    if size != entry["bytes"]:
        return f"{shown}: {size} bytes, index says {entry['bytes']}"
    if digest != entry["sha256"]:
        return f"{shown}: sha256 mismatch"
    return None


def verify_shards(directory: storage.Location) -> list[str]:
    """Re-hash every shard of a split; return one message per problem (empty = all good).

    On a store each object is streamed and hashed (nothing is cached); messages name the
    object's URI without credentials.
    """
    remote = not storage.is_local(directory)
    try:
        index = read_index(directory)
    except ShardtrainError as exc:
        return [str(exc)]
    problems = []
    total = 0
    for entry in index.get("shards", []):
        path = storage.join(directory, entry["file"])
        if remote:
            problem = _check_remote(str(path), entry)
        else:
            problem = _check_local(storage.local_path(path), entry)
        if problem:
            problems.append(problem)
        total += entry["rows"]
    if total != index.get("rows") and not problems:
        problems.append(f"{storage.redact(index_path(directory))}: shards hold {total} rows, "
                        f"index says {index.get('rows')}")
    return problems


class ShardSet:
    """One split's shards, memory-mapped once; columns come back as zero-copy views.

    Example::

        ss = ShardSet("out/shards/prepare/train")   # or "s3://bucket/out/shards/prepare/train"
        xs = ss.column("x")          # list of (rows_i, 28, 28) uint8 views, one per shard
        t = ss.torch_column("label")  # list of int64 tensors sharing the mapped memory

    ``directory`` is the local directory mapped (for a remote split, its verified copy in
    the cache; ``cache_dir``/``max_bytes`` go to ``cache.local_split``); ``location`` is
    what was asked for, without credentials.
    """

    def __init__(self, directory: storage.Location, verify: bool = False, *,
                 cache_dir: str | Path | None = None, max_bytes: int | None = None) -> None:
        self.location = storage.redact(directory)
        self.directory = cache.local_split(directory, cache_dir=cache_dir, max_bytes=max_bytes)
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
