"""IDX reader: round trips on tiny synthetic files, every bad-input case, the real Fashion-MNIST."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from shardtrain.core.errors import ShardtrainError
from shardtrain.readers.idx import find_idx_files, parse_idx, read_idx, read_idx_pair
from tests.conftest import DATA_DIR


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    """Encode an array as IDX (big-endian payload) the way the MNIST files are written."""
    dtype = {0x08: ">u1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4"}[code]
    header = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(dtype).tobytes()


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (5, 4, 3), dtype=np.uint8), rng.integers(0, 10, 5, dtype=np.uint8)


@pytest.mark.parametrize("compress", [False, True])
def test_round_trip_raw_and_gzip(tmp_path: Path, tiny, compress: bool) -> None:
    images, labels = tiny
    enc = gzip.compress if compress else (lambda b: b)
    # Misleading names on purpose: gzip is detected from the magic bytes, not the suffix.
    (tmp_path / "imgs.bin").write_bytes(enc(idx_bytes(images)))
    (tmp_path / "labs.gz").write_bytes(enc(idx_bytes(labels)) if compress else idx_bytes(labels))
    got_x, got_y = read_idx_pair(tmp_path / "imgs.bin", tmp_path / "labs.gz")
    assert got_x.dtype == np.uint8 and got_x.shape == (5, 4, 3)
    np.testing.assert_array_equal(got_x, images)
    np.testing.assert_array_equal(got_y, labels)


@pytest.mark.parametrize("code", [0x0B, 0x0C, 0x0D])
def test_multibyte_dtypes_are_big_endian(code: int) -> None:
    arr = np.array([[1, -2, 300], [70000 if code != 0x0B else 7, 5, -6]])
    got = parse_idx(idx_bytes(arr, code))
    assert got.dtype.isnative
    np.testing.assert_array_equal(got, arr)


@pytest.mark.parametrize("layout", ["", "FashionMNIST/raw", "MNIST/raw"])
def test_find_idx_files_in_torchvision_layouts(tmp_path: Path, tiny, layout: str) -> None:
    images, labels = tiny
    d = tmp_path / layout
    d.mkdir(parents=True, exist_ok=True)
    (d / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
    (d / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    img_path, lab_path = find_idx_files(tmp_path, "t10k")
    assert (img_path.parent, lab_path.parent) == (d, d)
    np.testing.assert_array_equal(read_idx_pair(img_path, lab_path)[1], labels)
    with pytest.raises(ShardtrainError, match="train-images-idx3-ubyte"):
        find_idx_files(tmp_path, "train")


def test_find_prefers_uncompressed(tmp_path: Path, tiny) -> None:
    images, labels = tiny
    for name, arr in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels)):
        (tmp_path / name).write_bytes(idx_bytes(arr))
        (tmp_path / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(arr)))
    assert [p.name for p in find_idx_files(tmp_path, "train")] == ["train-images-idx3-ubyte",
                                                                     "train-labels-idx1-ubyte"]


def _expect_error(path: Path, match: str) -> None:
    with pytest.raises(ShardtrainError, match=match) as info:
        read_idx(path)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg


def test_truncated_gzip(tmp_path: Path, tiny) -> None:
    data = gzip.compress(idx_bytes(tiny[0]))
    (tmp_path / "cut.gz").write_bytes(data[: len(data) // 2])
    _expect_error(tmp_path / "cut.gz", "truncated gzip")


def test_corrupt_gzip(tmp_path: Path, tiny) -> None:
    data = bytearray(gzip.compress(idx_bytes(tiny[0])))
    data[-6] ^= 0xFF  # flip bits in the CRC32 trailer: the stream inflates but fails its check
    (tmp_path / "crc.gz").write_bytes(bytes(data))
    _expect_error(tmp_path / "crc.gz", "corrupt gzip")
    data = bytearray(gzip.compress(idx_bytes(tiny[0])))
    data[12:20] = b"\xff" * 8  # garbage deflate blocks
    (tmp_path / "junk.gz").write_bytes(bytes(data))
    with pytest.raises(ShardtrainError, match="junk.gz: (corrupt|truncated) gzip"):
        read_idx(tmp_path / "junk.gz")


def test_wrong_magic(tmp_path: Path, tiny) -> None:
    (tmp_path / "text").write_bytes(b"PK\x03\x04 not an idx file")
    _expect_error(tmp_path / "text", "not an IDX file")
    # Valid IDX, wrong kind: a label file (2049) where images (2051) are expected.
    (tmp_path / "labels").write_bytes(idx_bytes(tiny[1]))
    with pytest.raises(ShardtrainError, match=r"labels: expected IDX magic 2051"):
        read_idx_pair(tmp_path / "labels", tmp_path / "labels")


def test_wrong_dtype_code(tmp_path: Path, tiny) -> None:
    data = bytearray(idx_bytes(tiny[0]))
    data[2] = 0x07
    (tmp_path / "code").write_bytes(bytes(data))
    _expect_error(tmp_path / "code", "unknown IDX dtype code 0x07")


def test_size_not_matching_header(tmp_path: Path, tiny) -> None:
    data = idx_bytes(tiny[0])
    (tmp_path / "short").write_bytes(data[:-1])
    _expect_error(tmp_path / "short", r"size 75 bytes does not match the IDX header shape \(5, 4, 3\)")
    (tmp_path / "long").write_bytes(data + b"\0")
    _expect_error(tmp_path / "long", "does not match the IDX header")
    (tmp_path / "stub").write_bytes(data[:2])
    _expect_error(tmp_path / "stub", "too short")


def test_missing_file(tmp_path: Path) -> None:
    _expect_error(tmp_path / "nope.gz", "not found")


def test_count_mismatch(tmp_path: Path, tiny) -> None:
    images, labels = tiny
    (tmp_path / "i").write_bytes(idx_bytes(images))
    (tmp_path / "l").write_bytes(idx_bytes(labels[:4]))
    with pytest.raises(ShardtrainError, match="5 images but .* has 4 labels"):
        read_idx_pair(tmp_path / "i", tmp_path / "l")


@pytest.mark.dataset("fashion-mnist")
def test_real_fashion_mnist_counts() -> None:
    root = DATA_DIR / "fashion-mnist"
    if not root.is_dir():
        pytest.skip(f"real data not found at {root}")
    for prefix, n, per_class in (("train", 60000, 6000), ("t10k", 10000, 1000)):
        images, labels = read_idx_pair(*find_idx_files(root, prefix))
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8
        assert labels.shape == (n,)
        np.testing.assert_array_equal(np.bincount(labels, minlength=10), [per_class] * 10)


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("code", [0x08, 0x0B, 0x0D])
def test_records_read_by_range_equal_the_whole_file(tmp_path: Path, compress: bool, code: int) -> None:
    from shardtrain.readers.idx import idx_layout, read_records

    arr = np.random.default_rng(code).integers(-100, 100, (37, 3, 2)).astype({0x08: np.uint8, 0x0B: np.int16,
                                                                               0x0D: np.float32}[code])
    data = idx_bytes(arr, code)
    path = tmp_path / "x.idx"
    path.write_bytes(gzip.compress(data) if compress else data)
    layout = idx_layout(path, identity=f"{compress}-{code}")
    assert layout.shape == (37, 3, 2) and layout.gzipped is compress and layout.header == 16
    whole = read_idx(path)
    for lo, hi in ((0, 37), (0, 1), (5, 20), (36, 37), (10, 10)):
        got = read_records(layout, lo, hi)
        assert got.dtype == whole.dtype and got.dtype.isnative
        np.testing.assert_array_equal(got, whole[lo:hi])


def test_layout_errors_name_the_file(tmp_path: Path, tiny) -> None:
    from shardtrain.readers.idx import expect_images_labels, idx_layout

    images, labels = tiny
    (tmp_path / "short").write_bytes(idx_bytes(images)[:-3])
    with pytest.raises(ShardtrainError, match=r"short: size 73 bytes does not match the IDX header shape \(5, 4, 3\)"):
        idx_layout(tmp_path / "short")
    (tmp_path / "cut.gz").write_bytes(gzip.compress(idx_bytes(images))[:12])
    with pytest.raises(ShardtrainError, match="cut.gz: (truncated gzip stream|too short|IDX header)"):
        idx_layout(tmp_path / "cut.gz")
    with pytest.raises(ShardtrainError, match="nope: IDX file not found"):
        idx_layout(tmp_path / "nope")
    (tmp_path / "i").write_bytes(idx_bytes(images))
    (tmp_path / "l").write_bytes(idx_bytes(labels[:4]))
    with pytest.raises(ShardtrainError, match="5 images but .* has 4 labels"):
        expect_images_labels(idx_layout(tmp_path / "i"), idx_layout(tmp_path / "l"))
    with pytest.raises(ShardtrainError, match="expected IDX magic 2051"):
        expect_images_labels(idx_layout(tmp_path / "l"), idx_layout(tmp_path / "l"))
