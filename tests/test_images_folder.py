"""Image-folder reader: annotations CSV parsing, class folders, path safety, label encoding, decoding with rejects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shardtrain.core.errors import ShardtrainError
from shardtrain.core.labels import LabelVocab
from shardtrain.readers.imagefolder import (
    DecodeOptions, ImageFolderOptions, decode_images, encode_labels, kept_cells, probe_image_size, read_annotations,
    read_class_folders, resolve_decode,
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
    assert list(ann.cells) == ["3", "0", "1"] and ann.has_labels
    vocab = LabelVocab.fit(kept_cells(ann))
    assert vocab.classes == ("0", "1", "3")
    np.testing.assert_array_equal(encode_labels(ann, vocab)["label"], [2, 0, 1])
    assert cols["path"][2] == str(tree / "sub" / "c.jpg")
    assert list(cols["reject_reason"]) == ["", "", ""]


def test_header_named_columns_and_string_classes(tree: Path, tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "ann.csv", "id,label,file\n7,shirt,a.png\n8,bag,b.png\n9,shirt,sub/c.jpg\n10,,a.png\n")
    ann = read_annotations(csv, tree, path_col="file", label_col="label")
    vocab = LabelVocab.fit(kept_cells(ann))
    assert vocab.classes == ("bag", "shirt")
    cols = encode_labels(ann, vocab)
    np.testing.assert_array_equal(cols["label"][:3], [1, 0, 1])
    assert cols["reject_reason"][3] == "empty_label" and cols["reject_detail"][3] == f"{csv}:5: empty label"
    loose = encode_labels(ann, LabelVocab(("bag",)), strict=False)  # predict: unknown/empty are -1, kept
    np.testing.assert_array_equal(loose["label"], [-1, 0, -1, -1])
    assert list(loose["reject_reason"]) == ["", "", "", ""]


def test_header_autodetected_for_index_columns(tree: Path, tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "ann.csv", "file_name,label\na.png,1\nb.png,0\n")
    ann = read_annotations(csv, tree)
    assert list(ann.cells) == ["1", "0"]
    assert read_annotations(csv, tree, header=False).columns["reject_reason"][0] == ""  # row 1 kept as data
    assert len(read_annotations(csv, tree, header=False).cells) == 3


def test_label_column_optional_for_predict(tree: Path, tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "ann.csv", "file\na.png\nb.png\n")
    assert not read_annotations(csv, tree, "file", "label", require_label=False).has_labels
    with pytest.raises(ShardtrainError, match="missing column"):
        read_annotations(csv, tree, "file", "label")
    bare = write_csv(tmp_path / "bare.csv", "a.png\nb.png\n")
    assert not read_annotations(bare, tree, require_label=False).has_labels


def test_class_folders_listing(tree: Path, tmp_path: Path) -> None:
    (tree / "README.md").write_text("not an image")
    ann = read_class_folders(tree)
    rels = [o.removeprefix(f"{tree}/") for o in ann.origin]
    assert rels == ["a.png", "b.png", "bad.png", "big.png", "sub/c.jpg"]  # sorted; README ignored
    assert ann.ignored == 1 and list(ann.cells) == ["", "", "", "", "sub"]
    cols = encode_labels(ann, LabelVocab.fit(["sub"]))
    assert list(cols["reject_reason"]) == ["empty_label"] * 4 + [""]  # images directly in the root have no class
    assert cols["reject_detail"][0].endswith("a.png: not in a class folder")
    assert list(read_class_folders(tree, labelled=False).cells) == [""] * 5
    with pytest.raises(ShardtrainError, match="image folder not found"):
        read_class_folders(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ShardtrainError, match="no image files"):
        read_class_folders(tmp_path / "empty")


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
                                           "malformed_row", "empty_path", "", ""]  # -4 is a class name
    assert "ann.csv:2" in cols["reject_detail"][1]
    assert cols["path"][7] == str(tree / "a.png")
    # Rejected rows are never opened by the decoder, even though ../secret.png exists.
    out = decode_images(cols, DecodeOptions(size=(8, 6)))
    assert out["reject_reason"][1] == "path_escapes_root" and not out["x"][1].any()


def test_decode_grayscale_rgb_and_rejects(tree: Path, tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "ann.csv", "a.png,0\nsub/c.jpg,1\nmissing.png,0\nbad.png,1\nbig.png,0\n")
    ann = read_annotations(csv, tree)
    opts = resolve_decode(ImageFolderOptions(csv=str(csv), resize=False), ann)
    assert opts.size == (8, 6) and opts.resize is False and opts.size_from == "train"
    out = decode_images(ann.columns, opts)
    assert out["x"].shape == (5, 8, 6) and out["x"].dtype == np.uint8
    assert list(out["reject_reason"]) == ["", "", "missing_file", "undecodable", "size_mismatch"]
    assert "path" not in out
    np.testing.assert_array_equal(out["x"][0], np.asarray(Image.open(tree / "a.png")))
    rgb = decode_images(ann.columns, DecodeOptions("rgb", (8, 6)))
    assert rgb["x"].shape == (5, 8, 6, 3)
    assert rgb["reject_reason"][4] == ""  # resize (the default) resizes instead of rejecting
    np.testing.assert_array_equal(rgb["x"][1], np.asarray(Image.open(tree / "sub" / "c.jpg").convert("RGB")))
    assert DecodeOptions.from_transform(opts.describe()) == opts


def test_decode_needs_a_resolved_size_and_probe_takes_the_most_common(tree: Path, tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "ann.csv", "big.png,0\na.png,0\nb.png,0\n")
    ann = read_annotations(csv, tree)
    with pytest.raises(ShardtrainError, match="resolve_decode"):
        decode_images(ann.columns, DecodeOptions())
    assert probe_image_size(ann) == (8, 6)  # two 8x6 beat the first image's 16x12
    assert probe_image_size(ann, limit=1) == (16, 12)


def test_options_validation() -> None:
    from shardtrain.core.validation import validate

    def options(mapping):
        return validate(ImageFolderOptions, mapping, "dataset.options")

    opts = options({"csv": "a.csv", "size": [28, 28], "color": "rgb", "path_col": "file"})
    assert opts.size == (28, 28) and opts.pil_mode == "RGB" and opts.path_col == "file"
    with pytest.raises(ShardtrainError, match="dataset.options.colour"):
        options({"csv": "a.csv", "colour": "rgb"})
    with pytest.raises(ShardtrainError, match="dataset.options.csv"):
        options({"color": "rgb"})
    assert options({"root": "x"}).csv is None  # class-per-folder layout
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
