"""Reader for labelled text files: delimited (TSV, CSV) or JSON Lines, one record per line.

``TextOptions`` are the ``text`` dataset kind's options. A file is read in two steps:

* :meth:`TextOptions.layout` resolves, for one file, how it is read (:class:`TextLayout`):
  the format (``auto``: JSON Lines for a ``.jsonl``/``.ndjson`` suffix, else delimited),
  the separator, the header, quoting (``None``: on for ``,``, off otherwise, so a TSV's
  quotes stay text) and the ``text``/``label`` columns. Unset columns are ``text``/``label``
  by name when the file has names (a header, JSON Lines), else label 0 and text 1 (the
  ``label<TAB>text`` layout of the SMS Spam Collection).
* :func:`read_file` (a local path or a URI, read whole: predict, and the reference the
  planned prepare is tested against) returns every data line as a row: ``sample_id`` (int64, 0-based data
  row), ``line`` (1-based line number), ``text`` and ``label`` (the raw label cell, a
  stripped str, "" when absent), and ``reject_reason``/``reject_detail`` ("" = kept):
  ``invalid_utf8``, ``empty_line``, ``field_count``, ``bad_quoting``, ``bad_json``,
  ``missing_field`` and ``empty_text``, each with ``file:line`` and the value in the detail.
  Labels are not encoded here: the vocabulary comes from the training split
  (:class:`~shardtrain.core.labels.LabelVocab`). File-level problems raise one
  ``ShardtrainError`` line naming the file.

The prepare stage does not read files whole: ``shardtrain.stages.text_plan`` cuts them
into line blocks and each task parses its own with the same pieces: :func:`resolve_fields`
(the columns, from the header line the driver reads with :func:`first_line`),
:func:`parse_lines` (cells and ``(row, reason, detail)`` rejects of a run of lines) and
:func:`reject_detail` (the ``file:line: ...`` wording, from the row's sample id).

A delimited record may not span lines (a quoted field holds no newline), so a block cut
at a line boundary is cut at a record boundary. Without quoting, when the text is the last
column a line is split at most (columns - 1) times, so the separator inside the text stays
in the text.

:func:`stratified_split` assigns train/val/test: within each stratum (a label cell; rows
rejected by the reader form one more stratum, so their reject is counted on the split they
fall in) rows are permuted by a Generator seeded with (seed, stratum index) and cut at the
cumulative fractions (rounded half up): a pure function of (seed, label cells).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from typing import Literal

import numpy as np

from shardtrain.core.errors import ShardtrainError
from shardtrain.shards import storage

SPLITS = ("train", "val", "test")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
_KEY = "config key 'dataset.options"


@dataclass(frozen=True)
class TextOptions:
    """``dataset.options`` of the ``text`` kind: which files, how they are laid out, the classes, the split.

    ``path`` (required) is the labelled file; ``val_path``/``test_path`` optional files for
    those splits (all paths relative to ``--data-dir`` when set). ``split`` holds the
    train/val/test fractions of ``path``; a split given as a file takes nothing from
    ``path`` (the other fractions are renormalised) and a split with fraction 0 and no
    file is left out (the DataModule then carves validation from train). ``text`` and
    ``label`` are column names (header, JSON Lines) or 0-based indexes (no header).
    ``classes`` fixes the class names in index order; None takes the training labels.
    """

    __pydantic_config__ = {"extra": "forbid"}  # validated from the config by pydantic; unknown keys are errors

    path: str = ""
    val_path: str | None = None
    test_path: str | None = None
    format: Literal["auto", "delimited", "jsonl"] = "auto"
    sep: str = "\t"
    header: bool = False
    quoting: bool | None = None
    text: int | str | None = None
    label: int | str | None = None
    classes: tuple[str, ...] | None = None
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)

    def __post_init__(self) -> None:
        """Check what the types cannot say, before any file is read; a bad value names its key."""
        if not self.path:
            raise ShardtrainError(f"{_KEY}.path': the labelled text file is required (a .tsv/.csv/.jsonl path)")
        if min(self.split) < 0 or abs(sum(self.split) - 1.0) > 1e-6:
            raise ShardtrainError(f"{_KEY}.split': split fractions must be 3 non-negative numbers summing to 1, "
                                  f"got {list(self.split)}")
        if self.split[0] == 0:
            raise ShardtrainError(f"{_KEY}.split': the training fraction must be > 0, got {list(self.split)}")
        if not self.sep or (self.quoting and len(self.sep) != 1):
            raise ShardtrainError(f"{_KEY}.sep': expected a non-empty separator (one character with quoting), "
                                  f"got {self.sep!r}")
        for key in ("text", "label"):
            col = getattr(self, key)
            if isinstance(col, bool) or (isinstance(col, int) and col < 0) or col == "":
                raise ShardtrainError(f"{_KEY}.{key}': expected a column name or a 0-based index, got {col!r}")
        if self.text is not None and self.text == self.label:
            raise ShardtrainError(f"{_KEY}.label': text and label name the same column {self.text!r}")

    def layout(self, location: storage.Location) -> TextLayout:
        """How ``location`` (a path or a URI) is read: the format from its suffix (``auto``), quoting
        and columns resolved."""
        name = storage.basename(location)
        fmt = self.format
        if fmt == "auto":
            fmt = "jsonl" if name.lower().endswith(JSONL_SUFFIXES) else "delimited"
        named = fmt == "jsonl" or self.header
        text = self.text if self.text is not None else ("text" if named else 1)
        label = self.label if self.label is not None else ("label" if named else 0)
        if fmt == "jsonl":
            for key, col in (("text", text), ("label", label)):
                if not isinstance(col, str):
                    raise ShardtrainError(f"{_KEY}.{key}': {name} is JSON Lines, whose fields are named; "
                                          f"got the index {col!r}")
        elif not self.header:
            for key, col in (("text", text), ("label", label)):
                if isinstance(col, str):
                    raise ShardtrainError(f"{_KEY}.{key}': {col!r} is a column name but {name} has no header "
                                          "(set header: true, or give a 0-based index)")
        if text == label:
            raise ShardtrainError(f"{_KEY}.label': text and label are the same column {text!r} in {name}")
        quoting = self.quoting if self.quoting is not None else self.sep == ","
        return TextLayout(fmt, self.sep, self.header, bool(quoting), text, label)


@dataclass(frozen=True)
class TextLayout:
    """How one file is read: ``format`` (delimited | jsonl), ``sep``, ``header``, ``quoting``, the columns."""

    format: str
    sep: str
    header: bool
    quoting: bool
    text: int | str
    label: int | str


@dataclass
class TextRows:
    """What :func:`read_file` returns: the file, its rows (see the module doc) and whether it has labels."""

    path: storage.Location
    columns: dict[str, np.ndarray]
    has_labels: bool = True

    @property
    def ok(self) -> np.ndarray:
        """Mask of the rows the reader kept (bool, (N,))."""
        return self.columns["reject_reason"] == ""


@dataclass(frozen=True)
class Fields:
    """How every data line of one file is cut, resolved once per file (from its header or the indexes).

    Delimited: ``ncols`` fields, ``text``/``label`` their indexes (``label`` None: no label
    column), ``maxsplit`` for :meth:`str.split`, ``bare`` for a predict file of bare lines.
    JSON Lines: ``text``/``label`` are the keys and ``ncols`` is 0.
    """

    ncols: int
    text: int | str
    label: int | str | None
    maxsplit: int = -1
    bare: bool = False


@dataclass
class Parsed:
    """The rows of a run of data lines: ``text`` and ``label`` cells ("" where unread), the rejects
    as ``(row, reason, detail)`` (detail without its ``file:line``), how many lines had the
    layout (``good``) and whether any JSON object had the label key."""

    text: list[str]
    label: list[str]
    rejects: list[tuple[int, str, str]]
    good: int = 0
    any_label: bool = False


def header_lines(layout: TextLayout) -> int:
    """Lines before the first data row: 1 for a delimited file with a header, else 0."""
    return 1 if layout.format == "delimited" and layout.header else 0


def split_lines(data: bytes) -> list[bytes]:
    """The lines of ``data`` without their newlines (the final newline does not start a line)."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def where(name: str, sample_id: int, layout: TextLayout) -> str:
    """``file:line`` of data row ``sample_id`` (0-based) of file ``name``."""
    return f"{name}:{sample_id + header_lines(layout) + 1}"


def reject_detail(name: str, sample_id: int, layout: TextLayout, detail: str) -> str:
    """A reject's detail as the reader words it: ``file:line: detail``, at most 300 characters."""
    return f"{where(name, sample_id, layout)}: {detail}"[:300]


def resolve_fields(location: storage.Location, header: bytes | None, layout: TextLayout, labels: bool = True,
                   probe: bytes | None = None) -> Fields:
    """The :class:`Fields` of a file: from its header line (``header``; delimited with a header),
    else from the layout's indexes. ``probe`` (predict, ``labels`` False: the first non-empty
    line) tells a file of bare lines, one text per line, from a labelled one."""
    if layout.format == "jsonl":
        return Fields(0, str(layout.text), str(layout.label))
    ncols, text_i, label_i = _columns(location, header, layout, labels)
    if not labels and not layout.header and label_i is not None and probe is not None:
        if len(_split_line(probe.decode("utf-8", "replace"), layout, -1)) == 1 and ncols > 1:
            return Fields(1, 0, None, -1, bare=True)
    maxsplit = ncols - 1 if (text_i == ncols - 1 and not layout.quoting) else -1
    return Fields(ncols, text_i, label_i, maxsplit)


def parse_lines(lines: list[bytes], layout: TextLayout, fields: Fields, at_file_start: bool) -> Parsed:
    """Parse data lines (no header among them) into cells and rejects; ``at_file_start``: ``lines[0]``
    is the first line of its file (a byte-order mark there is dropped).

    A delimited record never spans lines (with quoting too: a quoted newline is a
    ``bad_quoting``/``field_count`` reject), so any run of whole lines parses the same
    alone as inside its file: this is what lets a task parse one block of a file.
    """
    if layout.format == "jsonl":
        return _parse_jsonl(lines, fields, at_file_start)
    return _parse_delimited(lines, layout, fields, at_file_start)


def _line_or_reject(out: Parsed, row: int, raw: bytes, first: bool) -> str | None:
    """The text of one raw line (``first``: the file's first line), or None once it is rejected as
    ``invalid_utf8`` or ``empty_line`` (both layouts check these first)."""
    try:
        line = raw.rstrip(b"\r").decode("utf-8")
    except UnicodeDecodeError as exc:
        out.rejects.append((row, "invalid_utf8", f"not valid UTF-8 (byte {exc.start})"))
        return None
    if first:
        line = line.lstrip("\ufeff")
    if not line.strip():
        out.rejects.append((row, "empty_line", "empty line"))
        return None
    return line


def _show(value: str, limit: int = 60) -> str:
    """A cell for a reject detail: repr, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...'"


def _parse_delimited(lines: list[bytes], layout: TextLayout, fields: Fields, at_file_start: bool) -> Parsed:
    """Delimited lines -> cells and rejects (see :func:`parse_lines`)."""
    n = len(lines)
    out = Parsed([""] * n, [""] * n, [])
    ncols, text_i, label_i = fields.ncols, int(fields.text), fields.label
    for row, raw in enumerate(lines):
        line = _line_or_reject(out, row, raw, at_file_start and row == 0)
        if line is None:
            continue
        try:
            cells = [line] if fields.bare else _split_line(line, layout, fields.maxsplit)
        except csv.Error as exc:
            out.rejects.append((row, "bad_quoting", f"{exc} in {_show(line)}"))
            continue
        if len(cells) != ncols:
            out.rejects.append((row, "field_count", f"expected {ncols} fields separated by {layout.sep!r}, got "
                                                    f"{len(cells)}: {_show(line)}"))
            continue
        out.good += 1
        out.text[row] = cells[text_i]
        if label_i is not None:
            out.label[row] = cells[int(label_i)].strip()
        if not cells[text_i].strip():
            out.rejects.append((row, "empty_text", "empty text"))
    return out


def _split_line(line: str, layout: TextLayout, maxsplit: int) -> list[str]:
    """Split one line into fields (csv rules when quoting is on)."""
    if layout.quoting:
        return next(csv.reader([line], delimiter=layout.sep, strict=True))
    return line.split(layout.sep, maxsplit)


def _columns(location: storage.Location, header_line: bytes | None, layout: TextLayout,
             labels: bool) -> tuple[int, int, int | None]:
    """(number of fields, text index, label index or None) from the header or the indexes."""
    if not layout.header:
        text_i, label_i = int(layout.text), int(layout.label)
        return max(text_i, label_i) + 1, text_i, label_i
    name = storage.redact(location)
    try:
        line = (header_line or b"").rstrip(b"\r").decode("utf-8").lstrip("\ufeff")
        header = [h.strip() for h in _split_line(line, layout, -1)]
    except UnicodeDecodeError:
        raise ShardtrainError(f"{name}: line 1: header is not valid UTF-8") from None
    except csv.Error as exc:
        raise ShardtrainError(f"{name}: line 1: header: {exc}") from None
    found = []
    for key, col in (("text", layout.text), ("label", layout.label)):
        if isinstance(col, int):
            found.append(col if 0 <= col < len(header) else None)
        else:
            found.append(header.index(col) if col in header else None)
        if found[-1] is None and (key == "text" or labels):
            what = f"no column {col}" if isinstance(col, int) else f"no column {col!r}"
            raise ShardtrainError(f"{name}: header has {what} for dataset.options.{key} "
                                  f"(columns: {', '.join(header)})")
    return len(header), found[0], found[1]


def _parse_jsonl(lines: list[bytes], fields: Fields, at_file_start: bool) -> Parsed:
    """JSON Lines -> cells and rejects: one object per line, ``fields.text``/``fields.label`` its keys."""
    n = len(lines)
    out = Parsed([""] * n, [""] * n, [])
    tkey, lkey = str(fields.text), str(fields.label)
    for row, raw in enumerate(lines):
        line = _line_or_reject(out, row, raw, at_file_start and row == 0)
        if line is None:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            out.rejects.append((row, "bad_json", f"invalid JSON ({exc.msg} at column {exc.colno})"))
            continue
        if not isinstance(record, dict):
            out.rejects.append((row, "bad_json", f"expected a JSON object, got {type(record).__name__}"))
            continue
        if tkey not in record:
            out.rejects.append((row, "missing_field", f"no {tkey!r} key (keys: {', '.join(list(record)[:10])})"))
            continue
        text, label = record[tkey], record.get(lkey)
        if not isinstance(text, str):
            out.rejects.append((row, "bad_json", f"{tkey!r} is {type(text).__name__}, expected a string"))
            continue
        if isinstance(label, (list, dict)):
            out.rejects.append((row, "bad_json", f"{lkey!r} is {type(label).__name__}, expected a string or number"))
            continue
        out.good += 1
        out.any_label = out.any_label or lkey in record
        out.text[row] = text
        out.label[row] = "" if label is None else (str(int(label)) if isinstance(label, float)
                                                   and label.is_integer() else str(label).strip())
        if not text.strip():
            out.rejects.append((row, "empty_text", "empty text"))
    return out


def no_rows_error(location: storage.Location, layout: TextLayout, fields: Fields) -> ShardtrainError:
    """The file-level error when no line of a file could be read with its layout."""
    name = storage.redact(location)
    if layout.format == "jsonl":
        return ShardtrainError(f"{name}: no line is a JSON object with a string {str(fields.text)!r} "
                               "(wrong format or key?)")
    return ShardtrainError(f"{name}: no line has {fields.ncols} fields separated by {layout.sep!r} "
                           f"(wrong separator or column layout?)")


def first_line(location: storage.Location, limit: int = 1 << 20) -> bytes:
    """The first line of a file (without its newline), read from its start only (at most ``limit`` bytes)."""
    out = b""
    with storage.open_stream(location) as stream:
        while len(out) < limit:
            chunk = stream.read(1 << 16)
            if not chunk:
                break
            out += chunk
            if b"\n" in chunk:
                break
    return out.split(b"\n", 1)[0]


def read_file(location: storage.Location, layout: TextLayout, *, labels: bool = True) -> TextRows:
    """Read every data line of ``location`` (a path or a URI) in this process; ``labels`` False makes
    the label column optional (predict).

    Raises ``ShardtrainError`` (naming the file) when it is missing or empty, when a named
    column is not in the header, or when no line can be read with this layout.
    """
    local = storage.local_path(location)
    missing = not local.is_file() if local is not None else storage.file_size(location) is None
    if missing:
        raise ShardtrainError(f"{storage.redact(location)}: text data file not found")
    lines = split_lines(local.read_bytes() if local is not None else storage.read_bytes(location))
    first = header_lines(layout)
    if len(lines) <= first:
        raise ShardtrainError(f"{storage.redact(location)}: no data rows")
    probe = next((ln for ln in lines if ln.strip()), b"") if not labels else None
    fields = resolve_fields(location, lines[0] if first else None, layout, labels, probe)
    parsed = parse_lines(lines[first:], layout, fields, at_file_start=first == 0)
    if parsed.good == 0:
        raise no_rows_error(location, layout, fields)
    n, name = len(parsed.text), storage.basename(location)
    cols = {"sample_id": np.arange(n, dtype=np.int64), "line": np.arange(n, dtype=np.int64) + first + 1,
            "text": objects(parsed.text), "label": objects(parsed.label),
            "reject_reason": np.full(n, "", dtype=object), "reject_detail": np.full(n, "", dtype=object)}
    for row, reason, detail in parsed.rejects:
        cols["reject_reason"][row] = reason
        cols["reject_detail"][row] = reject_detail(name, row, layout, detail)
    has_labels = (parsed.any_label or labels) if layout.format == "jsonl" else fields.label is not None
    return TextRows(location, cols, has_labels=has_labels)


def strata_of(cells: list[str], rejected: set[int], names: dict[str, int]) -> np.ndarray:
    """Stratum per row (int64) of a run of rows, given the file's stratum ``names`` (cell -> index):
    a rejected row, or one without a label, is in stratum ``len(names)`` (as in :func:`strata`)."""
    other = len(names)
    return np.fromiter((other if (i in rejected or not c) else names[c] for i, c in enumerate(cells)),
                       dtype=np.int64, count=len(cells))


def objects(values: list[str]) -> np.ndarray:
    """A list of str as a 1-D object array (what the stage functions take as a text column)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out
def strata(rows: TextRows) -> np.ndarray:
    """Stratum per row (int64): the index of its label cell among the sorted distinct cells of kept
    rows; rows the reader rejected, or without a label, share one more stratum after those."""
    cells = rows.columns["label"]
    ok = rows.ok & (cells != "")
    names = sorted(set(cells[ok].tolist()))
    index = {c: i for i, c in enumerate(names)}
    out = np.full(len(cells), len(names), dtype=np.int64)
    for i in np.flatnonzero(ok).tolist():
        out[i] = index[cells[i]]
    return out


def stratified_split(labels: np.ndarray, fractions: tuple[float, ...], seed: int) -> np.ndarray:
    """Return an int8 split index per row (-1 where label < 0), stratified by label.

    Rows of class k (in sample order) are permuted by ``default_rng([seed, k])`` and cut at
    round-half-up of the cumulative fractions times the class size."""
    labels = np.asarray(labels, dtype=np.int64)
    out = np.full(labels.shape, -1, dtype=np.int8)
    cum = np.cumsum(np.asarray(fractions, dtype=np.float64))
    for k in np.unique(labels[labels >= 0]).tolist():
        rows = np.flatnonzero(labels == k)                                  # (n_k,)
        perm = rows[np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, k]).permutation(len(rows))]
        cuts = np.floor(cum * len(rows) + 0.5).astype(np.int64)            # (len(fractions),)
        cuts[-1] = len(rows)
        for s, (a, b) in enumerate(zip(np.concatenate([[0], cuts[:-1]]), cuts)):
            out[perm[a:b]] = s
    return out
