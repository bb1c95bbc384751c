"""Raw inputs on S3 (moto on 127.0.0.1, tests/s3server.py): ``--data-dir s3://...`` and image-folder URIs.

- ``locate`` finds a registry's files on the store in the same layouts as locally, returns
  URI strings (local files stay ``Path``), and a missing file names the redacted URI;
- ``file_fingerprint`` of an object equals the local one for the same bytes and changes
  when the object is rewritten (same size, new content);
- fashion-mnist prepared from ``s3://`` (tiny generated IDX files, some gzipped) gives the
  same shard bytes as from a local folder, on both executors, and the same bytes as the
  previous in-memory source (the whole split read by the driver), for several block sizes;
- an image folder (class-per-folder and CSV) on S3 prepares to the same shards as locally;
- no credential appears in any output, index or error.
"""

# The ``s3`` fixture is imported by name and taken as an argument, which ruff reads as a redefinition.
# ruff: noqa: F811

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import shardtrain
from shardtrain.core.errors import ShardtrainError
from shardtrain.datasets.files import FASHION_MNIST_FILES, file_fingerprint, locate, search_roots
from shardtrain.shards import storage
from tests.s3server import FAKE_KEY_ID, FAKE_SECRET, moto_endpoint, ray_in_s3_env, s3  # noqa: F401  (pytest fixtures)

N_TRAIN, N_TEST = 230, 70
SMALL = ["prepare.rows_per_shard=64", "prepare.batch_rows=32"]


def _idx(arr: np.ndarray) -> bytes:
    """An IDX file's bytes for a uint8 array (magic 0x0800NN, big-endian dims)."""
    head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()


def fake_fashion_mnist(seed: int = 0) -> dict[str, bytes]:
    """The four registry files of a tiny Fashion-MNIST: train images raw (ranged reads), the rest gzipped."""
    rng = np.random.default_rng(seed)
    files = {}
    for prefix, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        files[f"{prefix}-labels-idx1-ubyte.gz"] = gzip.compress(_idx(labels), mtime=0)
        if prefix == "train":
            files[f"{prefix}-images-idx3-ubyte"] = _idx(images)  # the raw alternative name
        else:
            files[f"{prefix}-images-idx3-ubyte.gz"] = gzip.compress(_idx(images), mtime=0)
    return files


def _write_local(root: Path, sub: str, files: dict[str, bytes]) -> Path:
    """Write ``files`` under ``root/sub`` and return ``root``."""
    (root / sub).mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (root / sub / name).write_bytes(data)
    return root


def _put(s3, key: str, data: bytes) -> None:
    """Store ``data`` as the object ``key`` byte for byte (``S3Bucket.put`` would gzip a ``.gz`` key again)."""
    with s3.filesystem().open_output_stream(f"{s3.bucket}/{key}", compression=None) as out:
        out.write(data)


def _upload(s3, prefix: str, files: dict[str, bytes]) -> None:
    """Put ``files`` under ``prefix/`` in the test bucket, as they are."""
    for name, data in files.items():
        _put(s3, f"{prefix}/{name}", data)


def _shard_hashes(out: str | Path, stage: str = "prepare") -> dict[str, str]:
    """``split/file -> sha256`` of every shard of a stage (local or on the store), read through storage."""
    hashes = {}
    for split in ("train", "test"):
        index = json.loads(storage.read_bytes(storage.join(out, "shards", stage, split, "_index.json")))
        for entry in index["shards"]:
            data = storage.read_bytes(storage.join(out, "shards", stage, split, entry["file"]))
            hashes[f"{split}/{entry['file']}"] = hashlib.sha256(data).hexdigest()
    return hashes


def _no_secret(text: str) -> None:
    """Neither fake credential appears in ``text``."""
    assert FAKE_SECRET not in text and FAKE_KEY_ID not in text


@pytest.fixture
def no_env_data(monkeypatch, tmp_path):
    """No ``$SHARDTRAIN_DATA``, an empty cache and no downloads: only the given data dir counts."""
    monkeypatch.delenv("SHARDTRAIN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("SHARDTRAIN_OFFLINE", "1")


def test_locate_finds_the_registry_files_on_the_store_in_every_layout(s3, no_env_data):
    files = fake_fashion_mnist()
    _upload(s3, "data/fashion-mnist", files)
    found = locate(FASHION_MNIST_FILES, s3.uri("data"))
    assert set(found) == {f.name for f in FASHION_MNIST_FILES.files}
    assert all(isinstance(v, str) for v in found.values())
    # The raw alternative is found under the registry name of the .gz file.
    assert found["train-images-idx3-ubyte.gz"] == s3.uri("data/fashion-mnist/train-images-idx3-ubyte")
    with storage.open_input(found["t10k-labels-idx1-ubyte.gz"]) as fh:
        assert fh.read() == files["t10k-labels-idx1-ubyte.gz"]
    # torchvision's layout, directly under the root.
    _upload(s3, "tv/FashionMNIST/raw", files)
    found = locate("fashion-mnist", s3.uri("tv"))
    assert found["t10k-images-idx3-ubyte.gz"] == s3.uri("tv/FashionMNIST/raw/t10k-images-idx3-ubyte.gz")


def test_shardtrain_data_may_be_a_uri_and_local_roots_stay_paths(s3, no_env_data, monkeypatch, tmp_path):
    _upload(s3, "env/fashion-mnist", fake_fashion_mnist())
    monkeypatch.setenv("SHARDTRAIN_DATA", s3.uri("env"))
    assert search_roots(str(tmp_path))[:2] == [tmp_path, s3.uri("env")]
    found = locate("fashion-mnist", str(tmp_path / "nothing-here"))
    assert all(v.startswith(s3.uri("env/fashion-mnist/")) for v in found.values())
    local = _write_local(tmp_path / "loc", "fashion-mnist", fake_fashion_mnist())
    found = locate("fashion-mnist", str(local))
    assert all(isinstance(v, Path) for v in found.values())
    assert search_roots(f"file://{local}")[0] == local


def test_a_missing_file_names_the_redacted_uri(s3, no_env_data):
    files = fake_fashion_mnist()
    del files["t10k-labels-idx1-ubyte.gz"]
    _upload(s3, "data/fashion-mnist", files)
    secret_uri = f"s3://{FAKE_KEY_ID}:{FAKE_SECRET}@{s3.bucket}/data?endpoint_override={s3.endpoint}"
    with pytest.raises(ShardtrainError) as err:
        locate("fashion-mnist", secret_uri)
    text = str(err.value)
    assert "missing t10k-labels-idx1-ubyte.gz" in text
    assert f"s3://{s3.bucket}/data/fashion-mnist" in text
    assert "\n" not in text
    _no_secret(text)


def test_fingerprint_of_an_object_matches_local_and_changes_with_its_content(s3, tmp_path):
    data = gzip.compress(_idx(np.arange(200, dtype=np.uint8)), mtime=0)
    _put(s3, "fp/t10k-labels-idx1-ubyte.gz", data)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(data)
    uri = s3.uri("fp/t10k-labels-idx1-ubyte.gz")
    first = file_fingerprint(uri)
    # The stored bytes are hashed (not the gunzipped stream): the same text as for the local file.
    assert first == file_fingerprint(tmp_path / "t10k-labels-idx1-ubyte.gz")
    assert first.split(":")[1] == str(len(data))
    changed = bytearray(data)
    changed[-9] ^= 0xFF  # same size, other bytes, written right after the first upload
    _put(s3, "fp/t10k-labels-idx1-ubyte.gz", bytes(changed))
    assert file_fingerprint(uri) != first
    with pytest.raises(ShardtrainError, match=f"s3://{s3.bucket}/fp/gone.gz: input file not found"):
        file_fingerprint(s3.uri("fp/gone.gz"))


@pytest.mark.parametrize("block_bytes", [784 * 50, 32 << 20])
def test_fashion_mnist_from_s3_gives_the_local_shards_and_the_in_memory_ones(s3, no_env_data, tmp_path,
                                                                             block_bytes, capfd, caplog):
    files = fake_fashion_mnist()
    _upload(s3, "data/fashion-mnist", files)
    local_root = _write_local(tmp_path / "data", "fashion-mnist", files)
    sets = [*SMALL, f"prepare.block_bytes={block_bytes}"]
    shardtrain.run("fashion-mnist", "prepare", out=tmp_path / "local", overrides=sets, data_dir=str(local_root))
    shardtrain.run("fashion-mnist", "prepare", out=s3.uri("out"), overrides=sets, data_dir=s3.uri("data"))
    local = _shard_hashes(tmp_path / "local")
    assert len(local) == 4 + 2  # 230 train rows: 4 shards of 64; 70 test rows: 2
    assert _shard_hashes(s3.uri("out")) == local
    assert local == _in_memory_reference(local_root, tmp_path / "oracle")
    index = storage.read_bytes(s3.uri("out/shards/prepare/train/_index.json")).decode()
    assert json.loads(index)["rows"] == N_TRAIN
    captured = capfd.readouterr()
    _no_secret(index + captured.out + captured.err + caplog.text)


def _in_memory_reference(root: Path, out: Path) -> dict[str, str]:
    """Shards written from the previous release's source: each whole split read by the driver into columns."""
    from shardtrain.api import resolve_config
    from shardtrain.datasets.images import FashionMnist, fixed_classes
    from shardtrain.readers.idx import read_idx_pair
    from shardtrain.stages import images as stage
    from shardtrain.stages.runner import run_stage

    cfg = resolve_config("fashion-mnist", SMALL)
    jobs = []
    for split, prefix in (("train", "train"), ("test", "t10k")):
        sub = root / "fashion-mnist"
        images_file = sub / (f"{prefix}-images-idx3-ubyte" if prefix == "train" else f"{prefix}-images-idx3-ubyte.gz")
        images, labels = read_idx_pair(images_file, sub / f"{prefix}-labels-idx1-ubyte.gz")
        source = {"sample_id": np.arange(len(images), dtype=np.int64), "x": images,
                  "label": labels.astype(np.int64)}
        jobs.append(stage.prepare_job(cfg, split, source, {"label": fixed_classes(FashionMnist.classes)}, None))
    run_stage("prepare", jobs, out / "shards" / "prepare", rows_per_shard=cfg.prepare.rows_per_shard,
              batch_rows=cfg.prepare.batch_rows, max_reject_fraction=0.0, executor="local", fp="oracle",
              config={}, dataset="fashion-mnist")
    return _shard_hashes(out)



@pytest.mark.ray
def test_fashion_mnist_from_s3_on_ray_tasks_matches_the_local_executor(s3, no_env_data, tmp_path, ray_in_s3_env):
    files = fake_fashion_mnist(seed=1)
    _upload(s3, "data/fashion-mnist", files)
    sets = [*SMALL, f"prepare.block_bytes={784 * 40}", "dataset.options.coarse=true"]
    shardtrain.run("fashion-mnist", "prepare", out=tmp_path / "local", overrides=sets, data_dir=s3.uri("data"))
    shardtrain.run("fashion-mnist", "prepare", out=s3.uri("ray"), overrides=sets, data_dir=s3.uri("data"),
                   executor="ray")
    assert _shard_hashes(s3.uri("ray")) == _shard_hashes(tmp_path / "local")
    from shardtrain.shards import ShardSet

    ss = ShardSet(s3.uri("ray/shards/prepare/train"), verify=True)
    ids = np.concatenate(ss.column("sample_id"))
    assert ids.tolist() == list(range(N_TRAIN))
    coarse = np.concatenate(ss.column("label_coarse"))
    fine = np.concatenate(ss.column("label_class"))
    from shardtrain.datasets.images import FASHION_COARSE

    assert (coarse == FASHION_COARSE[fine]).all()

    # An image folder on the store: every Ray task decodes its own images from S3.
    _upload(s3, "imgs", _image_tree(tmp_path / "imgs"))
    raw = {"dataset": {"name": "image-folder", "data_dir": s3.uri("imgs"),
                       "options": {"root": "train", "test_csv": "ann.csv", "test_root": "test"}},
           "prepare": {"max_reject_fraction": 0.9, "rows_per_shard": 8, "batch_rows": 4}}
    shardtrain.run(raw, "prepare", out=tmp_path / "folder-local")
    shardtrain.run(raw, "prepare", out=s3.uri("folder-ray"), executor="ray")
    assert _shard_hashes(s3.uri("folder-ray")) == _shard_hashes(tmp_path / "folder-local")


def _image_tree(root: Path) -> dict[str, bytes]:
    """A small class-per-folder tree (train/ and test/), an annotations CSV, a README and a hidden file.

    One training image is 10x10 (resized to the common 8x8) and one test image is not an
    image at all (an ``undecodable`` reject); returns ``relative key -> bytes``.
    """
    import io

    from PIL import Image

    def png(value: int, shape: tuple[int, int] = (8, 8)) -> bytes:
        arr = np.random.default_rng(value).integers(0, 256, shape, dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        return buf.getvalue()

    files = {}
    for split, n in (("train", 5), ("test", 2)):
        for c, name in enumerate(("cat", "dog", "eel")):
            for i in range(n):
                files[f"{split}/{name}/{i:02d}.png"] = png(100 * c + i + (50 if split == "test" else 0))
    files["train/dog/nested/big.png"] = png(7, (10, 10))
    files["train/README.txt"] = b"not an image"
    files["train/cat/.hidden.png"] = png(9)
    files["test/eel/broken.png"] = b"\x89PNG not really"
    files["ann.csv"] = b"path,label\n" + b"".join(f"{k[len('test/'):]},{k.split('/')[1]}\n".encode()
                                                 for k in sorted(files) if k.startswith("test/") and k.endswith(".png"))
    files["ann.csv"] += b"cat/missing.png,cat\n"
    for key, data in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return files


@pytest.mark.parametrize("layout", ["folders", "csv"])
def test_image_folder_on_s3_gives_the_local_shards(s3, tmp_path, layout, capfd, caplog):
    files = _image_tree(tmp_path / "imgs")
    _upload(s3, "imgs", files)
    opts = {"root": "train", **({"test_root": "test"} if layout == "folders" else {"test_csv": "ann.csv",
                                                                                   "test_root": "test"})}
    results = {}
    for name, data_dir, out in (("local", str(tmp_path / "imgs"), tmp_path / "local"),
                                ("s3", s3.uri("imgs"), s3.uri("out"))):
        raw = {"dataset": {"name": "image-folder", "data_dir": data_dir, "options": opts},
               "prepare": {"max_reject_fraction": 0.9, "rows_per_shard": 8, "batch_rows": 4}}
        results[name] = shardtrain.run(raw, "prepare", out=out)["prepare"]
    assert _shard_hashes(s3.uri("out")) == _shard_hashes(tmp_path / "local")
    assert results["s3"]["train"]["rows"] == 16  # 15 + the nested, resized one; README and .hidden ignored
    assert results["s3"]["train"]["labels"]["label"]["classes"] == ["cat", "dog", "eel"]
    assert results["s3"]["test"]["rejects"]["reasons"] == results["local"]["test"]["rejects"]["reasons"]
    rejects = storage.read_bytes(s3.uri("out/shards/prepare/test/_rejects.jsonl")).decode()
    assert "undecodable" in rejects and f"s3://{s3.bucket}/imgs/test/eel/broken.png" in rejects
    if layout == "csv":
        assert "missing_file" in rejects and f"s3://{s3.bucket}/imgs/test/cat/missing.png" in rejects
    captured = capfd.readouterr()
    _no_secret(rejects + captured.out + captured.err + caplog.text
               + json.dumps(results["s3"], default=str))


def test_image_folder_fingerprint_follows_the_objects(s3, tmp_path):
    from shardtrain.api import resolve_config

    _upload(s3, "imgs", _image_tree(tmp_path / "imgs"))
    cfg = resolve_config({"dataset": {"name": "image-folder", "data_dir": s3.uri("imgs"),
                                      "options": {"root": "train", "test_csv": "ann.csv", "test_root": "test"}}})
    first = cfg.dataset.plan(cfg).inputs
    _put(s3, "imgs/train/eel/00.png", _image_tree(tmp_path / "again")["train/eel/01.png"] + b"\0")
    assert cfg.dataset.plan(cfg).inputs[0] != first[0]  # the train listing (size changed)
    assert cfg.dataset.plan(cfg).inputs[1] == first[1]  # the CSV is unchanged
    _put(s3, "imgs/ann.csv", b"path,label\ncat/00.png,cat\n")
    assert cfg.dataset.plan(cfg).inputs[1] != first[1]
    with pytest.raises(ShardtrainError, match=f"s3://{s3.bucket}/imgs/nope.csv: annotations CSV not found"):
        bad = resolve_config({"dataset": {"name": "image-folder", "data_dir": s3.uri("imgs"),
                                          "options": {"csv": "nope.csv"}}})
        bad.dataset.plan(bad)


def test_cli_takes_a_data_dir_uri_and_words_a_missing_file_with_it_redacted(s3, tmp_path):
    from tests.conftest import run_cli

    files = fake_fashion_mnist()
    _upload(s3, "data/fashion-mnist", files)
    env = {**s3.env, "SHARDTRAIN_DATA": "", "XDG_CACHE_HOME": str(tmp_path / "xdg"), "SHARDTRAIN_OFFLINE": "1"}
    res = run_cli("run", "fashion-mnist", "--stage", "prepare", "--executor", "local", "--data-dir", s3.uri("data"),
                  "--out", str(tmp_path / "out"), "--set", *SMALL, env=env)
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "out/shards/prepare/train/_index.json").read_text())["rows"] == N_TRAIN
    secret_uri = f"s3://{FAKE_KEY_ID}:{FAKE_SECRET}@{s3.bucket}/elsewhere"
    res = run_cli("run", "fashion-mnist", "--stage", "prepare", "--executor", "local", "--data-dir", secret_uri,
                  "--out", str(tmp_path / "out2"), env=env)
    assert res.returncode == 2
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: dataset fashion-mnist: missing ")
    assert f"s3://{s3.bucket}/elsewhere/fashion-mnist" in last
    _no_secret(res.stdout + res.stderr)
    res = run_cli("run", "fashion-mnist", "--print-config", "--data-dir", secret_uri, env=env)
    assert res.returncode == 0 and f"s3://{s3.bucket}/elsewhere" in res.stdout
    _no_secret(res.stdout + res.stderr)
    res = run_cli("run", "--help", env=env)
    assert "--data-dir DIR_OR_URI" in res.stdout and "s3://bucket/data" in res.stdout


def _predicted(job) -> dict:
    """A predict job's output columns and rejects, run in process."""
    from shardtrain.stages.runner import process_shard

    out, bad = process_shard(job.source, job.fn, job.ctx, 64)
    return out | {"rejects": [r["reason"] for r in bad]}


def test_predict_jobs_read_a_uri_like_the_local_file(s3, tmp_path):
    from shardtrain.api import resolve_config

    cfg = resolve_config({"dataset": {"name": "fashion-mnist"}})
    fitted = {"labels": {"label": {"classes": list(cfg.dataset.classes)}},
              "transform": {"decode": "array", "image_shape": [28, 28]}}
    files = fake_fashion_mnist()
    _upload(s3, "new/FashionMNIST/raw", {k: v for k, v in files.items() if k.startswith("t10k")})
    local = _write_local(tmp_path / "new", "FashionMNIST/raw", {k: v for k, v in files.items() if k.startswith("t10k")})
    want = _predicted(cfg.dataset.predict_job(cfg, fitted, local))
    for where in (s3.uri("new"), s3.uri("new/FashionMNIST/raw/t10k-images-idx3-ubyte.gz")):
        got = _predicted(cfg.dataset.predict_job(cfg, fitted, where))
        assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want), where
    with pytest.raises(ShardtrainError, match=f"s3://{s3.bucket}/empty: expected one"):
        cfg.dataset.predict_job(cfg, fitted, s3.uri("empty"))

    tree = _image_tree(tmp_path / "imgs")
    tree["test/pred.csv"] = tree["ann.csv"]  # paths relative to the CSV's own folder, as predict reads them
    (tmp_path / "imgs/test/pred.csv").write_bytes(tree["test/pred.csv"])
    _upload(s3, "imgs", tree)
    folder = resolve_config({"dataset": {"name": "image-folder", "options": {"root": str(tmp_path / "imgs/train")}}})
    fitted = {"labels": {"label": {"classes": ["cat", "dog", "eel"]}},
              "transform": {"decode": "image", "color": "grayscale", "size": [8, 8], "resize": True,
                            "size_from": "option"}}
    for rel in ("test", "test/pred.csv"):
        want = _predicted(folder.dataset.predict_job(folder, fitted, tmp_path / "imgs" / rel))
        got = _predicted(folder.dataset.predict_job(folder, fitted, s3.uri(f"imgs/{rel}")))
        assert got["rejects"] == want["rejects"] and len(want["x"]) > 0, rel
        assert all(np.array_equal(got[k], want[k]) for k in ("x", "label", "sample_id")), rel
    with pytest.raises(ShardtrainError, match=f"s3://{s3.bucket}/imgs/nothing: not found"):
        folder.dataset.predict_job(folder, fitted, s3.uri("imgs/nothing"))
