"""Write shards and their index: temporary name, then rename; the index last.

A shard is one Arrow IPC file holding exactly one record batch, so the bytes depend
only on the rows (not on how a batch was chunked on its way here): the Ray and the
in-process executors call this same function and produce byte-identical files.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from shardtrain.core.hashing import bytes_digest
from shardtrain.shards import format as fmt


def _to_arrow(name: str, values: Any) -> tuple[pa.Array, list[int] | None]:
    """Convert one column to an Arrow array; dense ``x`` becomes a fixed-size list.

    Returns the array and, for multi-dimensional numpy input, the per-row shape that
    the flat fixed-size list stands for (recorded in the schema metadata).
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        return values, None
    arr = np.asarray(values)
    if arr.dtype == object:
        return pa.array(arr.tolist(), type=pa.string()), None
    if arr.ndim == 1:
        return pa.array(np.ascontiguousarray(arr)), None
    # (N, *shape) becomes nested fixed-size lists, innermost dimension first, so the row
    # shape is in the type (pyarrow, polars and HF datasets see [28][28], not [784]); the
    # buffer is still one contiguous block that a reader maps and reshapes without a copy.
    shape = list(arr.shape[1:])
    nested = pa.array(np.ascontiguousarray(arr).reshape(-1))
    for size in reversed(shape):
        nested = pa.FixedSizeListArray.from_arrays(nested, size)
    return nested, shape


def _hf_feature(arrow_type: pa.DataType, classes: list[str] | None = None) -> dict[str, Any]:
    """The Hugging Face ``datasets`` feature (as its ``to_dict`` form) of one column's type."""
    if classes is not None and pa.types.is_integer(arrow_type):
        return {"names": list(classes), "_type": "ClassLabel"}
    if pa.types.is_fixed_size_list(arrow_type) or pa.types.is_list(arrow_type):
        length = arrow_type.list_size if pa.types.is_fixed_size_list(arrow_type) else -1
        return {"feature": _hf_feature(arrow_type.value_type), "length": length, "_type": "Sequence"}
    dtype = {"float": "float32", "double": "float64", "halffloat": "float16"}.get(str(arrow_type), str(arrow_type))
    return {"dtype": dtype, "_type": "Value"}


def hf_metadata(schema: pa.Schema, classes: dict[str, list[str] | None] | None = None) -> bytes:
    """The ``huggingface`` schema metadata value: features for every column, ClassLabel names."""
    classes = classes or {}
    features = {f.name: _hf_feature(f.type, classes.get(f.name)) for f in schema}
    return json.dumps({"info": {"features": features}}, sort_keys=True).encode()


def build_table(columns: dict[str, Any], shard: tuple[int, int] | None = None,
                classes: dict[str, list[str] | None] | None = None) -> pa.Table:
    """Build the single-batch Arrow table of one shard, with self-describing metadata.

    ``classes`` maps label columns to their class names (``None`` for a regression
    target); they go into the ``huggingface`` metadata as ``ClassLabel`` features.
    """
    arrays, names, meta = [], [], {}
    rows = None
    for name, values in columns.items():
        array, shape = _to_arrow(name, values)
        if rows is None:
            rows = len(array)
        elif len(array) != rows:
            raise ValueError(f"column {name!r} has {len(array)} rows, expected {rows}")
        arrays.append(array)
        names.append(name)
        if name == "x" and shape is not None:
            meta[fmt.META_X_SHAPE] = json.dumps(shape).encode()
    meta[fmt.META_FORMAT] = fmt.FORMAT_NAME.encode()
    meta[fmt.META_VERSION] = str(fmt.version_for(names)).encode()
    if shard is not None:
        meta[fmt.META_SHARD] = f"{shard[0]}/{shard[1]}".encode()
    table = pa.Table.from_arrays(arrays, names=names)
    meta[fmt.META_HUGGINGFACE] = hf_metadata(table.schema, classes)
    return table.replace_schema_metadata(meta)


def _atomic_write(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` through a unique temporary file, fsync, then rename."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_shard(path: str | Path, columns: dict[str, Any], shard: tuple[int, int] | None = None,
                classes: dict[str, list[str] | None] | None = None) -> dict:
    """Write one shard file atomically and return its index entry.

    ``columns`` maps column names to numpy arrays (``x`` may be (N, *shape)) or Arrow
    arrays (sparse list columns); ``classes`` the label columns' class names (see
    ``build_table``). Returns ``{"file", "rows", "bytes", "sha256"}``.
    """
    path = Path(path)
    table = build_table(columns, shard, classes)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=max(table.num_rows, 1))
    buf = sink.getvalue()
    view = memoryview(buf)
    _atomic_write(path, view)
    return {
        "file": path.name,
        "rows": table.num_rows,
        "bytes": buf.size,
        "sha256": bytes_digest(view),
    }


def write_index(directory: str | Path, index: dict) -> Path:
    """Write the index (``_index.json``) atomically; call only after every shard is durable."""
    path = Path(directory) / fmt.INDEX_NAME
    text = json.dumps(index, indent=2, sort_keys=False, default=_json_default) + "\n"
    _atomic_write(path, text.encode("utf-8"))
    return path


def _json_default(obj: Any) -> Any:
    """Make numpy scalars and arrays JSON-serialisable inside the index."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
