"""Reader for users' own tables: CSV (header row), Parquet, JSON Lines and Arrow IPC/Feather files.

``path`` is one file, a glob or a directory (every table file in it, one format, sorted by
name), a local path or a URI (``s3://bucket/tables/*.parquet``); a relative path resolves
against the data directory when one is set, else the working directory. Prepare reads
pieces of the files (``shardtrain.stages.table_plan``): :func:`read_csv_bytes` and
:func:`read_jsonl_bytes` parse one byte range of lines, Parquet row groups and Arrow
record batches are read from storage one at a time. ``read_inputs`` (predict) reads
whole files into one Arrow table whose rows keep their origin (file, 1-based data row),
so a reject can name ``file:row``. CSV cells are read as text (a later ``abc`` in a
numeric column must not fail the whole read); the other formats keep their types.

Cell parsing is shared by prepare and predict: :func:`numbers` turns a column into
float64 (NaN = missing) plus a mask of cells that are present but not numbers, and
:func:`categories` into stripped strings (``""`` = missing). :func:`detect_kind` decides
numeric or categorical for an undeclared column from its training rows.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shardtrain.core.errors import ShardtrainError
from shardtrain.shards import storage

NUMBER_RX = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
NUMERIC_SHARE = 0.95  # a text column is numeric when this share of its non-empty training cells are numbers
SUFFIXES = {".csv": "csv", ".csv.gz": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
            ".ndjson": "jsonl", ".jsonl.gz": "jsonl", ".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow"}
_KEY = "config key 'dataset.options"


@dataclass(frozen=True)
class TableOptions:
    """Options of the ``table`` dataset kind (``dataset.options``); see the README for the full table.

    ``path`` and ``label`` are required. Splits come from ``val_path``/``test_path``, else
    ``split_col``, else seeded ``split`` fractions (stratified by label for classification).
    ``numeric``/``categorical`` force a column's kind (others are detected), ``exclude``
    drops columns, ``log1p`` takes a signed log1p of heavy-tailed numeric columns before
    standardising. ``columns`` names the fields of a CSV without a header row.
    """

    __pydantic_config__ = {"extra": "forbid"}  # validated from the config by pydantic; unknown keys are errors

    path: str
    label: str
    val_path: str | None = None
    test_path: str | None = None
    split_col: str | None = None
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    classes: tuple[str, ...] | None = None
    task: Literal["classification", "regression"] | None = None
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    log1p: tuple[str, ...] = ()
    missing: Literal["impute", "reject"] = "impute"
    format: Literal["auto", "csv", "parquet", "jsonl", "arrow"] = "auto"
    columns: tuple[str, ...] | None = None
    delimiter: str = ","
    id_col: str | None = None
    max_categories: int = 100
    min_frequency: int = 1
    max_classes: int = 50

    def __post_init__(self) -> None:
        """Refuse contradictory or out-of-range options before any file is read, naming the key."""
        if min(self.split) < 0 or abs(sum(self.split) - 1.0) > 1e-6 or self.split[0] <= 0:
            raise ShardtrainError(f"{_KEY}.split': expected 3 non-negative fractions (train, val, test) summing "
                                  f"to 1 with train > 0, got {list(self.split)}")
        if self.split_col and (self.val_path or self.test_path):
            raise ShardtrainError(f"{_KEY}.split_col': give split_col or val_path/test_path, not both")
        for key in ("max_categories", "min_frequency", "max_classes"):
            if getattr(self, key) < 1:
                raise ShardtrainError(f"{_KEY}.{key}': must be >= 1, got {getattr(self, key)}")
        both = sorted(set(self.numeric) & set(self.categorical))
        if both:
            raise ShardtrainError(f"{_KEY}.numeric': {both} also listed in categorical")
        special = {self.label, self.split_col, self.id_col} - {None}
        for key in ("numeric", "categorical", "exclude", "log1p"):
            clash = sorted(special & set(getattr(self, key)))
            if clash:
                raise ShardtrainError(f"{_KEY}.{key}': {clash} is the label, split or id column")
        if set(self.log1p) & set(self.categorical):
            raise ShardtrainError(f"{_KEY}.log1p': {sorted(set(self.log1p) & set(self.categorical))} are categorical")
        if len(self.delimiter) != 1:
            raise ShardtrainError(f"{_KEY}.delimiter': expected one character, got {self.delimiter!r}")


@dataclass
class Inputs:
    """Rows read from a set of files: the Arrow table, and for each row its file and 1-based data row."""

    table: pa.Table
    files: list[str]  # locations (paths or URIs)
    file_index: np.ndarray  # (N,) int32 index into files
    row: np.ndarray  # (N,) int64 1-based data row within its file

    def where(self, i: int) -> str:
        """``name:row`` of table row ``i`` (what a reject detail names)."""
        return f"{storage.basename(self.files[self.file_index[i]])}:{int(self.row[i])}"


def format_of(location: storage.Location) -> str | None:
    """The table format of a file from its suffix (``csv``, ``parquet``, ``jsonl``, ``arrow``), or None."""
    name = storage.basename(location).lower()
    for suffix, fmt in SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    return None


def locate(pattern: str, data_dir: str | None) -> str:
    """``pattern`` as a location: a URI as given, a relative path under the data directory (or the cwd)."""
    if storage.is_uri(pattern):
        return pattern
    path = Path(pattern).expanduser()
    if path.is_absolute():
        return str(path)
    if data_dir and storage.is_uri(data_dir):
        return str(storage.join(data_dir, pattern))
    return str((Path(data_dir).expanduser() if data_dir else Path.cwd()) / path)


def resolve_files(pattern: str, data_dir: str | None, fmt: str, key: str = "path") -> tuple[list[str], str]:
    """The files ``pattern`` names (a file, a glob or a directory; path or URI), sorted by name, and their one format."""
    location = locate(pattern, data_dir)
    shown = storage.redact(location)
    if any(ch in pattern for ch in "*?["):
        files = storage.expand(location)
        if not files:
            raise ShardtrainError(f"{shown}: no file matches ({_KEY}.{key}')")
    elif storage.file_size(location) is not None:
        files = [location]
    else:
        files = [f for f in storage.expand(location) if not storage.basename(f).startswith((".", "_"))
                 and (format_of(f) is not None or fmt != "auto")]
        if not files:
            what = "directory holds no table file (.csv, .parquet, .jsonl, .arrow, .feather; " if storage.exists(
                location) or storage.expand(location) else "table file not found ("
            raise ShardtrainError(f"{shown}: {what}{_KEY}.{key}')")
    if fmt != "auto":
        return files, fmt
    found: dict[str, str] = {}
    for f in files:
        kind = format_of(f)
        if kind is None:
            raise ShardtrainError(f"{storage.redact(f)}: unknown table format (suffix); set {_KEY}.format'")
        found.setdefault(kind, f)
    if len(found) > 1:
        raise ShardtrainError(f"{shown}: files of several formats ("
                              f"{', '.join(f'{k}: {storage.basename(v)}' for k, v in found.items())}); one format per input")
    return files, next(iter(found))


def first_line(location: storage.Location) -> bytes:
    """The first line of a file (decompressed by suffix), read in 64 KiB steps, never the whole file."""
    out = b""
    with storage.open_stream(location) as stream:
        while b"\n" not in out:
            chunk = stream.read(1 << 16)
            if not chunk:
                break
            out += chunk
    return out.split(b"\n", 1)[0]


def _csv_header(location: storage.Location, delimiter: str) -> list[str]:
    """The header row of a CSV file (gzip allowed)."""
    shown = storage.redact(location)
    try:
        header = next(csv.reader([first_line(location).decode("utf-8-sig").rstrip("\r")], delimiter=delimiter), None)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ShardtrainError(f"{shown}: cannot read the CSV header ({e})") from e
    if not header:
        raise ShardtrainError(f"{shown}: empty CSV file (no header row)")
    names = [h.strip() for h in header]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes or not all(names):
        raise ShardtrainError(f"{shown}: line 1: header needs distinct non-empty column names, got {names}")
    return names


def read_csv_bytes(data: bytes, names: list[str], skip_header: bool, delimiter: str) -> pa.Table:
    """CSV lines (bytes) with every column as text (null for empty / NA-like cells); ``skip_header``: drop line 1."""
    import pyarrow.csv as pcsv

    if skip_header:
        data = data.split(b"\n", 1)[1] if b"\n" in data else b""
    if not data.strip():
        return pa.table({n: pa.array([], pa.string()) for n in names})
    return pcsv.read_csv(
        io.BytesIO(data),
        read_options=pcsv.ReadOptions(column_names=names),
        parse_options=pcsv.ParseOptions(delimiter=delimiter),
        convert_options=pcsv.ConvertOptions(column_types={n: pa.string() for n in names}, strings_can_be_null=True),
    )


def json_kinds(data: bytes) -> dict[str, set[str]]:
    """Per column, the value classes JSON lines hold (``number``, ``text``, ``bool``, ``other``; nulls left out)."""
    import pyarrow.json as pajson

    try:
        table = pajson.read_json(io.BytesIO(data)) if data.strip() else pa.table({})
        return {n: ({type_class(table.column(n).type)} - {"null"}) for n in table.column_names}
    except pa.ArrowInvalid:
        pass
    kinds: dict[str, set[str]] = {}
    for line in data.splitlines():
        if line.strip():
            for k, v in json.loads(line).items():
                kinds.setdefault(k, set())
                if v is not None:
                    kinds[k].add(_py_class(v))
    return kinds


def _py_class(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    return "text" if isinstance(v, str) else "other"


def type_class(t: pa.DataType) -> str:
    """``number``, ``text``, ``bool``, ``null`` or ``other``: what decides a column's kind and its merges."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if _is_number(t):
        return "number"
    if _is_text(t):
        return "text"
    if pa.types.is_boolean(t):
        return "bool"
    return "null" if pa.types.is_null(t) else "other"


def read_jsonl_bytes(data: bytes, names: list[str], text_cols: frozenset[str] = frozenset()) -> pa.Table:
    """JSON Lines (bytes) as a table with columns ``names``; ``text_cols`` (mixed types in the file) become text."""
    import pyarrow.json as pajson

    table = None
    if not text_cols and data.strip():
        try:
            table = pajson.read_json(io.BytesIO(data))
        except pa.ArrowInvalid:
            table = None
    if table is None:
        rows = [json.loads(line) for line in data.splitlines() if line.strip()]
        cols = {}
        for n in names:
            values = [r.get(n) for r in rows]
            mixed = n in text_cols or len({_py_class(v) for v in values if v is not None}) > 1
            cols[n] = [None if v is None else str(v) for v in values] if mixed else values
        table = pa.table(cols) if rows else pa.table({n: pa.array([], pa.null()) for n in names})
    n_rows = table.num_rows
    return pa.table({n: table.column(n) if n in table.column_names else pa.nulls(n_rows) for n in names})


def read_file(location: storage.Location, fmt: str, opts: TableOptions) -> pa.Table:
    """Read one whole table file; a file the format's reader refuses is one ShardtrainError line naming it."""
    try:
        if fmt == "csv":
            names = list(opts.columns) if opts.columns else _csv_header(location, opts.delimiter)
            with storage.open_stream(location) as stream:
                table = read_csv_bytes(stream.read(), names, not opts.columns, opts.delimiter)
        elif fmt == "parquet":
            import pyarrow.parquet as pq

            with storage.open_input(location) as fh:
                table = pq.read_table(fh)
        elif fmt == "jsonl":
            with storage.open_stream(location) as stream:
                data = stream.read()
            names = list(dict.fromkeys(json_kinds(data)))
            table = read_jsonl_bytes(data, names)
        else:
            table = read_arrow_whole(location)
    except (OSError, pa.ArrowInvalid, ValueError, UnicodeDecodeError) as e:
        raise ShardtrainError(f"{storage.redact(location)}: cannot read as {fmt} "
                              f"({str(e).splitlines()[0] if str(e) else e})") from e
    return table.combine_chunks()


def read_arrow_whole(location: storage.Location) -> pa.Table:
    """An Arrow IPC file, an IPC stream or a Feather v1 file, read whole."""
    import pyarrow.feather as feather

    data = storage.read_bytes(location)
    try:
        return feather.read_table(pa.BufferReader(data))
    except pa.ArrowInvalid:  # an IPC stream rather than a file
        return pa.ipc.open_stream(pa.BufferReader(data)).read_all()


def read_inputs(files: list[str], fmt: str, opts: TableOptions) -> Inputs:
    """Read and concatenate ``files`` (same columns in each; types are unified, int and float -> float)."""
    tables, first_names = [], None
    for f in files:
        t = read_file(f, fmt, opts)
        if first_names is None:
            first_names = t.column_names
        else:
            missing = sorted(set(first_names) - set(t.column_names))
            extra = sorted(set(t.column_names) - set(first_names))
            if missing or extra:
                raise ShardtrainError(f"{storage.redact(f)}: columns differ from {storage.basename(files[0])} "
                                      f"(missing {missing}, extra {extra})")
            t = t.select(first_names)
        tables.append(t)
    try:
        table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise ShardtrainError(f"{storage.redact(files[0])}: the files' column types do not agree "
                              f"({str(e).splitlines()[0]})") from e
    sizes = [t.num_rows for t in tables]
    file_index = np.repeat(np.arange(len(files), dtype=np.int32), sizes)
    row = np.concatenate([np.arange(1, n + 1, dtype=np.int64) for n in sizes]) if sizes else np.zeros(0, np.int64)
    return Inputs(table.combine_chunks(), list(files), file_index, row)


def _plain(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    """One contiguous array, dictionaries decoded (a pandas categorical saved to Parquet)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    return col


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def numbers(col: pa.ChunkedArray | pa.Array, name: str) -> tuple[np.ndarray, np.ndarray]:
    """float64 values (N,) with NaN where missing, and bad (N,) bool: present but not a finite number."""
    col = _plain(col)
    t = col.type
    if _is_number(t) or pa.types.is_boolean(t) or pa.types.is_null(t):
        values = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64, copy=True)
        bad = np.isinf(values)
        values[bad] = np.nan
        return values, bad
    if not _is_text(t):
        raise ShardtrainError(f"column '{name}': type {t} is not numeric (declare it in "
                              f"{_KEY}.categorical' or {_KEY}.exclude')")
    text = pc.utf8_trim_whitespace(col.cast(pa.string()))
    present = pc.fill_null(pc.greater(pc.utf8_length(text), 0), False).to_numpy(zero_copy_only=False)
    parses = pc.fill_null(pc.match_substring_regex(text, NUMBER_RX), False).to_numpy(zero_copy_only=False)
    values = np.full(len(col), np.nan)
    values[parses] = pc.cast(text.filter(pa.array(parses)), pa.float64()).to_numpy(zero_copy_only=False)
    return values, present & ~parses


def categories(col: pa.ChunkedArray | pa.Array, name: str) -> np.ndarray:
    """Cells as an object array of stripped strings (``""`` = missing; ``3.0`` -> ``"3"``, True -> ``"true"``)."""
    col = _plain(col)
    try:
        text = pc.cast(col, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise ShardtrainError(f"column '{name}': type {col.type} cannot be read as categories ({e})") from e
    text = pc.fill_null(pc.utf8_trim_whitespace(text), "")
    return np.asarray(text.to_numpy(zero_copy_only=False), dtype=object)


def detect_kind(col: pa.ChunkedArray | pa.Array, name: str) -> str:
    """``numeric`` or ``categorical`` for an undeclared column, from its training rows.

    Numeric dtypes are numeric; strings and booleans categorical, except a text column
    whose non-empty cells are at least ``NUMERIC_SHARE`` numbers (CSV cells are text),
    whose other cells then become ``non_numeric`` rejects. A column with no value is
    categorical (its only slot is ``<missing>``). Other types must be declared or excluded.
    """
    col = _plain(col)
    t = col.type
    if _is_number(t):
        return "numeric"
    if pa.types.is_boolean(t) or pa.types.is_null(t):
        return "categorical"
    if not _is_text(t):
        raise ShardtrainError(f"column '{name}': type {t} is neither numeric nor text (declare it in "
                              f"{_KEY}.categorical' or {_KEY}.exclude')")
    values, bad = numbers(col, name)
    present = int((~np.isnan(values)).sum()) + int(bad.sum())
    if present == 0:
        return "categorical"
    return "numeric" if (present - int(bad.sum())) >= NUMERIC_SHARE * present else "categorical"


def column_names(location: storage.Location, fmt: str, opts: TableOptions) -> list[str]:
    """A file's column names, read cheaply (the CSV header, the Parquet/Arrow schema, the first JSON line)."""
    try:
        if fmt == "csv":
            return list(opts.columns) if opts.columns else _csv_header(location, opts.delimiter)
        if fmt == "parquet":
            import pyarrow.parquet as pq

            with storage.open_input(location) as fh:
                return list(pq.ParquetFile(fh).schema_arrow.names)
        if fmt == "arrow":
            with storage.open_input(location) as fh:
                try:
                    return list(pa.ipc.open_file(fh).schema.names)
                except pa.ArrowInvalid:  # feather v1 or an IPC stream: read it
                    pass
            return read_file(location, fmt, opts).column_names
        with storage.open_stream(location) as stream:
            text = b""
            while True:  # the first non-blank line
                chunk = stream.read(1 << 16)
                text += chunk
                lines = [ln for ln in text.split(b"\n")[:-1 if chunk else None] if ln.strip()]
                if lines or not chunk:
                    break
        return list(json.loads(lines[0])) if lines else []
    except (OSError, pa.ArrowInvalid, ValueError, UnicodeDecodeError) as e:
        raise ShardtrainError(f"{storage.redact(location)}: cannot read as {fmt} "
                              f"({str(e).splitlines()[0] if str(e) else e})") from e


def check_columns(path: storage.Location, have: list[str], required: dict[str, str]) -> None:
    """Every ``required`` column (name -> the option naming it) is in ``have``, else one line naming file and column."""
    for name, key in required.items():
        if name not in have:
            shown = ", ".join(have[:30]) + (", ..." if len(have) > 30 else "")
            raise ShardtrainError(f"{storage.redact(path)}: no column '{name}' ({_KEY}.{key}'; columns: {shown})")


def required_columns(opts: TableOptions, role: str) -> dict[str, str]:
    """The columns the options name (name -> option key) that a file of ``role`` must have."""
    need = {opts.label: "label"}
    if role == "path":
        for key in ("numeric", "categorical", "exclude", "log1p"):
            need.update({c: key for c in getattr(opts, key)})
        need.update({c: k for c, k in ((opts.split_col, "split_col"), (opts.id_col, "id_col")) if c})
    return need

