"""Reader for labelled text files: delimited (TSV, CSV) or JSON Lines, one record per line.

``TextOptions`` are the ``text`` dataset kind's options. A file is read in two steps:

* :meth:`TextOptions.layout` resolves, for one file, how it is read (:class:`TextLayout`):
  the format (``auto``: JSON Lines for a ``.jsonl``/``.ndjson`` suffix, else delimited),
  the separator, the header, quoting (``None``: on for ``,``, off otherwise, so a TSV's
  quotes stay text) and the ``text``/``label`` columns. Unset columns are ``text``/``label``
  by name when the file has names (a header, JSON Lines), else label 0 and text 1 (the
  ``label<TAB>text`` layout of the SMS Spam Collection).
* :func:`read_file` returns every data line as a row: ``sample_id`` (int64, 0-based data
  row), ``line`` (1-based line number), ``text`` and ``label`` (the raw label cell, a
  stripped str, "" when absent), and ``reject_reason``/``reject_detail`` ("" = kept):
  ``invalid_utf8``, ``empty_line``, ``field_count``, ``bad_quoting``, ``bad_json``,
  ``missing_field`` and ``empty_text``, each with ``file:line`` and the value in the detail.
  Labels are not encoded here: the vocabulary comes from the training split
  (:class:`~shardtrain.core.labels.LabelVocab`). File-level problems raise one
  ``ShardtrainError`` line naming the file.

A delimited record may not span lines (a quoted field holds no newline). Without quoting,
when the text is the last column a line is split at most (columns - 1) times, so the
separator inside the text stays in the text.

:func:`stratified_split` assigns train/val/test: within each stratum (a label cell; rows
rejected by the reader form one more stratum, so their reject is counted on the split they
fall in) rows are permuted by a Generator seeded with (seed, stratum index) and cut at the
cumulative fractions (rounded half up): a pure function of (seed, label cells).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from shardtrain.core.errors import ShardtrainError

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

    def layout(self, path: Path) -> TextLayout:
        """How ``path`` is read: the format from its suffix (``auto``), quoting and columns resolved."""
        fmt = self.format
        if fmt == "auto":
            fmt = "jsonl" if path.suffix.lower() in JSONL_SUFFIXES else "delimited"
        named = fmt == "jsonl" or self.header
        text = self.text if self.text is not None else ("text" if named else 1)
        label = self.label if self.label is not None else ("label" if named else 0)
        if fmt == "jsonl":
            for key, col in (("text", text), ("label", label)):
                if not isinstance(col, str):
                    raise ShardtrainError(f"{_KEY}.{key}': {path.name} is JSON Lines, whose fields are named; "
                                          f"got the index {col!r}")
        elif not self.header:
            for key, col in (("text", text), ("label", label)):
                if isinstance(col, str):
                    raise ShardtrainError(f"{_KEY}.{key}': {col!r} is a column name but {path.name} has no header "
                                          "(set header: true, or give a 0-based index)")
        if text == label:
            raise ShardtrainError(f"{_KEY}.label': text and label are the same column {text!r} in {path.name}")
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

    path: Path
    columns: dict[str, np.ndarray]
    has_labels: bool = True

    @property
    def ok(self) -> np.ndarray:
        """Mask of the rows the reader kept (bool, (N,))."""
        return self.columns["reject_reason"] == ""


def read_file(path: Path, layout: TextLayout, *, labels: bool = True) -> TextRows:
    """Read every data line of ``path``; ``labels`` False makes the label column optional (predict).

    Raises ``ShardtrainError`` (naming the file) when it is missing or empty, when a named
    column is not in the header, or when no line can be read with this layout.
    """
    if not path.is_file():
        raise ShardtrainError(f"{path}: text data file not found")
    lines = path.read_bytes().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the final newline does not start a row
    first = 1 if layout.format == "delimited" and layout.header else 0
    if len(lines) <= first:
        raise ShardtrainError(f"{path}: no data rows")
    if layout.format == "jsonl":
        return _read_jsonl(path, lines, layout, labels)
    return _read_delimited(path, lines, layout, labels, first)


def _empty_columns(n: int, first: int) -> dict[str, np.ndarray]:
    """The row columns for ``n`` data lines starting after ``first`` header lines (all kept, empty)."""
    return {"sample_id": np.arange(n, dtype=np.int64), "line": np.arange(n, dtype=np.int64) + first + 1,
            "text": np.full(n, "", dtype=object), "label": np.full(n, "", dtype=object),
            "reject_reason": np.full(n, "", dtype=object), "reject_detail": np.full(n, "", dtype=object)}


def _decode(raw: bytes, row: int) -> str:
    """One line as text (CR and, on the first line, a BOM dropped); UnicodeDecodeError when not UTF-8."""
    line = raw.rstrip(b"\r").decode("utf-8")
    return line.lstrip("\ufeff") if row == 0 else line


def _reject(cols: dict[str, np.ndarray], row: int, reason: str, detail: str, where: str) -> None:
    """Mark ``row`` rejected, its detail prefixed with ``file:line``."""
    cols["reject_reason"][row] = reason
    cols["reject_detail"][row] = f"{where}: {detail}"[:300]


def _line_or_reject(cols: dict[str, np.ndarray], row: int, raw: bytes, index: int, where: str) -> str | None:
    """The text of one raw line (``index`` = its 0-based line in the file), or None once it is
    rejected as ``invalid_utf8`` or ``empty_line`` (both layouts check these first)."""
    try:
        line = _decode(raw, index)
    except UnicodeDecodeError as exc:
        _reject(cols, row, "invalid_utf8", f"not valid UTF-8 (byte {exc.start})", where)
        return None
    if not line.strip():
        _reject(cols, row, "empty_line", "empty line", where)
        return None
    return line


def _show(value: str, limit: int = 60) -> str:
    """A cell for a reject detail: repr, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...'"


def _read_delimited(path: Path, lines: list[bytes], layout: TextLayout, labels: bool, first: int) -> TextRows:
    """Delimited lines -> rows (see :func:`read_file`)."""
    ncols, text_i, label_i = _columns(path, lines, layout, labels)
    bare = False  # predict: a file of bare lines (one text per line, no label column)
    if not labels and not layout.header and label_i is not None:
        probe = next((ln for ln in lines if ln.strip()), b"")
        if len(_split_line(probe.decode("utf-8", "replace"), layout, -1)) == 1 and ncols > 1:
            bare, ncols, text_i, label_i = True, 1, 0, None
    maxsplit = ncols - 1 if (text_i == ncols - 1 and not layout.quoting) else -1
    n = len(lines) - first
    cols = _empty_columns(n, first)
    good = 0
    for row, raw in enumerate(lines[first:]):
        where = f"{path.name}:{row + first + 1}"
        line = _line_or_reject(cols, row, raw, row + first, where)
        if line is None:
            continue
        try:
            fields = [line] if bare else _split_line(line, layout, maxsplit)
        except csv.Error as exc:
            _reject(cols, row, "bad_quoting", f"{exc} in {_show(line)}", where)
            continue
        if len(fields) != ncols:
            _reject(cols, row, "field_count", f"expected {ncols} fields separated by {layout.sep!r}, got "
                                              f"{len(fields)}: {_show(line)}", where)
            continue
        good += 1
        cols["text"][row] = fields[text_i]
        if label_i is not None:
            cols["label"][row] = fields[label_i].strip()
        if not fields[text_i].strip():
            _reject(cols, row, "empty_text", "empty text", where)
    if good == 0:
        raise ShardtrainError(f"{path}: no line has {ncols} fields separated by {layout.sep!r} "
                              f"(wrong separator or column layout?)")
    return TextRows(path, cols, has_labels=label_i is not None)


def _split_line(line: str, layout: TextLayout, maxsplit: int) -> list[str]:
    """Split one line into fields (csv rules when quoting is on)."""
    if layout.quoting:
        return next(csv.reader([line], delimiter=layout.sep, strict=True))
    return line.split(layout.sep, maxsplit)


def _columns(path: Path, lines: list[bytes], layout: TextLayout, labels: bool) -> tuple[int, int, int | None]:
    """(number of fields, text index, label index or None) from the header or the indexes."""
    if not layout.header:
        text_i, label_i = int(layout.text), int(layout.label)
        return max(text_i, label_i) + 1, text_i, label_i
    try:
        header = [h.strip() for h in _split_line(_decode(lines[0], 0), layout, -1)]
    except UnicodeDecodeError:
        raise ShardtrainError(f"{path}: line 1: header is not valid UTF-8") from None
    except csv.Error as exc:
        raise ShardtrainError(f"{path}: line 1: header: {exc}") from None
    found = []
    for key, col in (("text", layout.text), ("label", layout.label)):
        if isinstance(col, int):
            found.append(col if 0 <= col < len(header) else None)
        else:
            found.append(header.index(col) if col in header else None)
        if found[-1] is None and (key == "text" or labels):
            what = f"no column {col}" if isinstance(col, int) else f"no column {col!r}"
            raise ShardtrainError(f"{path}: header has {what} for dataset.options.{key} "
                                  f"(columns: {', '.join(header)})")
    return len(header), found[0], found[1]


def _read_jsonl(path: Path, lines: list[bytes], layout: TextLayout, labels: bool) -> TextRows:
    """JSON Lines -> rows: one object per line, ``layout.text``/``layout.label`` its keys."""
    cols = _empty_columns(len(lines), 0)
    good, any_label = 0, False
    tkey, lkey = str(layout.text), str(layout.label)
    for row, raw in enumerate(lines):
        where = f"{path.name}:{row + 1}"
        line = _line_or_reject(cols, row, raw, row, where)
        if line is None:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            _reject(cols, row, "bad_json", f"invalid JSON ({exc.msg} at column {exc.colno})", where)
            continue
        if not isinstance(record, dict):
            _reject(cols, row, "bad_json", f"expected a JSON object, got {type(record).__name__}", where)
            continue
        if tkey not in record:
            _reject(cols, row, "missing_field", f"no {tkey!r} key (keys: {', '.join(list(record)[:10])})", where)
            continue
        text, label = record[tkey], record.get(lkey)
        if not isinstance(text, str):
            _reject(cols, row, "bad_json", f"{tkey!r} is {type(text).__name__}, expected a string", where)
            continue
        if isinstance(label, (list, dict)):
            _reject(cols, row, "bad_json", f"{lkey!r} is {type(label).__name__}, expected a string or number", where)
            continue
        good += 1
        any_label = any_label or lkey in record
        cols["text"][row] = text
        cols["label"][row] = "" if label is None else (str(int(label)) if isinstance(label, float)
                                                       and label.is_integer() else str(label).strip())
        if not text.strip():
            _reject(cols, row, "empty_text", "empty text", where)
    if good == 0:
        raise ShardtrainError(f"{path}: no line is a JSON object with a string {tkey!r} (wrong format or key?)")
    return TextRows(path, cols, has_labels=any_label or labels)


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
