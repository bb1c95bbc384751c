"""Read an image folder described by an annotations CSV (PyTorch's ``CustomImageDataset`` layout).

The CSV lists one image per row: a path relative to the image root and a label
(``tshirt1.jpg,0``). It may have a header; columns are then picked by name, otherwise
by index (default: the first two). Reading happens in two steps:

* :func:`read_annotations` parses the CSV once (file-level problems raise
  ShardtrainError; a row whose path escapes the image root becomes a reject and is
  never opened) and maps string labels to class indices over a sorted class list.
* :func:`decode_images` is a stage function that decodes a batch of paths with PIL
  into ``x`` uint8 (N, H, W) (grayscale) or (N, H, W, 3) (RGB); missing or undecodable
  files become rejects.

Image size: every shard row must have the same shape. With ``size`` configured every
image is resized to it (PIL bilinear, antialiased when shrinking); with ``size: null``
the size of the first listed image is used (:func:`resolve_options`) and images of
another size are rejected as ``size_mismatch`` rather than silently distorted.
"""

from __future__ import annotations

import csv
import posixpath
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from shardtrain.core.errors import ShardtrainError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
COLOR_MODES = {"grayscale": "L", "rgb": "RGB"}
_INT_RE = re.compile(r"^[+-]?\d+$")
_DRIVE_RE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class ImageFolderOptions:
    """``dataset.options`` of the ``image-folder`` dataset.

    ``csv`` is the annotations file and ``root`` the image root (default: the CSV's
    directory). ``path_col``/``label_col`` are header names (a header is then
    required) or 0-based column indices; ``header`` None means auto-detect (the first
    row is a header when its path cell has no image suffix). ``color`` is
    ``grayscale`` or ``rgb``; ``size`` is ``[H, W]`` or None (see the module doc);
    ``resize`` False rejects images not of ``size`` instead of resizing them.
    """

    __pydantic_config__ = {"extra": "forbid"}  # validated from the config by pydantic; unknown keys are errors

    csv: str = ""
    root: str | None = None
    path_col: str | int = 0
    label_col: str | int = 1
    header: bool | None = None
    delimiter: str = ","
    color: Literal["grayscale", "rgb"] = "grayscale"
    size: tuple[int, int] | None = None
    resize: bool = True

    def __post_init__(self) -> None:
        """Check what the types cannot say; a bad value names its ``dataset.options`` key."""
        key = "config key 'dataset.options"
        if not self.csv:
            raise ShardtrainError(f"{key}.csv': the annotations CSV path is required")
        for col in ("path_col", "label_col"):
            v = getattr(self, col)
            if isinstance(v, bool) or (isinstance(v, int) and v < 0):
                raise ShardtrainError(f"{key}.{col}': expected a column name or index >= 0, got {v!r}")
        if self.color not in COLOR_MODES:
            raise ShardtrainError(f"{key}.color': {self.color!r} is not one of {list(COLOR_MODES)}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise ShardtrainError(f"{key}.size': expected [H, W] (positive ints) or null, got {list(self.size)!r}")

    @property
    def pil_mode(self) -> str:
        """The PIL mode images are converted to (``L`` or ``RGB``)."""
        return COLOR_MODES[self.color]


@dataclass(frozen=True)
class Annotations:
    """The parsed annotations CSV.

    ``columns`` is a batch: ``sample_id`` int64 (the data row number, stable),
    ``path`` object (str, image root joined), ``label`` int64 (-1 = empty cell),
    ``reject_reason``/``reject_detail`` object ("" = kept). ``classes`` are the class
    names in index order (sorted strings, or ``"0".."max"`` for integer labels).
    """

    csv_path: Path
    img_root: Path
    columns: dict[str, np.ndarray]
    classes: list[str] = field(default_factory=list)
    integer_labels: bool = False


def _column_index(header: list[str] | None, col: str | int, csv_path: Path, role: str) -> int | None:
    """Resolve a column name/index against the header; None when a named column is missing."""
    if isinstance(col, int):
        return col
    if header is None:
        raise ShardtrainError(f"{csv_path}: {role} '{col}' is a column name but the CSV has no header")
    names = [h.strip() for h in header]
    return names.index(col) if col in names else None


def _escape_reason(rel: str) -> str:
    """Why a relative path must not be opened ('' when it stays inside the image root)."""
    if not rel:
        return "empty_path"
    if "\x00" in rel:
        return "bad_path"
    rel = rel.replace("\\", "/")
    if rel.startswith("/") or _DRIVE_RE.match(rel):
        return "path_escapes_root"
    norm = posixpath.normpath(rel)
    if norm == ".." or norm.startswith("../"):
        return "path_escapes_root"
    return ""


def _read_rows(csv_path: Path, delimiter: str) -> tuple[list[list[str]], list[int]]:
    """Non-blank CSV rows and their 1-based line numbers, failing with the file name when unreadable."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:  # -sig: spreadsheets write a BOM
            reader = csv.reader(fh, delimiter=delimiter)
            pairs = [(row, reader.line_num) for row in reader if row and any(c.strip() for c in row)]
            return [r for r, _ in pairs], [n for _, n in pairs]
    except FileNotFoundError:
        raise ShardtrainError(f"{csv_path}: annotations CSV not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ShardtrainError(f"{csv_path}: cannot read annotations CSV ({exc})") from None


def read_annotations(csv_path: str | Path, img_root: str | Path | None = None, path_col: str | int = 0,
                     label_col: str | int = 1, header: bool | None = None, delimiter: str = ",") -> Annotations:
    """Parse an annotations CSV into a batch of (sample_id, path, label) plus per-row rejects.

    File-level problems (missing CSV, no rows, a needed column absent) raise
    ShardtrainError naming the file and column. Rows with too few fields, a path that
    is absolute or climbs out of ``img_root`` with ``..``, or a negative integer label
    are rejected with a reason; nothing is opened here.
    """
    csv_path = Path(csv_path)
    img_root = Path(img_root) if img_root is not None else csv_path.parent
    rows, line_nos = _read_rows(csv_path, delimiter)
    if header is None:
        named = isinstance(path_col, str) or isinstance(label_col, str)
        pcell = rows[0][path_col].strip() if rows and isinstance(path_col, int) and path_col < len(rows[0]) else ""
        header = named or (bool(rows) and not pcell.lower().endswith(IMAGE_SUFFIXES))
    skip = 1 if header and rows else 0
    head, body, lines = (rows[0] if skip else None), rows[skip:], line_nos[skip:]
    pi = _column_index(head, path_col, csv_path, "path_col")
    li = _column_index(head, label_col, csv_path, "label_col")
    missing = [f"'{c}'" for c, i in ((path_col, pi), (label_col, li)) if i is None]
    if missing:
        have = ", ".join(h.strip() for h in head or [])
        raise ShardtrainError(f"{csv_path}: missing column(s) {', '.join(missing)} (header has: {have})")
    if head is not None and max(pi, li) >= len(head):
        raise ShardtrainError(f"{csv_path}: column index {max(pi, li)} out of range (header has {len(head)} columns)")
    if not body:
        raise ShardtrainError(f"{csv_path}: no data rows")
    n = len(body)
    paths = np.empty(n, dtype=object)
    reasons = np.full(n, "", dtype=object)
    details = np.full(n, "", dtype=object)
    raw_labels = [""] * n
    for i, row in enumerate(body):
        line = lines[i]
        if max(pi, li) >= len(row):
            reasons[i], details[i] = "malformed_row", f"{csv_path}:{line}: {len(row)} field(s)"
            paths[i] = ""
            continue
        rel, raw_labels[i] = row[pi].strip(), row[li].strip()
        reason = _escape_reason(rel)
        paths[i] = "" if reason else str(img_root / posixpath.normpath(rel.replace("\\", "/")))
        if reason:
            reasons[i], details[i] = reason, f"{csv_path}:{line}: {rel!r}"
    labels, classes, integer = _map_labels(raw_labels, reasons)
    bad = (labels < -1) & (reasons == "")
    reasons[bad] = "bad_label"
    details[bad] = [f"{csv_path}:{lines[i]}: label {raw_labels[i]!r}" for i in np.flatnonzero(bad)]
    labels[labels < -1] = -1
    columns = {"sample_id": np.arange(n, dtype=np.int64), "path": paths, "label": labels,
               "reject_reason": reasons, "reject_detail": details}
    return Annotations(csv_path, img_root, columns, classes, integer)


def _map_labels(raw: list[str], reasons: np.ndarray) -> tuple[np.ndarray, list[str], bool]:
    """Map label cells to int64 (-1 for empty): integers kept, strings indexed by sorted class name.

    Negative integers come back as values < -1 so the caller can reject them.
    """
    use = [bool(r) and not why for r, why in zip(raw, reasons)]
    kept = [r for r, u in zip(raw, use) if u]
    if all(_INT_RE.match(r) for r in kept):
        # A literal negative label (even "-1") must not pass for "missing": map it below -1.
        values = [int(r) if u else -1 for r, u in zip(raw, use)]
        labels = np.array([min(v, -2) if u and v < 0 else v for v, u in zip(values, use)], dtype=np.int64)
        top = int(labels.max(initial=-1))
        return labels, [str(c) for c in range(top + 1)], True
    classes = sorted(set(kept))
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index.get(r, -1) for r in raw], dtype=np.int64), classes, False


def probe_image_size(annotations: Annotations) -> tuple[int, int]:
    """(H, W) of the first kept image, read from its header only; ShardtrainError if none opens."""
    from PIL import Image, UnidentifiedImageError

    cols = annotations.columns
    for path, why in zip(cols["path"], cols["reject_reason"]):
        if why:
            continue
        try:
            with Image.open(path) as im:
                return im.height, im.width
        except (OSError, UnidentifiedImageError, ValueError):
            continue
    raise ShardtrainError(f"{annotations.csv_path}: no listed image could be opened to learn the image size")


def resolve_options(options: ImageFolderOptions, annotations: Annotations) -> ImageFolderOptions:
    """Fill ``size`` from the first image when it is not configured (call once, before the stage).

    A probed size is a requirement, not a target: other sizes are then rejected (``resize`` False).
    """
    if options.size is not None:
        return options
    return replace(options, size=probe_image_size(annotations), resize=False)


def decode_images(batch: dict[str, Any], cfg: ImageFolderOptions) -> dict[str, Any]:
    """Stage: decode ``batch["path"]`` with PIL into ``x`` uint8 (N, H, W) or (N, H, W, 3).

    ``cfg`` is an ImageFolderOptions whose ``size`` is resolved (see
    :func:`resolve_options`). Rows already rejected are not opened; missing files
    (``missing_file``), files PIL cannot decode (``undecodable``) and, when ``resize`` is
    off, images not of ``size`` (``size_mismatch``) become
    rejects with a zero image. ``path`` is dropped; other columns pass through.
    """
    from PIL import Image, UnidentifiedImageError

    opts = cfg
    if opts.size is None:
        raise ShardtrainError("dataset.options.size: unresolved; call resolve_options() before decode_images")
    h, w = opts.size
    mode = opts.pil_mode
    col = batch["path"]
    paths = col.to_pylist() if hasattr(col, "to_pylist") else [str(p) for p in col]
    n = len(paths)
    x = np.zeros((n, h, w, 3) if mode == "RGB" else (n, h, w), dtype=np.uint8)
    reasons = np.array(batch.get("reject_reason", [""] * n), dtype=object)
    details = np.array(batch.get("reject_detail", [""] * n), dtype=object)
    for i, path in enumerate(paths):
        if reasons[i]:
            continue
        try:
            with Image.open(path) as im:
                im = im.convert(mode)  # forces the full decode, so truncated files fail here
            if im.size != (w, h):
                if not opts.resize:
                    reasons[i], details[i] = "size_mismatch", f"{path}: {im.height}x{im.width}, expected {h}x{w}"
                    continue
                im = im.resize((w, h), Image.Resampling.BILINEAR)
            x[i] = np.asarray(im)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            reasons[i], details[i] = "missing_file", str(path)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            reasons[i], details[i] = "undecodable", f"{path}: {msg}"
    out = {k: v for k, v in batch.items() if k not in ("path", "reject_reason", "reject_detail")}
    out.update(x=x, reject_reason=reasons, reject_detail=details)
    return out
