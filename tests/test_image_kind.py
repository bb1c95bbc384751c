"""The image-folder kind end to end (prepare/augment shards): both layouts, one label vocabulary, path safety,
messy folders, augment rejects and the default pipeline, predict jobs; the built-in image kinds' index entries."""

from __future__ import annotations

import gzip
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shardtrain.api import run
from shardtrain.config import from_dict
from shardtrain.core.errors import ShardtrainError
from shardtrain.shards import ShardSet
from shardtrain.stages.runner import process_shard

LOOSE = {"max_reject_fraction": 0.9}


def png(path: Path, value: int, shape: tuple[int, ...] = (8, 8), fmt: str | None = None) -> Path:
    """A small image with a recognisable constant-ish content (value at the top-left, noise elsewhere)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(value).integers(0, 256, shape, dtype=np.uint8)
    arr.flat[0] = value
    Image.fromarray(arr).save(path, format=fmt)
    return path


def prepare(tmp_path: Path, options: dict, **sections) -> dict:
    """Run prepare on an image-folder config; the split indexes."""
    raw = {"dataset": {"name": "image-folder", "options": options}, "prepare": dict(LOOSE), **sections}
    return run(raw, "prepare", tmp_path / "out")["prepare"]


def shard(tmp_path: Path, split: str, stage: str = "prepare") -> dict[str, np.ndarray]:
    ss = ShardSet(tmp_path / "out" / "shards" / stage / split)
    return {name: ss.concat(name) for name in ss.column_names if name != "x"} | {"x": ss.concat("x")}


def rejects(tmp_path: Path, split: str, stage: str = "prepare") -> dict[int, str]:
    path = tmp_path / "out" / "shards" / stage / split / "_rejects.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return {(r := json.loads(line))["sample_id"]: r["reason"] for line in lines}


def write_csv(path: Path, rows: list[tuple[str, str]], header: str = "file,label") -> Path:
    path.write_text("\n".join([header] + [f"{p},{y}" for p, y in rows]) + "\n")
    return path


def test_both_layouts_give_the_same_classes_and_pixels(tmp_path: Path) -> None:
    root = tmp_path / "train"
    files = [png(root / c / f"{i}.png", 10 * k + i) for k, c in enumerate(["cat", "dog", "owl"]) for i in range(3)]
    png(root / "cat" / "deep" / "x.jpg", 99, fmt="JPEG")           # found recursively, class = first folder
    (root / "notes.txt").write_text("ignored")
    (root / ".hidden").mkdir()
    png(root / ".hidden" / "h.png", 1)                             # hidden folders are skipped
    by_folder = prepare(tmp_path / "a", {"root": str(root)})["train"]
    assert by_folder["labels"]["label"]["classes"] == ["cat", "dog", "owl"]
    assert by_folder["rows"] == 10 and by_folder["transform"]["size"] == [8, 8]
    a = shard(tmp_path / "a", "train")
    # Sorted relative paths: cat/0.png, cat/1.png, cat/2.png, cat/deep/x.jpg, dog/0.png, ...
    np.testing.assert_array_equal(a["sample_id"], np.arange(10))
    np.testing.assert_array_equal(a["label"], [0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    csv = write_csv(tmp_path / "ann.csv", [(str(f.relative_to(root)), f.parent.name) for f in files])
    prepare(tmp_path / "b", {"csv": str(csv), "root": str(root)})
    b = shard(tmp_path / "b", "train")
    np.testing.assert_array_equal(b["label"], [0, 0, 0, 1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(b["x"], np.delete(a["x"], 3, axis=0))


def test_unknown_train_label_is_rejected_and_never_shifts_indices(tmp_path: Path) -> None:
    imgs = tmp_path / "imgs"
    for i in range(8):
        png(imgs / f"{i}.png", i)
    train = write_csv(tmp_path / "train.csv", [("0.png", "bag"), ("1.png", "hat"), ("2.png", "shirt"),
                                               ("3.png", "shoe"), ("4.png", "bag")])
    test = write_csv(tmp_path / "test.csv", [("5.png", "shoe"), ("6.png", "zebra"), ("7.png", "shirt")])
    opts = {"csv": str(train), "test_csv": str(test), "root": str(imgs), "classes": ["bag", "shirt", "shoe"]}
    idx = prepare(tmp_path, opts)
    tr, te = shard(tmp_path, "train"), shard(tmp_path, "test")
    assert rejects(tmp_path, "train") == {1: "unknown_label"}
    assert rejects(tmp_path, "test") == {1: "unknown_label"}  # a class seen only in test
    assert idx["train"]["labels"]["label"]["classes_from"] == "option"
    assert idx["test"]["labels"]["label"]["classes"] == ["bag", "shirt", "shoe"]
    shoe_train = int(tr["label"][list(tr["sample_id"]).index(3)])
    shoe_test = int(te["label"][list(te["sample_id"]).index(0)])
    assert shoe_train == shoe_test == 2
    assert int(te["label"][list(te["sample_id"]).index(2)]) == 1   # shirt
    # Without the option the vocabulary is the training labels (hat included), applied to test as it is.
    opts.pop("classes")
    idx = prepare(tmp_path / "b", opts)
    assert idx["test"]["labels"]["label"]["classes"] == ["bag", "hat", "shirt", "shoe"]
    tr, te = shard(tmp_path / "b", "train"), shard(tmp_path / "b", "test")
    assert int(tr["label"][list(tr["sample_id"]).index(3)]) == int(te["label"][list(te["sample_id"]).index(0)]) == 3


def test_empty_label_and_integer_classes(tmp_path: Path) -> None:
    imgs = tmp_path / "imgs"
    for i in range(6):
        png(imgs / f"{i}.png", i)
    csv = write_csv(tmp_path / "a.csv", [("0.png", "10"), ("1.png", ""), ("2.png", "2"), ("3.png", "1"),
                                         ("4.png", "02"), ("5.png", "0")])
    idx = prepare(tmp_path, {"csv": str(csv), "root": str(imgs)})["train"]
    cols = shard(tmp_path, "train")
    assert rejects(tmp_path, "train") == {1: "empty_label"}
    assert idx["labels"]["label"]["classes"] == ["0", "1", "2", "10"]   # numeric order: 0..2 keep index = value
    assert cols["label"].min() >= 0
    np.testing.assert_array_equal(cols["label"], [3, 2, 1, 2, 0])


def test_symlinks_that_leave_the_root_are_rejected(tmp_path: Path) -> None:
    root = tmp_path / "root"
    png(root / "cat" / "a.png", 1)
    png(root / "dog" / "b.png", 2)
    outside = png(tmp_path / "secret" / "s.png", 3)
    os.symlink(outside, root / "cat" / "link.png")                  # a file link out of the root
    os.symlink(tmp_path / "secret", root / "dog" / "more")           # a folder link out of the root
    os.symlink(root / "cat" / "a.png", root / "dog" / "inside.png")  # a link that stays inside is fine
    prepare(tmp_path, {"root": str(root)})
    assert rejects(tmp_path, "train") == {1: "path_escapes_root", 4: "path_escapes_root"}  # cat/link, dog/more
    cols = shard(tmp_path, "train")
    np.testing.assert_array_equal(cols["sample_id"], [0, 2, 3])
    csv = write_csv(tmp_path / "a.csv", [("cat/a.png", "cat"), ("cat/link.png", "cat"), ("../secret/s.png", "dog"),
                                         ("dog/inside.png", "dog")])
    prepare(tmp_path / "c", {"csv": str(csv), "root": str(root)})
    got = rejects(tmp_path / "c", "train")
    assert got == {1: "path_escapes_root", 2: "path_escapes_root"}
    detail = json.loads((tmp_path / "c/out/shards/prepare/train/_rejects.jsonl").read_text().splitlines()[0])
    assert "a.csv:3" in detail["detail"] and "secret" in detail["detail"]


def test_messy_folder_decodes_to_one_shape(tmp_path: Path) -> None:
    root = tmp_path / "root"
    png(root / "a" / "0.png", 1, (8, 8))
    png(root / "a" / "1.jpg", 2, (8, 8, 3), fmt="JPEG")             # RGB JPEG among grayscale PNGs
    png(root / "a" / "2.png", 3, (16, 12))                          # another size: resized
    png(root / "b" / "3.png", 4, (8, 8))
    png(root / "b" / "4.png", 5, (8, 8, 3))
    full = (root / "b" / "4.png").read_bytes()
    (root / "b" / "5.png").write_bytes(full[: len(full) // 2])      # truncated
    (root / "b" / "6.png").write_bytes(b"not an image at all")
    idx = prepare(tmp_path, {"root": str(root)})["train"]
    assert idx["transform"]["size"] == [8, 8] and idx["transform"]["size_from"] == "train"  # the most common
    assert rejects(tmp_path, "train") == {5: "undecodable", 6: "undecodable"}
    cols = shard(tmp_path, "train")
    assert cols["x"].shape == (5, 8, 8)
    idx = prepare(tmp_path / "rgb", {"root": str(root), "color": "rgb", "size": [6, 4]})["train"]
    assert idx["features"]["x"]["shape"] == [6, 4, 3] and shard(tmp_path / "rgb", "train")["x"].shape == (5, 6, 4, 3)
    prepare(tmp_path / "strict", {"root": str(root), "resize": False})
    assert rejects(tmp_path / "strict", "train")[2] == "size_mismatch"


def test_missing_file_dotdot_and_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    png(data / "imgs" / "a.png", 1)
    png(data / "imgs" / "b.png", 2)
    write_csv(data / "ann.csv", [("a.png", "x"), ("gone.png", "x"), ("../ann.csv", "y"), ("b.png", "y")])
    raw = {"dataset": {"name": "image-folder", "options": {"csv": "ann.csv", "root": "imgs"}}, "prepare": LOOSE}
    run(raw, "prepare", tmp_path / "out", data_dir=str(data))
    assert rejects(tmp_path, "train") == {1: "missing_file", 2: "path_escapes_root"}
    with pytest.raises(ShardtrainError, match="ann.csv: annotations CSV not found"):
        run(raw, "prepare", tmp_path / "out2")  # relative to the working directory without --data-dir


def test_options_errors() -> None:
    def cfg(options):
        return from_dict({"dataset": {"name": "image-folder", "options": options}})

    with pytest.raises(ShardtrainError, match="dataset.options.csv': give an annotations CSV"):
        cfg({})
    with pytest.raises(ShardtrainError, match="dataset.options.classes': class names must be distinct"):
        cfg({"root": "r", "classes": ["a", "a"]})
    assert cfg({"root": "r", "classes": ["b", 1]}).dataset.options.classes == ("b", 1)


def test_augment_counts_each_rejected_row_once_and_uses_the_default_pipeline(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for i in range(6):
        png(root / ("a" if i % 2 else "b") / f"{i}.png", i)
    for i in range(5):
        (root / "a" / f"bad{i}.png").write_bytes(b"junk")
    raw = {"dataset": {"name": "image-folder", "options": {"root": str(root)}}, "prepare": LOOSE,
           "augment": {"copies": 2, "preview": 0}}
    assert from_dict(raw).augment.pipeline is None
    out = run(raw, "prepare", tmp_path / "out")
    out = run(raw, "augment", tmp_path / "out")["augment"]["train"]
    assert out["rejects"]["count"] == 5 and out["rejects"]["reasons"] == {"undecodable": 5}
    assert len(rejects(tmp_path, "train", "augment")) == 5
    assert out["rows"] == 18
    from shardtrain.augment.image import DEFAULT_PIPELINE

    assert out["extra"]["pipeline"] == DEFAULT_PIPELINE and out["extra"]["pipeline_from"] == "default"
    flat = json.dumps(DEFAULT_PIPELINE)
    assert "Flip" not in flat  # digits and text break under flips
    cols = shard(tmp_path, "train", "augment")
    originals = cols["x"][cols["aug_index"] == 0]
    assert any(not np.array_equal(originals[k], cols["x"][cols["aug_index"] == j][k])
               for k in range(6) for j in (1, 2))


def _run_job(job) -> dict:
    out, bad = process_shard(job.source, job.fn, job.ctx, 64)
    return out | {"rejects": bad}


def test_predict_job_csv_and_folders(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for i in range(4):
        png(root / ("cat" if i < 2 else "dog") / f"{i}.png", i, (8, 8))
    idx = prepare(tmp_path, {"root": str(root), "color": "rgb"})["train"]
    cfg = from_dict({"dataset": {"name": "image-folder", "options": {"root": str(root), "color": "rgb"}}})
    new = tmp_path / "new"
    png(new / "x.png", 7, (20, 10))
    png(new / "y.png", 8, (8, 8))
    write_csv(new / "lab.csv", [("x.png", "dog"), ("y.png", "bird"), ("z.png", "cat")])
    got = _run_job(cfg.dataset.predict_job(cfg, idx, new / "lab.csv"))
    assert got["x"].shape == (2, 8, 8, 3)                          # the run's size and color, not the file's
    np.testing.assert_array_equal(got["label"], [1, -1])           # unknown label: -1 and still predicted
    assert [r["reason"] for r in got["rejects"]] == ["missing_file"]
    job = cfg.dataset.predict_job(cfg, idx, new)                   # a flat folder: no labels
    assert job.split == "predict" and "label" not in _run_job(job)
    got = _run_job(cfg.dataset.predict_job(cfg, idx, root))        # class folders named after the classes
    np.testing.assert_array_equal(got["label"], [0, 0, 1, 1])
    (new / "unlabelled.csv").write_text("x.png\ny.png\n")
    assert "label" not in _run_job(cfg.dataset.predict_job(cfg, idx, new / "unlabelled.csv"))


def _idx(arr: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def test_idx_predict_job(tmp_path: Path) -> None:
    cfg = from_dict({"dataset": {"name": "fashion-mnist"}})
    fitted = {"labels": {"label": {"classes": list(cfg.dataset.classes)}},
              "transform": {"decode": "array", "image_shape": [28, 28]}}
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    (tmp_path / "new-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(images)))
    job = cfg.dataset.predict_job(cfg, fitted, tmp_path / "new-images-idx3-ubyte.gz")
    assert "label" not in job.source and job.describe["transform"]["image_shape"] == [28, 28]
    (tmp_path / "new-labels-idx1-ubyte").write_bytes(_idx(np.array([0, 9, 3, 12, 1], np.uint8)))
    got = _run_job(cfg.dataset.predict_job(cfg, fitted, tmp_path))  # a folder holding the pair
    np.testing.assert_array_equal(got["label"], [0, 9, 3, -1, 1])
    np.testing.assert_array_equal(got["x"], images)
    (tmp_path / "small-images-idx3-ubyte").write_bytes(_idx(images[:, :8, :8].copy()))
    with pytest.raises(ShardtrainError, match="expected one"):
        cfg.dataset.predict_job(cfg, fitted, tmp_path)
    with pytest.raises(ShardtrainError, match="trained on 28x28"):
        cfg.dataset.predict_job(cfg, fitted, tmp_path / "small-images-idx3-ubyte")


def test_digits_kind_still_describes_fixed_classes_and_its_shape() -> None:
    cfg = from_dict({"dataset": {"name": "digits"}})
    jobs = cfg.dataset.prepare_jobs(cfg, cfg.dataset.plan(cfg), "local")
    train, test = (job.describe for job in jobs)
    assert train["labels"]["label"] == {"classes": [str(i) for i in range(10)], "classes_from": "dataset"}
    assert test["transform"] == {"decode": "array", "image_shape": [8, 8]}
    assert sum(len(job.source["sample_id"]) for job in jobs) == 1797


def test_predicting_the_runs_own_test_csv_reproduces_its_test_accuracy(tmp_path: Path) -> None:
    from shardtrain.predict import predict

    rng = np.random.default_rng(0)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rows = {"train": [], "test": []}
    for i in range(60):
        y = i % 3
        arr = rng.integers(0, 60, (8, 8), dtype=np.uint8)
        arr[(slice(0, 4), slice(4, 8), slice(None))[y]] += 150 if y < 2 else 0  # top / bottom / neither
        Image.fromarray(arr).save(imgs / f"{i}.png")
        rows["train" if i < 42 else "test"].append((f"{i}.png", ["top", "bottom", "none"][y]))
    rows["test"].append(("0.png", "sideways"))  # a class only in test: rejected in prepare, unscored in predict
    train, test = write_csv(tmp_path / "train.csv", rows["train"]), write_csv(tmp_path / "test.csv", rows["test"])
    raw = {"dataset": {"name": "image-folder", "options": {"csv": str(train), "test_csv": str(test),
                                                           "root": str(imgs)}},
           "prepare": LOOSE, "train": {"max_epochs": 2, "accelerator": "cpu"}}
    result = run(raw, "all", tmp_path / "out")
    expected = result["evaluate"]["test"]["accuracy"]
    got = predict(result["train"].run_dir, test, tmp_path / "pred.parquet")
    assert got.rows == 19 and got.rejects == 0
    assert got.metrics["accuracy"] == pytest.approx(expected, abs=1e-6)
