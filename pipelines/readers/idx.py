"""Read IDX files (the MNIST / Fashion-MNIST container), gzipped or raw.

An IDX file is a 4-byte magic ``00 00 <dtype code> <ndim>``, then ``ndim`` big-endian
uint32 dimension sizes, then the values in C order. MNIST-like image files have magic
2051 (uint8, 3 dims: N, rows, cols) and label files 2049 (uint8, 1 dim: N). Gzip is
detected from the first two bytes (``1f 8b``), never from the file name, and the whole
file is decompressed in one call and viewed with ``np.frombuffer`` (no copy for uint8).

Example::

    images, labels = read_idx_pair(*find_idx_files(root, "train"))   # (60000, 28, 28), (60000,)
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from shardtrain.core.errors import ShardtrainError

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


def _read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped in one call when it starts with the gzip magic."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ShardtrainError(f"{path}: IDX file not found") from None
    except OSError as exc:
        raise ShardtrainError(f"{path}: cannot read IDX file ({exc.strerror})") from None
    if data[:2] != GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except EOFError:
        raise ShardtrainError(f"{path}: truncated gzip stream (file cut short?)") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise ShardtrainError(f"{path}: corrupt gzip data ({exc})") from None


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of an (already decompressed) IDX file into an array of its header's shape.

    uint8/int8 payloads come back as a read-only zero-copy view of ``data``; multi-byte
    payloads are converted to native byte order (a copy). ``name`` is used in errors.
    """
    if len(data) < 4:
        raise ShardtrainError(f"{name}: too short for an IDX header ({len(data)} bytes)")
    zero, code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0:
        magic = int.from_bytes(data[:4], "big")
        raise ShardtrainError(f"{name}: not an IDX file (magic {magic:#010x}, expected 0x0000XXNN)")
    if code not in IDX_DTYPES:
        raise ShardtrainError(
            f"{name}: unknown IDX dtype code {code:#04x} (known: {', '.join(f'{c:#04x}' for c in IDX_DTYPES)})"
        )
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise ShardtrainError(f"{name}: IDX header declares {ndim} dims but the file has {len(data)} bytes")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_DTYPES[code]
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
    path = Path(path)
    return parse_idx(_read_bytes(path), str(path))


def _expect(arr: np.ndarray, path: Path, magic: int, ndim: int) -> None:
    """Check that an IDX array is uint8 with ``ndim`` dims (as magic ``magic`` promises)."""
    if arr.dtype != np.uint8 or arr.ndim != ndim:
        raise ShardtrainError(
            f"{path}: expected IDX magic {magic} (uint8, {ndim} dims), got {arr.dtype} with {arr.ndim} dims"
        )


def read_idx_pair(images_path: str | Path, labels_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an MNIST-like images/labels pair: uint8 (N, rows, cols) and uint8 (N,).

    Fails naming the files when either is not the expected kind (magic 2051 / 2049)
    or when the two counts differ.
    """
    images_path, labels_path = Path(images_path), Path(labels_path)
    images = read_idx(images_path)
    _expect(images, images_path, IMAGES_MAGIC, 3)
    labels = read_idx(labels_path)
    _expect(labels, labels_path, LABELS_MAGIC, 1)
    if len(images) != len(labels):
        raise ShardtrainError(
            f"{images_path}: {len(images)} images but {labels_path} has {len(labels)} labels"
        )
    return images, labels


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
