"""Reader for delimited text-classification files (e.g. the SMS Spam Collection).

One record per line (quoted fields may not span lines). The SMS Spam Collection is
``label<TAB>text`` with no header: ``TextReaderOptions()`` reads it as is. When the text is the
last column and quoting is off, a line is split at most (columns - 1) times, so separators
inside the text stay in the text.

`read_text` returns every data line as a row: ``sample_id`` (int64, 0-based data row = line
number minus header), ``text`` (object array of str), ``label`` (int64 index into `classes`,
-1 for rejects), ``split`` (int8 index into `SPLITS`, -1 for rejects) and ``reject_reason``
("" = kept, else e.g. "line 17: empty text"), the stage contract's reject convention. File-level
problems raise a one-line `ShardtrainError` naming the file.

The split is stratified: within each class, rows are permuted by a Generator seeded with
(seed, class index) and cut at the cumulative fractions (rounded half up), so it is a pure
function of (seed, labels).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shardtrain.core.errors import ShardtrainError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class TextReaderOptions:
    """Where and how to read a labelled text file.

    `path` is relative to the data directory unless absolute. `text_col` / `label_col` are
    0-based column indexes, or names when `header` is true. `classes` fixes the label order
    (index = class id); None takes the sorted distinct labels seen. `split` holds the
    train/val/test fractions (must sum to 1).
    """

    __pydantic_config__ = {"extra": "forbid"}  # validated from the config by pydantic; unknown keys are errors

    path: str = "sms-spam/SMSSpamCollection"
    sep: str = "\t"
    text_col: int | str = 1
    label_col: int | str = 0
    header: bool = False
    classes: tuple[str, ...] | None = ("ham", "spam")
    split: tuple[float, float, float] = (0.7, 0.1, 0.2)
    quoting: bool = False

    def __post_init__(self) -> None:
        """Refuse split fractions that are negative or do not sum to 1 before any file is read."""
        if min(self.split) < 0 or abs(sum(self.split) - 1.0) > 1e-6:
            raise ShardtrainError(f"config key 'dataset.options.split': split fractions must be 3 non-negative numbers "
                                  f"summing to 1, got {list(self.split)}")


@dataclass
class TextTable:
    """What `read_text` returns: the columns, the class names and per-split class counts."""

    path: Path
    columns: dict[str, np.ndarray]
    classes: tuple[str, ...]
    splits: tuple[str, ...] = SPLITS
    split_counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def rejected(self) -> int:
        """Number of rows with a non-empty reject_reason."""
        return int((self.columns["reject_reason"] != "").sum())


def read_text(opts: TextReaderOptions, data_dir: str | os.PathLike[str] | None = None,
              seed: int = 0) -> TextTable:
    """Read `opts.path`, validate every line and assign the stratified split for `seed`."""
    path = Path(opts.path)
    if not path.is_absolute() and data_dir is not None:
        path = Path(data_dir) / path
    if not path.is_file():
        raise ShardtrainError(f"{path}: text data file not found")
    _check_fractions(opts.split, path)
    lines = path.read_bytes().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the final newline does not start a row
    first = 1 if opts.header else 0
    if len(lines) <= first:
        raise ShardtrainError(f"{path}: no data rows")
    ncols, text_i, label_i = _layout(lines, opts, path)
    maxsplit = ncols - 1 if (text_i == ncols - 1 and not opts.quoting) else -1

    n = len(lines) - first
    texts = np.full(n, "", dtype=object)
    raw_labels = np.full(n, "", dtype=object)
    reasons = np.full(n, "", dtype=object)
    good_count = 0
    for row, raw in enumerate(lines[first:]):
        lineno = row + first + 1
        try:
            line = raw.rstrip(b"\r").decode("utf-8")
        except UnicodeDecodeError as exc:
            reasons[row] = f"line {lineno}: not valid UTF-8 (byte {exc.start})"
            continue
        if row == 0 and first == 0:
            line = line.lstrip("\ufeff")
        if not line.strip():
            reasons[row] = f"line {lineno}: empty line"
            continue
        fields = _split(line, opts, maxsplit)
        if len(fields) != ncols:
            reasons[row] = f"line {lineno}: expected {ncols} fields, got {len(fields)}"
            continue
        good_count += 1
        texts[row], raw_labels[row] = fields[text_i], fields[label_i].strip()
        if not fields[text_i].strip():
            reasons[row] = f"line {lineno}: empty text"
        elif not raw_labels[row]:
            reasons[row] = f"line {lineno}: missing label"
    if good_count == 0:
        raise ShardtrainError(f"{path}: no line has {ncols} fields separated by {opts.sep!r} "
                              f"(wrong separator or column layout?)")

    classes = tuple(opts.classes) if opts.classes is not None else \
        tuple(sorted(set(raw_labels[reasons == ""].tolist())))
    index = {c: i for i, c in enumerate(classes)}
    labels = np.full(n, -1, dtype=np.int64)
    for row in np.flatnonzero(reasons == "").tolist():
        k = index.get(raw_labels[row])
        if k is None:
            reasons[row] = (f"line {row + first + 1}: unknown label {raw_labels[row]!r} "
                            f"(expected one of {', '.join(classes)})")
        else:
            labels[row] = k
    split = stratified_split(labels, opts.split, seed)
    columns = {"sample_id": np.arange(n, dtype=np.int64), "text": texts, "label": labels,
               "split": split, "reject_reason": reasons}
    counts = {name: {c: int(((split == s) & (labels == k)).sum()) for k, c in enumerate(classes)}
              for s, name in enumerate(SPLITS)}
    return TextTable(path=path, columns=columns, classes=classes, split_counts=counts)


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


def _check_fractions(fractions: tuple[float, ...], path: Path) -> None:
    """Raise unless `fractions` has one non-negative value per split, summing to 1."""
    if len(fractions) != len(SPLITS) or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ShardtrainError(f"{path}: split fractions {tuple(fractions)} must be "
                              f"{len(SPLITS)} non-negative numbers summing to 1 (train, val, test)")


def _split(line: str, opts: TextReaderOptions, maxsplit: int) -> list[str]:
    """Split one line into fields (csv rules when quoting is on)."""
    if opts.quoting:
        return next(csv.reader([line], delimiter=opts.sep))
    return line.split(opts.sep, maxsplit)


def _layout(lines: list[bytes], opts: TextReaderOptions, path: Path) -> tuple[int, int, int]:
    """Return (number of fields, text column index, label column index) from header or options."""
    if not opts.header:
        if isinstance(opts.text_col, str) or isinstance(opts.label_col, str):
            raise ShardtrainError(f"{path}: column names ({opts.label_col!r}, {opts.text_col!r}) "
                                  f"need header: true; give 0-based column indexes instead")
        if opts.text_col == opts.label_col or min(opts.text_col, opts.label_col) < 0:
            raise ShardtrainError(f"{path}: text_col and label_col must be distinct indexes >= 0")
        return max(opts.text_col, opts.label_col) + 1, opts.text_col, opts.label_col
    try:
        header = [h.strip() for h in _split(lines[0].rstrip(b"\r").decode("utf-8").lstrip("\ufeff"),
                                            opts, -1)]
    except UnicodeDecodeError:
        raise ShardtrainError(f"{path}: line 1: header is not valid UTF-8") from None
    idx = []
    for col in (opts.text_col, opts.label_col):
        if isinstance(col, int):
            if not 0 <= col < len(header):
                raise ShardtrainError(f"{path}: header has {len(header)} columns, no column {col}")
            idx.append(col)
        elif col not in header:
            raise ShardtrainError(f"{path}: header has no column {col!r} (columns: {', '.join(header)})")
        else:
            idx.append(header.index(col))
    if idx[0] == idx[1]:
        raise ShardtrainError(f"{path}: text_col and label_col name the same column")
    return len(header), idx[0], idx[1]
