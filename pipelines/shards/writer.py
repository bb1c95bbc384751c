"""Write shards and their index to a local directory or a URI; the index last.

A shard is one Arrow IPC file holding exactly one record batch, so the bytes depend
only on the rows (not on how a batch was chunked on its way here): the Ray and the
in-process executors call this same function and produce byte-identical files.

Every file is written whole and atomically (``storage.write_bytes``: tmp + fsync + rename
on local disk, one upload on an object store). ``clear_split`` deletes the index before
anything else and ``write_index`` comes last, so the index is the commit record (FORMAT.md,
"Commit protocol and object stores").
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from shardtrain.core.hashing import bytes_digest
from shardtrain.shards import format as fmt
from shardtrain.shards import storage


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


def _atomic_write(path: storage.Location, data: bytes | memoryview) -> None:
    """Write ``data`` whole and atomically to a local path or a URI (see ``storage.write_bytes``)."""
    storage.write_bytes(path, data)


def write_shard(path: storage.Location, columns: dict[str, Any], shard: tuple[int, int] | None = None,
                classes: dict[str, list[str] | None] | None = None) -> dict:
    """Write one shard file (a local path or a URI) atomically and return its index entry.

    ``columns`` maps column names to numpy arrays (``x`` may be (N, *shape)) or Arrow
    arrays (sparse list columns); ``classes`` the label columns' class names (see
    ``build_table``). Returns ``{"file", "rows", "bytes", "sha256"}``; the sha256 is of
    the buffer uploaded, so a reader can tell the object it gets from the one written.
    """
    if not storage.is_uri(path):
        path = Path(path)
    table = build_table(columns, shard, classes)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=max(table.num_rows, 1))
    buf = sink.getvalue()
    view = memoryview(buf)
    storage.write_bytes(path, view)
    return {
        "file": storage.basename(path),
        "rows": table.num_rows,
        "bytes": buf.size,
        "sha256": bytes_digest(view),
    }


def write_index(directory: storage.Location, index: dict) -> storage.Location:
    """Write the index (``_index.json``) atomically; call only after every shard is durable.

    This is the commit: the split is readable from the moment this write completes. Any
    credential in a URI or in the AWS secret variables is redacted from the text first.
    Returns the index's ``Path`` (local) or URI.
    """
    path = storage.join(directory, fmt.INDEX_NAME)
    text = json.dumps(storage.redact_obj(index), indent=2, sort_keys=False, default=_json_default) + "\n"
    storage.write_bytes(path, text.encode("utf-8"))
    return path


def write_rejects(directory: storage.Location, rejects: list[dict[str, Any]]) -> str | None:
    """Write ``_rejects.jsonl`` (one JSON object per reject) when there are any; returns its name.

    Returns ``None`` and writes nothing for no rejects (the index then says ``file: null``).
    Details are redacted like the index (a reject may quote a path or URI).
    """
    if not rejects:
        return None
    lines = "".join(json.dumps(storage.redact_obj(r)) + "\n" for r in rejects)
    storage.write_bytes(storage.join(directory, fmt.REJECTS_NAME), lines.encode())
    return fmt.REJECTS_NAME


def clear_split(directory: storage.Location) -> None:
    """Make a split directory (or prefix) ready for a stage run: the index FIRST, then the rest.

    Deleting the index is the un-commit: from then on no reader trusts the directory, so the
    old shards, temporary files, rejects and previews can go in any order, and a run killed
    anywhere after this leaves no index. Local directories are created (with parents).
    """
    storage.makedirs(directory)
    for name in (fmt.INDEX_NAME, fmt.LEGACY_INDEX_NAME):
        storage.delete(storage.join(directory, name))
    for name in storage.listdir(directory):
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in fmt.SPLIT_FILE_PATTERNS):
            storage.delete(storage.join(directory, name))


def _json_default(obj: Any) -> Any:
    """Make numpy scalars and arrays JSON-serialisable inside the index."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
