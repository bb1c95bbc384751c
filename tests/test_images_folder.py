"""Image-folder reader: annotations CSV parsing, path safety, decoding with per-row rejects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shardtrain.core.errors import ShardtrainError
from shardtrain.readers.imagefolder import (
    ImageFolderOptions, decode_images, probe_image_size, read_annotations, resolve_options,
)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """imgs/{a,b}.png (8x6 gray), imgs/sub/c.jpg (8x6 RGB), imgs/big.png (16x12), imgs/bad.png (not an image)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (8, 6), dtype=np.uint8), "L").save(root / name)
    Image.fromarray(rng.integers(0, 256, (8, 6, 3), dtype=np.uint8), "RGB").save(root / "sub" / "c.jpg", quality=95)
    Image.fromarray(rng.integers(0, 256, (16, 12), dtype=np.uint8), "L").save(root / "big.png")
    (root / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (tmp_path / "secret.png").write_bytes((root / "a.png").read_bytes())  # outside the root
    return root


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_headerless_integer_labels(tree: Path, tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "ann.csv", "a.png,3\nb.png,0\nsub/c.jpg,1\n")
    ann = read_annotations(csv, tree)
    cols = ann.columns
    np.testing.assert_array_equal(cols["sample_id"], [0, 1, 2])
    np.testing.assert_array_equal(cols["label"], [3, 0, 1])
    assert ann.integer_labels and ann.classes == ["0", "1", "2", "3"]
    assert cols["path"][2] == str(tree / "sub" / "c.jpg")
    assert list(cols["reject_reason"]) == ["", "", ""]


def test_header_named_columns_and_string_classes(tree: Path, tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "ann.csv", "id,label,file\n7,shirt,a.png\n8,bag,b.png\n9,shirt,sub/c.jpg\n10,,a.png\n")
    ann = read_annotations(csv, tree, path_col="file", label_col="label")
    assert ann.classes == ["bag", "shirt"] and not ann.integer_labels
    np.testing.assert_array_equal(ann.columns["label"], [1, 0, 1, -1])  # empty cell = missing label


def test_header_autodetected_for_index_columns(tree: Path, tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "ann.csv", "file_name,label\na.png,1\nb.png,0\n")
    ann = read_annotations(csv, tree)
    np.testing.assert_array_equal(ann.columns["label"], [1, 0])
    assert read_annotations(csv, tree, header=False).columns["reject_reason"][0] == ""  # row 1 kept as data
    assert len(read_annotations(csv, tree, header=False).columns["label"]) == 3


def test_missing_csv_and_missing_columns(tree: Path, tmp_path: Path) -> None:
    with pytest.raises(ShardtrainError, match="nope.csv: annotations CSV not found"):
        read_annotations(tmp_path / "nope.csv", tree)
    csv = write_csv(tmp_path / "ann.csv", "image,target\na.png,1\n")
    expected = r"ann.csv: missing column\(s\) 'file', 'label' \(header has: image, target\)"
    with pytest.raises(ShardtrainError, match=expected):
        read_annotations(csv, tree, path_col="file", label_col="label")
    with pytest.raises(ShardtrainError, match=r"ann.csv: missing column\(s\) 'label'"):
        read_annotations(csv, tree, path_col="image", label_col="label")
    with pytest.raises(ShardtrainError, match="ann.csv: column index 5 out of range"):
        read_annotations(csv, tree, label_col=5)
    with pytest.raises(ShardtrainError, match="empty.csv: no data rows"):
        read_annotations(write_csv(tmp_path / "empty.csv", "file,label\n"), tree, "file", "label")


def test_escaping_and_malformed_rows_are_rejected(tree: Path, tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "ann.csv",
                    f"a.png,1\n../secret.png,1\n{tmp_path / 'secret.png'},1\nsub/../../secret.png,0\n"
                    "onlyonefield.png\n,1\nb.png,-4\nsub/./../a.png,2\n")
    cols = read_annotations(csv, tree).columns
    assert list(cols["reject_reason"]) == ["", "path_escapes_root", "path_escapes_root", "path_escapes_root",
                                           "malformed_row", "empty_path", "bad_label", ""]
    assert "ann.csv:2" in cols["reject_detail"][1]
    assert cols["path"][7] == str(tree / "a.png")
    # Rejected rows are never opened by the decoder, even though ../secret.png exists.
    out = decode_images(cols, ImageFolderOptions(csv=str(csv), size=(8, 6)))
    assert out["reject_reason"][1] == "path_escapes_root" and not out["x"][1].any()


def test_decode_grayscale_rgb_and_rejects(tree: Path, tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "ann.csv", "a.png,0\nsub/c.jpg,1\nmissing.png,0\nbad.png,1\nbig.png,0\n")
    ann = read_annotations(csv, tree)
    opts = resolve_options(ImageFolderOptions(csv=str(csv)), ann)
    assert opts.size == (8, 6) and opts.resize is False
    out = decode_images(ann.columns, opts)
    assert out["x"].shape == (5, 8, 6) and out["x"].dtype == np.uint8
    assert list(out["reject_reason"]) == ["", "", "missing_file", "undecodable", "size_mismatch"]
    assert "path" not in out and list(out["label"]) == [0, 1, 0, 1, 0]
    np.testing.assert_array_equal(out["x"][0], np.asarray(Image.open(tree / "a.png")))
    rgb = decode_images(ann.columns, ImageFolderOptions(csv=str(csv), color="rgb", size=(8, 6)))
    assert rgb["x"].shape == (5, 8, 6, 3)
    assert rgb["reject_reason"][4] == ""  # a configured size resizes instead of rejecting
    np.testing.assert_array_equal(rgb["x"][1], np.asarray(Image.open(tree / "sub" / "c.jpg").convert("RGB")))


def test_decode_needs_a_resolved_size(tree: Path, tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "ann.csv", "a.png,0\n")
    ann = read_annotations(csv, tree)
    with pytest.raises(ShardtrainError, match="resolve_options"):
        decode_images(ann.columns, ImageFolderOptions(csv=str(csv)))
    assert probe_image_size(ann) == (8, 6)


def test_options_validation() -> None:
    from shardtrain.core.validation import validate

    def options(mapping):
        return validate(ImageFolderOptions, mapping, "dataset.options")

    opts = options({"csv": "a.csv", "size": [28, 28], "color": "rgb", "path_col": "file"})
    assert opts.size == (28, 28) and opts.pil_mode == "RGB" and opts.path_col == "file"
    with pytest.raises(ShardtrainError, match="dataset.options.colour"):
        options({"csv": "a.csv", "colour": "rgb"})
    with pytest.raises(ShardtrainError, match="dataset.options.csv"):
        options({"root": "x"})
    with pytest.raises(ShardtrainError, match="dataset.options.size"):
        options({"csv": "a.csv", "size": [28]})
    with pytest.raises(ShardtrainError, match="dataset.options.color"):
        options({"csv": "a.csv", "color": "cmyk"})


def test_line_numbers_survive_blank_lines_and_bom(tree: Path, tmp_path: Path) -> None:
    csv = tmp_path / "ann.csv"
    csv.write_bytes("\ufefffile,label\n\na.png,1\n\n../x.png,2\n".encode("utf-8"))
    cols = read_annotations(csv, tree, path_col="file", label_col="label").columns
    assert list(cols["reject_reason"]) == ["", "path_escapes_root"]
    assert cols["reject_detail"][1].endswith("ann.csv:5: '../x.png'")
