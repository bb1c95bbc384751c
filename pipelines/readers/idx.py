"""Read IDX files (the MNIST / Fashion-MNIST container), gzipped or raw.

An IDX file is a 4-byte magic ``00 00 <dtype code> <ndim>``, then ``ndim`` big-endian
uint32 dimension sizes, then the values in C order. MNIST-like image files have magic
2051 (uint8, 3 dims: N, rows, cols) and label files 2049 (uint8, 1 dim: N). Gzip is
detected from the first two bytes (``1f 8b``), never from the file name, and the whole
file is decompressed in one call and viewed with ``np.frombuffer`` (no copy for uint8).

Example::

    images, labels = read_idx_pair(*find_idx_files(root, "train"))   # (60000, 28, 28), (60000,)

A file may also be read piece by piece, locally or on a store (``s3://...``): ``idx_layout``
reads only the header (a few bytes; for a gzipped file, the first bytes of the stream) and
``read_records(layout, start, stop)`` returns records ``[start, stop)``: one ranged read of
a raw file (records are fixed-size), or, for a gzipped file, the whole file decompressed
once per process (kept for the next call, keyed by the file's fingerprint) and sliced.
"""

from __future__ import annotations

import functools
import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shardtrain.core.errors import ShardtrainError
from shardtrain.shards import storage
from shardtrain.shards.storage import Location

GZIP_MAGIC = b"\x1f\x8b"
IMAGES_MAGIC = 2051  # 0x00000803: uint8, 3 dims
LABELS_MAGIC = 2049  # 0x00000801: uint8, 1 dim

# IDX dtype codes -> big-endian numpy dtypes (the format stores multi-byte values MSB first).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# Where torchvision puts the raw files below its root; searched after the directory itself.
TORCHVISION_LAYOUTS = ("FashionMNIST/raw", "MNIST/raw")


def _read_bytes(path: Location) -> bytes:
    """The file's content (a local path or a URI), gunzipped in one call when it starts with the gzip magic."""
    name = storage.redact(path)
    try:
        if storage.is_local(path):
            data = storage.local_path(path).read_bytes()
        else:  # open_input: the stored bytes (a sequential stream would gunzip by suffix)
            with storage.open_input(path) as fh:
                data = fh.read()
    except FileNotFoundError:
        raise ShardtrainError(f"{name}: IDX file not found") from None
    except OSError as exc:
        raise ShardtrainError(f"{name}: cannot read IDX file ({exc.strerror})") from None
    return _gunzip(data, name)


def _gunzip(data: bytes, name: str) -> bytes:
    """``data`` decompressed when it starts with the gzip magic, else as it is; errors name the file."""
    if data[:2] != GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except EOFError:
        raise ShardtrainError(f"{name}: truncated gzip stream (file cut short?)") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise ShardtrainError(f"{name}: corrupt gzip data ({exc})") from None


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of an (already decompressed) IDX file into an array of its header's shape.

    uint8/int8 payloads come back as a read-only zero-copy view of ``data``; multi-byte
    payloads are converted to native byte order (a copy). ``name`` is used in errors.
    """
    dtype, shape, header = _parse_header(data, name)
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise ShardtrainError(
            f"{name}: size {len(data)} bytes does not match the IDX header shape {shape} "
            f"({expected} bytes expected)"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr if dtype.itemsize == 1 else arr.astype(dtype.newbyteorder("="))


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (gzip detected by magic bytes) into an array shaped as its header says.

    Raises ShardtrainError naming the file for a truncated or corrupt gzip stream, a
    wrong magic, an unknown dtype code, or a payload size that does not match the header.
    """
    path = path if storage.is_uri(path) else Path(path)
    return parse_idx(_read_bytes(path), storage.redact(path))


def _expect(arr: np.ndarray, path: Location, magic: int, ndim: int) -> None:
    """Check that an IDX array is uint8 with ``ndim`` dims (as magic ``magic`` promises)."""
    if arr.dtype != np.uint8 or arr.ndim != ndim:
        raise ShardtrainError(
            f"{storage.redact(path)}: expected IDX magic {magic} (uint8, {ndim} dims), got {arr.dtype} with {arr.ndim} dims"
        )


def read_idx_pair(images_path: str | Path, labels_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an MNIST-like images/labels pair: uint8 (N, rows, cols) and uint8 (N,).

    Fails naming the files when either is not the expected kind (magic 2051 / 2049)
    or when the two counts differ.
    """
    images = read_idx(images_path)
    _expect(images, images_path, IMAGES_MAGIC, 3)
    labels = read_idx(labels_path)
    _expect(labels, labels_path, LABELS_MAGIC, 1)
    if len(images) != len(labels):
        raise ShardtrainError(
            f"{storage.redact(images_path)}: {len(images)} images but {storage.redact(labels_path)} has "
            f"{len(labels)} labels"
        )
    return images, labels


@dataclass(frozen=True)
class IdxLayout:
    """Where an IDX file's records lie: its location, value type, shape and header length.

    ``identity`` names the file's content (its fingerprint from the plan) so a cached
    decompression is never reused for a changed file; ``gzipped`` files are read whole.
    """

    location: Location
    dtype: str
    shape: tuple[int, ...]
    header: int
    gzipped: bool
    identity: str = ""

    @property
    def count(self) -> int:
        """Number of records (the first dimension)."""
        return self.shape[0]

    @property
    def record_bytes(self) -> int:
        """Bytes of one record (all dimensions but the first)."""
        return int(np.prod(self.shape[1:], dtype=np.int64)) * np.dtype(self.dtype).itemsize


def _parse_header(head: bytes, name: str) -> tuple[np.dtype, tuple[int, ...], int]:
    """(dtype, shape, header bytes) from the first bytes of an IDX file (at least its header)."""
    if len(head) < 4:
        raise ShardtrainError(f"{name}: too short for an IDX header ({len(head)} bytes)")
    zero, code, ndim = int.from_bytes(head[:2], "big"), head[2], head[3]
    if zero != 0:
        raise ShardtrainError(f"{name}: not an IDX file (magic {int.from_bytes(head[:4], 'big'):#010x}, "
                              "expected 0x0000XXNN)")
    if code not in IDX_DTYPES:
        raise ShardtrainError(
            f"{name}: unknown IDX dtype code {code:#04x} (known: {', '.join(f'{c:#04x}' for c in IDX_DTYPES)})"
        )
    header = 4 + 4 * ndim
    if ndim == 0 or len(head) < header:
        raise ShardtrainError(f"{name}: IDX header declares {ndim} dims but the file has {len(head)} bytes")
    shape = tuple(int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return IDX_DTYPES[code], shape, header


def idx_layout(location: Location, identity: str = "") -> IdxLayout:
    """Read only the header of an IDX file (local or a URI) and say where its records lie.

    A raw file's size is checked against the header here (one stat); a gzipped file's
    payload is checked when a task decompresses it. Errors name the file (redacted).
    """
    name = storage.redact(location)
    try:
        with storage.open_input(location) as fh:
            head = fh.read(4 + 4 * 255)  # the longest possible header: 255 dims
            gzipped = head[:2] == GZIP_MAGIC
            if gzipped:
                fh.seek(0)
                try:
                    with gzip.GzipFile(fileobj=fh) as gz:
                        head = gz.read(4 + 4 * 255)
                except EOFError:
                    raise ShardtrainError(f"{name}: truncated gzip stream (file cut short?)") from None
                except (gzip.BadGzipFile, zlib.error) as exc:
                    raise ShardtrainError(f"{name}: corrupt gzip data ({exc})") from None
            size = fh.size()
    except FileNotFoundError:
        raise ShardtrainError(f"{name}: IDX file not found") from None
    dtype, shape, header = _parse_header(head, name)
    layout = IdxLayout(location, dtype.str, shape, header, gzipped, identity)
    expected = header + layout.count * layout.record_bytes
    if not gzipped and size != expected:
        raise ShardtrainError(f"{name}: size {size} bytes does not match the IDX header shape {shape} "
                              f"({expected} bytes expected)")
    return layout


def expect_images_labels(images: IdxLayout, labels: IdxLayout) -> None:
    """Check an images/labels layout pair: uint8 (N, rows, cols) and uint8 (N,), the same N."""
    for layout, magic, ndim in ((images, IMAGES_MAGIC, 3), (labels, LABELS_MAGIC, 1)):
        if np.dtype(layout.dtype) != np.uint8 or len(layout.shape) != ndim:
            raise ShardtrainError(f"{storage.redact(layout.location)}: expected IDX magic {magic} (uint8, {ndim} "
                                  f"dims), got {np.dtype(layout.dtype)} with {len(layout.shape)} dims")
    if images.count != labels.count:
        raise ShardtrainError(f"{storage.redact(images.location)}: {images.count} images but "
                              f"{storage.redact(labels.location)} has {labels.count} labels")


@functools.lru_cache(maxsize=4)
def _whole(location: Location, identity: str) -> np.ndarray:
    """A whole (gzipped) IDX file parsed, kept per process for the next part of the same file.

    Four entries: a task reads an images and a labels file per split, and a process that
    runs several shard tasks of the same split decompresses each file once.
    """
    return parse_idx(_read_bytes(location), storage.redact(location))


def read_records(layout: IdxLayout, start: int, stop: int) -> np.ndarray:
    """Records ``[start, stop)`` of an IDX file: a ranged read of a raw file, a slice of a gzipped one."""
    if layout.gzipped:
        arr = _whole(layout.location, layout.identity)
        if arr.shape != layout.shape:
            raise ShardtrainError(f"{storage.redact(layout.location)}: shape {arr.shape} differs from the "
                                  f"planned {layout.shape} (the file changed during the stage?)")
        return arr[start:stop]
    dtype = np.dtype(layout.dtype)
    nbytes = (stop - start) * layout.record_bytes
    try:
        with storage.open_input(layout.location) as fh:
            data = fh.read_at(nbytes, layout.header + start * layout.record_bytes)
    except FileNotFoundError:
        raise ShardtrainError(f"{storage.redact(layout.location)}: IDX file not found") from None
    if len(data) != nbytes:
        raise ShardtrainError(f"{storage.redact(layout.location)}: records {start}..{stop} cut short "
                              f"({len(data)} of {nbytes} bytes; the file changed during the stage?)")
    arr = np.frombuffer(data, dtype=dtype).reshape((stop - start, *layout.shape[1:]))
    return arr if dtype.itemsize == 1 else arr.astype(dtype.newbyteorder("="))


def find_idx_files(root: str | Path, prefix: str,
                   layouts: tuple[str, ...] = TORCHVISION_LAYOUTS) -> tuple[Path, Path]:
    """Find ``<prefix>-images-idx3-ubyte[.gz]`` and ``<prefix>-labels-idx1-ubyte[.gz]`` under ``root``.

    ``prefix`` is ``"train"`` or ``"t10k"``. Looks in ``root`` itself, then in
    torchvision's ``FashionMNIST/raw`` and ``MNIST/raw``; the first directory holding
    both files wins, and within it an uncompressed file is preferred over its ``.gz``.
    """
    root = Path(root)
    names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    dirs = [root] + [root / layout for layout in layouts]
    for d in dirs:
        found = []
        for name in names:
            hit = next((d / n for n in (name, f"{name}.gz") if (d / n).is_file()), None)
            if hit is not None:
                found.append(hit)
        if len(found) == 2:
            return found[0], found[1]
    searched = ", ".join(str(d) for d in dirs)
    raise ShardtrainError(f"{root}: no {names[0]}[.gz] + {names[1]}[.gz] pair (searched {searched})")
