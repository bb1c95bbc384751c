"""Read an image folder: an annotations CSV (path, label) or one subfolder per class (torchvision's ImageFolder).

Two layouts, chosen per split by ``dataset.options``:

* **CSV** (PyTorch's ``CustomImageDataset``): one image per row, a path relative to the
  image root and a label (``tshirt1.jpg,0``). It may have a header; columns are then
  picked by name, otherwise by index (default: the first two). ``sample_id`` is the
  data row number. :func:`read_annotations`.
* **Class per folder** (torchvision's ``ImageFolder``): ``root/<class>/**/<image>``; the
  class is the first folder below the root, images are the files with an
  :data:`IMAGE_SUFFIXES` suffix found recursively below it, listed in sorted path order,
  and ``sample_id`` is the position in that list. Hidden files and folders (``.name``)
  and non-image files are ignored (READMEs, ``.DS_Store``, ``Thumbs.db``: counted in
  ``ignored``); an image directly in the root has no class and is an ``empty_label``
  reject. :func:`read_class_folders`.

Nothing is opened while listing. A path that leaves the root, with ``..``, an absolute
path, or a symlink (file or folder) whose target resolves outside the root, is a
``path_escapes_root`` reject and is never opened. Label cells stay strings here; the
dataset maps them through one :class:`~shardtrain.core.labels.LabelVocab`
(:func:`encode_labels`).

:func:`decode_images` is the stage function: PIL decode into ``x`` uint8 (N, H, W)
(grayscale) or (N, H, W, 3) (RGB), converted by ``color``; missing files
(``missing_file``) and files PIL cannot fully decode (``undecodable``: truncated, not an
image) become rejects. Image size: every shard row has one shape. With ``size`` set
every image is resized to it; with ``size: null`` the most common size among
:data:`PROBE_IMAGES` training images (spread evenly over the listing) is used (:func:`resolve_decode`) and other
sizes are resized to it (``resize: false`` rejects them as ``size_mismatch`` instead).

Every location may be a URI (``s3://bucket/images``): a CSV is read through
``shardtrain.shards.storage``, a class-per-folder root is listed in one recursive listing
(object stores have no symlinks, so only the lexical ``..``/absolute-path checks apply),
image paths stay URI strings, and each shard task reads its own images from the store.
Messages and reject details name URIs redacted.
"""

from __future__ import annotations

import csv
import os
import posixpath
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from shardtrain.core.errors import ShardtrainError
from shardtrain.core.labels import LabelVocab, cells
from shardtrain.shards import storage
from shardtrain.shards.storage import Location

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
COLOR_MODES = {"grayscale": "L", "rgb": "RGB"}
PROBE_IMAGES = 256  # image headers read to pick the most common size when ``size`` is null
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
PATH_ESCAPES_ROOT = "path_escapes_root"


@dataclass(frozen=True)
class ImageFolderOptions:
    """``dataset.options`` of the ``image-folder`` dataset.

    ``csv`` is the training annotations file (images under ``root``, default: the CSV's
    directory); without ``csv``, ``root`` is read as one subfolder per class.
    ``test_csv`` / ``test_root`` give a test split the same way (a test CSV's images
    are under ``test_root``, else ``root``, else its own directory). ``classes`` fixes the
    class list and its index order (default: the sorted training labels). Relative paths
    resolve against ``--data-dir`` when it is set. ``path_col``/``label_col`` are header
    names or 0-based indices; ``header`` None auto-detects a header. ``color`` is
    ``grayscale`` or ``rgb``; ``size`` is ``[H, W]`` or None (see the module doc).
    """

    __pydantic_config__ = {"extra": "forbid"}  # validated from the config by pydantic; unknown keys are errors

    csv: str | None = None
    root: str | None = None
    test_csv: str | None = None
    test_root: str | None = None
    classes: tuple[str | int, ...] | None = None
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
        if not self.csv and not self.root:
            raise ShardtrainError(f"{key}.csv': give an annotations CSV (csv), or a folder with one subfolder per "
                                  "class (root)")
        for col in ("path_col", "label_col"):
            v = getattr(self, col)
            if isinstance(v, bool) or (isinstance(v, int) and v < 0):
                raise ShardtrainError(f"{key}.{col}': expected a column name or index >= 0, got {v!r}")
        if self.color not in COLOR_MODES:
            raise ShardtrainError(f"{key}.color': {self.color!r} is not one of {list(COLOR_MODES)}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise ShardtrainError(f"{key}.size': expected [H, W] (positive ints) or null, got {list(self.size)!r}")
        if self.classes is not None:
            LabelVocab.fit([], self.classes)  # distinct, non-empty: fails naming dataset.options.classes

    @property
    def pil_mode(self) -> str:
        """The PIL mode images are converted to (``L`` or ``RGB``)."""
        return COLOR_MODES[self.color]


@dataclass(frozen=True)
class DecodeOptions:
    """How :func:`decode_images` turns files into ``x``: ``color``, a resolved ``size`` (H, W), ``resize``.

    ``size_from`` says where the size came from (``option``, or ``train`` when probed).
    Stored in the training index under ``transform`` so predict decodes the same way.
    """

    color: str = "grayscale"
    size: tuple[int, int] | None = None
    resize: bool = True
    size_from: str = "option"

    @property
    def pil_mode(self) -> str:
        """The PIL mode images are converted to (``L`` or ``RGB``)."""
        return COLOR_MODES[self.color]

    @property
    def shape(self) -> tuple[int, ...]:
        """The ``x`` shape of one decoded image: (H, W) or (H, W, 3)."""
        assert self.size is not None  # internal: resolve_decode() runs before any job is built
        return tuple(self.size) + ((3,) if self.color == "rgb" else ())

    def describe(self) -> dict[str, Any]:
        """The index's ``transform`` entry."""
        return {"decode": "image", "color": self.color, "size": list(self.size or ()), "resize": self.resize,
                "size_from": self.size_from}

    @classmethod
    def from_transform(cls, desc: dict[str, Any]) -> DecodeOptions:
        """The decode options a training index recorded under ``transform``."""
        return cls(str(desc["color"]), tuple(int(s) for s in desc["size"]), bool(desc["resize"]),  # type: ignore
                   str(desc.get("size_from", "option")))


@dataclass(frozen=True)
class Annotations:
    """One split's listing: a batch plus each row's raw label cell and where it came from.

    ``columns``: ``sample_id`` int64, ``path`` object (absolute-or-cwd path, '' when
    rejected), ``reject_reason``/``reject_detail`` object ("" = kept). ``cells`` are the
    label cells as strings ('' = none); ``origin`` names each row for reject details
    (``file.csv:12`` or ``root/cat/a.png``); ``has_labels`` is False for an unlabelled
    predict input; ``ignored`` counts non-image files a folder walk skipped. ``stats`` is
    each row's ``(size, mtime_ns)`` from a remote listing (None locally: stat the files).
    """

    source: Location
    img_root: Location
    columns: dict[str, np.ndarray]
    cells: np.ndarray
    origin: list[str]
    has_labels: bool = True
    ignored: int = 0
    layout: str = "csv"
    stats: list[tuple[int, int]] | None = None


def _remote(location: Location) -> bool:
    """Whether a location is on an object store (a URI other than ``file://``)."""
    return storage.is_uri(location) and not storage.is_local(location)


def _as_location(value: str | Path) -> Location:
    """A URI stays a string (``file://`` becomes its local ``Path``), anything else becomes a ``Path``."""
    if storage.is_uri(value):
        local = storage.local_path(value)
        return value if local is None else local
    return Path(value)


def _parent(location: Location) -> Location:
    """The folder holding a file, for a path or a URI."""
    if not _remote(location):
        return Path(location).parent
    text = str(location).split("?", 1)[0].rstrip("/")
    query = str(location)[len(text):] if "?" in str(location) else ""
    return text.rsplit("/", 1)[0] + query


def read_image_bytes(path: str) -> bytes:
    """An image file's stored bytes from a local path or a URI (``FileNotFoundError`` when absent)."""
    if not _remote(path):
        return Path(path).read_bytes()
    with storage.open_input(path) as fh:  # not a sequential stream: that gunzips by suffix
        return fh.read()


def _column_index(header: list[str] | None, col: str | int, csv_path: Location, role: str) -> int | None:
    """Resolve a column name/index against the header; None when a named column is missing."""
    if isinstance(col, int):
        return col
    if header is None:
        raise ShardtrainError(f"{storage.redact(csv_path)}: {role} '{col}' is a column name but the CSV has no header")
    names = [h.strip() for h in header]
    return names.index(col) if col in names else None


def _within(real: str, root_real: str) -> bool:
    """True when the resolved path ``real`` is ``root_real`` or below it."""
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def _escape_reason(rel: str) -> str:
    """Why a relative path must not be opened by its name alone ('' when it stays inside the root)."""
    if not rel:
        return "empty_path"
    if "\x00" in rel:
        return "bad_path"
    rel = rel.replace("\\", "/")
    if rel.startswith("/") or _DRIVE_RE.match(rel):
        return PATH_ESCAPES_ROOT
    norm = posixpath.normpath(rel)
    if norm == ".." or norm.startswith("../"):
        return PATH_ESCAPES_ROOT
    return ""


def _read_rows(csv_path: Location, delimiter: str) -> tuple[list[list[str]], list[int]]:
    """Non-blank CSV rows and their 1-based line numbers, failing with the file name when unreadable."""
    import io

    name = storage.redact(csv_path)
    try:
        if _remote(csv_path):  # the driver lists the rows (O(files)); the images stay on the store
            fh = io.StringIO(read_image_bytes(str(csv_path)).decode("utf-8-sig"), newline="")
        else:
            fh = open(csv_path, newline="", encoding="utf-8-sig")  # -sig: spreadsheets write a BOM
        with fh:
            reader = csv.reader(fh, delimiter=delimiter)
            pairs = [(row, reader.line_num) for row in reader if row and any(c.strip() for c in row)]
            return [r for r, _ in pairs], [n for _, n in pairs]
    except FileNotFoundError:
        raise ShardtrainError(f"{name}: annotations CSV not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ShardtrainError(f"{name}: cannot read annotations CSV ({storage.error_text(exc)})") from None


def read_annotations(csv_path: Location, img_root: Location | None = None, path_col: str | int = 0,
                     label_col: str | int = 1, header: bool | None = None, delimiter: str = ",",
                     require_label: bool = True) -> Annotations:
    """Parse an annotations CSV into a batch of (sample_id, path) plus label cells and per-row rejects.

    File-level problems (missing CSV, no rows, a needed column absent) raise
    ShardtrainError naming the file and column; with ``require_label`` False (predict) a
    missing label column means an unlabelled input. Rows with too few fields, or a path
    that is absolute, climbs out of ``img_root`` with ``..`` or resolves (symlinks) outside
    it, are rejected with a reason; nothing is opened here. Either location may be a
    URI; on a store only the lexical checks apply (an object store has no symlinks).
    """
    csv_path = _as_location(csv_path)
    img_root = _as_location(img_root) if img_root is not None else _parent(csv_path)
    remote = _remote(img_root)
    root_real = "" if remote else os.path.realpath(img_root)
    rows, line_nos = _read_rows(csv_path, delimiter)
    csv_name = storage.redact(csv_path)
    if header is None:
        named = isinstance(path_col, str) or isinstance(label_col, str)
        pcell = rows[0][path_col].strip() if rows and isinstance(path_col, int) and path_col < len(rows[0]) else ""
        header = named or (bool(rows) and not pcell.lower().endswith(IMAGE_SUFFIXES))
    skip = 1 if header and rows else 0
    head, body, lines = (rows[0] if skip else None), rows[skip:], line_nos[skip:]
    pi = _column_index(head, path_col, csv_path, "path_col")
    li = _column_index(head, label_col, csv_path, "label_col")
    no_label = li is None or (head is None and bool(body) and all(li >= len(r) for r in body))
    if pi is None or (li is None and require_label):
        missing = [f"'{c}'" for c, i in ((path_col, pi), (label_col, li)) if i is None]
        have = ", ".join(h.strip() for h in head or [])
        raise ShardtrainError(f"{csv_name}: missing column(s) {', '.join(missing)} (header has: {have})")
    if head is not None and max(pi, li or 0) >= len(head):
        if require_label or pi >= len(head):
            raise ShardtrainError(f"{csv_name}: column index {max(pi, li or 0)} out of range "
                                  f"(header has {len(head)} columns)")
        no_label = True
    if no_label and not require_label:
        li = None  # an unlabelled predict input
    need = max(pi, li if li is not None else 0)
    if not body:
        raise ShardtrainError(f"{csv_name}: no data rows")
    n = len(body)
    paths = np.full(n, "", dtype=object)
    reasons = np.full(n, "", dtype=object)
    details = np.full(n, "", dtype=object)
    raw = [""] * n
    origin = [f"{csv_name}:{line}" for line in lines]
    for i, row in enumerate(body):
        if need >= len(row):
            reasons[i], details[i] = "malformed_row", f"{origin[i]}: {len(row)} field(s)"
            continue
        rel = row[pi].strip()
        raw[i] = row[li].strip() if li is not None else ""
        reason = _escape_reason(rel)
        if not reason and remote:
            paths[i] = storage.join(img_root, *posixpath.normpath(rel.replace("\\", "/")).split("/"))
            continue
        if not reason:
            joined = img_root / posixpath.normpath(rel.replace("\\", "/"))
            real = os.path.realpath(joined)
            if _within(real, root_real):
                paths[i] = str(joined)
                continue
            reason, rel = PATH_ESCAPES_ROOT, f"{rel} -> {real}"
        reasons[i], details[i] = reason, f"{origin[i]}: {rel!r}"
    columns = {"sample_id": np.arange(n, dtype=np.int64), "path": paths,
               "reject_reason": reasons, "reject_detail": details}
    return Annotations(csv_path, img_root, columns, cells(raw), origin, has_labels=li is not None, layout="csv")


def _walk_images(root: Path) -> tuple[list[tuple[str, str, str]], int]:
    """(relative posix path, path, reject reason) of every image below ``root``, sorted; and the ignored count.

    Folder symlinks are followed only when they resolve inside the root (each real
    folder once, so a link cycle ends); one that leads outside becomes a single
    ``path_escapes_root`` entry and is not entered.
    """
    root_real = os.path.realpath(root)
    entries: list[tuple[str, str, str]] = []
    ignored = 0
    seen = {root_real}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        keep = []
        for d in sorted(dirnames):
            full = os.path.join(dirpath, d)
            real = os.path.realpath(full)
            if d.startswith("."):
                continue
            if not _within(real, root_real):
                entries.append((Path(os.path.relpath(full, root)).as_posix(), full, PATH_ESCAPES_ROOT))
            elif real not in seen:
                seen.add(real)
                keep.append(d)
        dirnames[:] = keep
        for f in filenames:
            if f.startswith(".") or not f.lower().endswith(IMAGE_SUFFIXES):
                ignored += 1
                continue
            full = os.path.join(dirpath, f)
            ok = _within(os.path.realpath(full), root_real)
            entries.append((Path(os.path.relpath(full, root)).as_posix(), full, "" if ok else PATH_ESCAPES_ROOT))
    entries.sort()
    return entries, ignored


def _walk_remote(root: str) -> tuple[list[tuple[str, str, str]], int, dict[str, tuple[int, int]]]:
    """``_walk_images`` on an object store: one recursive listing; also each image's (size, mtime_ns).

    Names below a hidden folder or hidden themselves (``.name``) are skipped as locally;
    non-image objects are counted as ignored. An object store has no symlinks.
    """
    from pyarrow import fs as pafs

    filesystem, key = storage.resolve(root)
    try:
        infos = filesystem.get_file_info(pafs.FileSelector(key, recursive=True, allow_not_found=True))
    except OSError as exc:
        raise ShardtrainError(f"{storage.redact(root)}: cannot list the image folder ({storage.error_text(exc)})") from None
    entries, ignored, stats = [], 0, {}
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(key):].lstrip("/")
        parts = rel.split("/")
        if any(part.startswith(".") for part in parts[:-1]):
            continue  # inside a hidden folder: not entered, as locally
        if parts[-1].startswith(".") or not parts[-1].lower().endswith(IMAGE_SUFFIXES):
            ignored += 1
            continue
        location = storage.join(root, *parts)
        entries.append((rel, location, ""))
        mtime = info.mtime_ns if info.mtime_ns is not None else -1
        stats[location] = (int(info.size if info.size is not None else -1), int(mtime))
    entries.sort()
    return entries, ignored, stats


def read_class_folders(root: Location, labelled: bool = True) -> Annotations:
    """List ``root/<class>/**/<image>`` (torchvision ImageFolder) as a batch with the class names as label cells.

    ``labelled`` False reads a flat folder of unlabelled images (every image below the
    root, no classes). Fails naming the root when it is not a folder or holds no image.
    ``root`` may be a URI: then one recursive listing, and each row's size and
    modification time come with it (``Annotations.stats``, for the stage fingerprint).
    """
    root = _as_location(root)
    name = storage.redact(root)
    stats = None
    if _remote(root):
        entries, ignored, by_path = _walk_remote(str(root))
        if not entries and not storage.listdir(root):
            raise ShardtrainError(f"{name}: image folder not found (no objects below this prefix)")
        stats = [by_path[p] for _, p, _ in entries]
    else:
        if not root.is_dir():
            raise ShardtrainError(f"{root}: image folder not found (not a directory)")
        entries, ignored = _walk_images(root)
    if not entries:
        raise ShardtrainError(f"{name}: no image files ({', '.join(IMAGE_SUFFIXES)}) below this folder")
    n = len(entries)
    paths = np.array([p if not why else "" for _, p, why in entries], dtype=object)
    reasons = np.array([why for _, _, why in entries], dtype=object)
    origin = [f"{name}/{rel}" for rel, _, _ in entries]
    details = np.array([f"{o}: resolves to {os.path.realpath(p)}, outside the root" if why else ""
                        for o, (_, p, why) in zip(origin, entries)], dtype=object)
    raw = [rel.split("/", 1)[0] if labelled and "/" in rel else "" for rel, _, _ in entries]
    columns = {"sample_id": np.arange(n, dtype=np.int64), "path": paths,
               "reject_reason": reasons, "reject_detail": details}
    return Annotations(root, root, columns, cells(raw), origin, has_labels=labelled, ignored=ignored,
                       layout="folders", stats=stats)


def has_class_folders(root: Location, classes: tuple[str, ...]) -> bool:
    """True when a folder has a subfolder named after one of ``classes`` (predict: read it class-per-folder)."""
    root = _as_location(root)
    names = [c for c in classes if c and "/" not in c and c not in (".", "..")]
    if _remote(root):
        listed = set(storage.listdir(root))
        return any(c in listed for c in names)
    return any((root / c).is_dir() for c in names)


def kept_cells(ann: Annotations) -> np.ndarray:
    """The label cells of rows not already rejected (what a vocabulary is fitted on)."""
    return ann.cells[ann.columns["reject_reason"] == ""]


def encode_labels(ann: Annotations, vocab: LabelVocab, strict: bool = True) -> dict[str, np.ndarray]:
    """The batch with a ``label`` int64 column from ``vocab``.

    ``strict`` (train/test): an empty or unknown label becomes an ``empty_label`` /
    ``unknown_label`` reject naming the row; a row rejected earlier keeps its reason.
    Not strict (predict): such labels are -1 and the row is kept. Without label cells
    (``has_labels`` False) the batch gets no ``label`` column.
    """
    cols = {k: v.copy() for k, v in ann.columns.items()}
    if not ann.has_labels:
        return cols
    labels, why = vocab.encode(ann.cells)
    if strict:
        reasons, details = cols["reject_reason"], cols["reject_detail"]
        for i in np.flatnonzero((why != "") & (reasons == "")):
            reasons[i] = why[i]
            note = "not in a class folder" if ann.layout == "folders" and not ann.cells[i] else vocab.detail(
                ann.cells[i])
            details[i] = f"{ann.origin[i]}: {note}"
    cols["label"] = labels
    return cols


def probe_image_size(ann: Annotations, limit: int = PROBE_IMAGES) -> tuple[int, int]:
    """(H, W): the most common size among ``limit`` kept images spread evenly over the listing (headers only).

    Evenly spread, so a class-per-folder listing is not probed in its first class only;
    ties go to the size seen first. ShardtrainError naming the source when none opens.
    """
    from PIL import Image, UnidentifiedImageError

    kept = np.flatnonzero(ann.columns["reject_reason"] == "")
    if len(kept):
        kept = kept[np.unique(np.linspace(0, len(kept) - 1, min(limit, len(kept))).astype(np.int64))]
    sizes: Counter[tuple[int, int]] = Counter()
    for i in kept.tolist():
        try:
            with Image.open(_image_file(ann.columns["path"][i])) as im:
                sizes[(im.height, im.width)] += 1
        except (OSError, UnidentifiedImageError, ValueError):
            continue
    if not sizes:
        raise ShardtrainError(f"{storage.redact(ann.source)}: no listed image could be opened to learn the image size "
                              "(set dataset.options.size)")
    return sizes.most_common(1)[0][0]  # Counter keeps insertion order among equal counts


def _image_file(path: str) -> Any:
    """What PIL opens: the path itself locally, the object's bytes (in memory) on a store."""
    import io

    return io.BytesIO(read_image_bytes(path)) if _remote(path) else path


def resolve_decode(options: ImageFolderOptions, train: Annotations) -> DecodeOptions:
    """The decode options of every split: the configured size, else the training split's most common size."""
    if options.size is not None:
        return DecodeOptions(options.color, tuple(options.size), options.resize, "option")  # type: ignore[arg-type]
    return DecodeOptions(options.color, probe_image_size(train), options.resize, "train")


def decode_images(batch: dict[str, Any], cfg: DecodeOptions) -> dict[str, Any]:
    """Stage: decode ``batch["path"]`` with PIL into ``x`` uint8 (N, H, W) or (N, H, W, 3).

    ``cfg`` is a DecodeOptions with a resolved ``size``. Rows already rejected are not
    opened; missing files (``missing_file``), files PIL cannot decode (``undecodable``)
    and, when ``resize`` is off, images not of ``size`` (``size_mismatch``) become rejects
    with a zero image. ``path`` is dropped; other columns pass through.
    """
    from PIL import Image, UnidentifiedImageError

    if cfg.size is None:
        raise ShardtrainError("dataset.options.size: unresolved; call resolve_decode() before decode_images")
    h, w = cfg.size
    mode = cfg.pil_mode
    col = batch["path"]
    paths = col.to_pylist() if hasattr(col, "to_pylist") else [str(p) for p in col]
    n = len(paths)
    x = np.zeros((n, h, w, 3) if mode == "RGB" else (n, h, w), dtype=np.uint8)
    reasons = np.array(batch.get("reject_reason", [""] * n), dtype=object)
    details = np.array(batch.get("reject_detail", [""] * n), dtype=object)
    for i, path in enumerate(paths):
        if reasons[i]:
            continue
        name = storage.redact(path)
        try:
            with Image.open(_image_file(path)) as im:
                im = im.convert(mode)  # forces the full decode, so truncated files fail here
            if im.size != (w, h):
                if not cfg.resize:
                    reasons[i], details[i] = "size_mismatch", f"{name}: {im.height}x{im.width}, expected {h}x{w}"
                    continue
                im = im.resize((w, h), Image.Resampling.BILINEAR)
            x[i] = np.asarray(im)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            reasons[i], details[i] = "missing_file", name
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            msg = storage.redact_text(str(exc).splitlines()[0]) if str(exc) else type(exc).__name__
            reasons[i], details[i] = "undecodable", f"{name}: {msg}"
    out = {k: v for k, v in batch.items() if k not in ("path", "reject_reason", "reject_detail")}
    out.update(x=x, reject_reason=reasons, reject_detail=details)
    return out


__all__ = ["Annotations", "DecodeOptions", "IMAGE_SUFFIXES", "ImageFolderOptions", "decode_images", "encode_labels",
           "has_class_folders", "kept_cells", "probe_image_size", "read_annotations", "read_class_folders",
           "resolve_decode"]
