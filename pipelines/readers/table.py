"""Reader for users' own tables: CSV (header row), Parquet, JSON Lines and Arrow IPC/Feather files.

``path`` is one file, a glob or a directory (every table file in it, one format, sorted by
name); a relative path resolves against the data directory when one is set, else the
working directory. ``read_inputs`` reads the files of each role (``path``, ``val_path``,
``test_path``) into one Arrow table whose rows keep their origin (file, 1-based data row),
so a reject can name ``file:row``. CSV cells are read as text (a later ``abc`` in a
numeric column must not fail the whole read); the other formats keep their types.

Cell parsing is shared by prepare and predict: :func:`numbers` turns a column into
float64 (NaN = missing) plus a mask of cells that are present but not numbers, and
:func:`categories` into stripped strings (``""`` = missing). :func:`detect_kind` decides
numeric or categorical for an undeclared column from its training rows.
"""

from __future__ import annotations

import csv
import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shardtrain.core.errors import ShardtrainError

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
    files: list[Path]
    file_index: np.ndarray  # (N,) int32 index into files
    row: np.ndarray  # (N,) int64 1-based data row within its file

    def where(self, i: int) -> str:
        """``name:row`` of table row ``i`` (what a reject detail names)."""
        return f"{self.files[self.file_index[i]].name}:{int(self.row[i])}"


def format_of(path: Path) -> str | None:
    """The table format of a file from its suffix (``csv``, ``parquet``, ``jsonl``, ``arrow``), or None."""
    name = path.name.lower()
    for suffix, fmt in SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    return None


def resolve_files(pattern: str, data_dir: str | None, fmt: str, key: str = "path") -> tuple[list[Path], str]:
    """The files ``pattern`` names (a file, a glob or a directory), sorted by name, and their one format."""
    path = Path(pattern).expanduser()
    if not path.is_absolute():
        path = (Path(data_dir).expanduser() if data_dir else Path.cwd()) / path
    if any(ch in pattern for ch in "*?["):
        rel = path.relative_to(path.anchor)
        files = sorted(p for p in Path(path.anchor).glob(str(rel)) if p.is_file())
        if not files:
            raise ShardtrainError(f"{path}: no file matches ({_KEY}.{key}')")
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith((".", "_"))
                       and (format_of(p) is not None or fmt != "auto"))
        if not files:
            raise ShardtrainError(f"{path}: directory holds no table file (.csv, .parquet, .jsonl, .arrow, .feather; "
                                  f"{_KEY}.{key}')")
    elif path.is_file():
        files = [path]
    else:
        raise ShardtrainError(f"{path}: table file not found ({_KEY}.{key}')")
    if fmt != "auto":
        return files, fmt
    found = {}
    for f in files:
        kind = format_of(f)
        if kind is None:
            raise ShardtrainError(f"{f}: unknown table format (suffix); set {_KEY}.format'")
        found.setdefault(kind, f)
    if len(found) > 1:
        raise ShardtrainError(f"{path}: files of several formats ({', '.join(f'{k}: {v.name}' for k, v in found.items())}); "
                              f"one format per input")
    return files, next(iter(found))


def _csv_header(path: Path, delimiter: str) -> list[str]:
    """The header row of a CSV file (gzip allowed)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh, delimiter=delimiter), None)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ShardtrainError(f"{path}: cannot read the CSV header ({e})") from e
    if not header:
        raise ShardtrainError(f"{path}: empty CSV file (no header row)")
    names = [h.strip() for h in header]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes or not all(names):
        raise ShardtrainError(f"{path}: line 1: header needs distinct non-empty column names, got {names}")
    return names


def _read_csv(path: Path, opts: TableOptions) -> pa.Table:
    """A CSV file with every column as text (null for empty / NA-like cells)."""
    import pyarrow.csv as pcsv

    names = list(opts.columns) if opts.columns else _csv_header(path, opts.delimiter)
    with pa.input_stream(str(path), compression="detect") as stream:
        return pcsv.read_csv(
            stream,
            read_options=pcsv.ReadOptions(column_names=names, skip_rows=0 if opts.columns else 1),
            parse_options=pcsv.ParseOptions(delimiter=opts.delimiter),
            convert_options=pcsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                                strings_can_be_null=True),
        )


def _read_jsonl(path: Path) -> pa.Table:
    """A JSON Lines file; a column whose values mix types (``1`` and ``"abc"``) is read as text."""
    import pyarrow.json as pajson

    try:
        return pajson.read_json(str(path))
    except pa.ArrowInvalid:
        pass
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    names = list(dict.fromkeys(k for r in rows for k in r))
    cols = {}
    for n in names:
        values = [r.get(n) for r in rows]
        kinds = {type(v) for v in values if v is not None}
        cols[n] = [None if v is None else str(v) for v in values] if len(kinds) > 1 else values
    return pa.table(cols)


def read_file(path: Path, fmt: str, opts: TableOptions) -> pa.Table:
    """Read one table file; a file the format's reader refuses is one ShardtrainError line naming it."""
    try:
        if fmt == "csv":
            table = _read_csv(path, opts)
        elif fmt == "parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(str(path))
        elif fmt == "jsonl":
            table = _read_jsonl(path)
        else:
            import pyarrow.feather as feather

            try:
                table = feather.read_table(str(path))
            except pa.ArrowInvalid:  # an IPC stream rather than a file
                with pa.OSFile(str(path)) as fh:
                    table = pa.ipc.open_stream(fh).read_all()
    except (OSError, pa.ArrowInvalid, ValueError, UnicodeDecodeError) as e:
        raise ShardtrainError(f"{path}: cannot read as {fmt} ({str(e).splitlines()[0] if str(e) else e})") from e
    return table.combine_chunks()


def read_inputs(files: list[Path], fmt: str, opts: TableOptions) -> Inputs:
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
                raise ShardtrainError(f"{f}: columns differ from {files[0].name} (missing {missing}, extra {extra})")
            t = t.select(first_names)
        tables.append(t)
    try:
        table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise ShardtrainError(f"{files[0].parent}: the files' column types do not agree ({str(e).splitlines()[0]})") from e
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


def column_names(path: Path, fmt: str, opts: TableOptions) -> list[str]:
    """A file's column names, read cheaply (the CSV header, the Parquet/Arrow schema, the first JSON line)."""
    try:
        if fmt == "csv":
            return list(opts.columns) if opts.columns else _csv_header(path, opts.delimiter)
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(str(path)).names)
        if fmt == "arrow":
            with pa.memory_map(str(path)) as fh:
                try:
                    return list(pa.ipc.open_file(fh).schema.names)
                except pa.ArrowInvalid:  # feather v1 or an IPC stream: read it
                    pass
            return read_file(path, fmt, opts).column_names
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as fh:
            first = next((line for line in fh if line.strip()), "{}")
        return list(json.loads(first))
    except (OSError, pa.ArrowInvalid, ValueError, UnicodeDecodeError) as e:
        raise ShardtrainError(f"{path}: cannot read as {fmt} ({str(e).splitlines()[0] if str(e) else e})") from e


def check_columns(path: Path, have: list[str], required: dict[str, str]) -> None:
    """Every ``required`` column (name -> the option naming it) is in ``have``, else one line naming file and column."""
    for name, key in required.items():
        if name not in have:
            shown = ", ".join(have[:30]) + (", ..." if len(have) > 30 else "")
            raise ShardtrainError(f"{path}: no column '{name}' ({_KEY}.{key}'; columns: {shown})")


def required_columns(opts: TableOptions, role: str) -> dict[str, str]:
    """The columns the options name (name -> option key) that a file of ``role`` must have."""
    need = {opts.label: "label"}
    if role == "path":
        for key in ("numeric", "categorical", "exclude", "log1p"):
            need.update({c: key for c in getattr(opts, key)})
        need.update({c: k for c, k in ((opts.split_col, "split_col"), (opts.id_col, "id_col")) if c})
    return need

