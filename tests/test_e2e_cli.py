"""The CLI as users meet it: the offline demo, one-line errors, and bad inputs before training."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import run_cli


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One full offline demo run (prepare -> augment -> train -> evaluate), in process."""
    out = tmp_path_factory.mktemp("demo")
    res = run_cli("demo", "--executor", "local", "--out", str(out), env={"SHARDTRAIN_DATA": "/nonexistent"})
    assert res.returncode == 0, res.stderr[-3000:]
    return out, res


def test_demo_runs_offline_and_reports(demo):
    out, res = demo
    (run_dir,) = list((out / "runs").iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.9
    for key in ("precision_macro", "recall_macro", "f1_macro", "coverage", "loss", "confusion_matrix"):
        assert key in metrics["test"]
    for name in ("config.yaml", "learning_curves.png", "confusion_matrix.png", "logs/metrics.csv",
                 "checkpoints/last.ckpt"):
        assert (run_dir / name).exists(), name
    assert "accuracy" in res.stdout and "test" in res.stdout  # the summary table
    assert (out / "shards" / "augment" / "train" / "_preview.png").exists()


# What a normal run hides and --debug shows (shardtrain.core.offline.NOISY_*).
THIRD_PARTY_NOISE = ("💡 Tip", "LeafSpec", "Token authentication is enabled")


def test_a_normal_run_has_no_third_party_noise(demo):
    _, res = demo
    for text in THIRD_PARTY_NOISE:
        assert text not in res.stderr, text
    assert "GPU available" in res.stderr  # Lightning's own lines stay: the filters are targeted


def test_debug_shows_third_party_noise(demo, tmp_path):
    out, _ = demo
    copy = tmp_path / "out"
    shutil.copytree(out / "shards", copy / "shards")
    res = run_cli("run", "demo", "--stage", "train", "--executor", "local", "--out", str(copy),
                  "--set", "train.max_epochs=1", "--debug")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "💡 Tip" in res.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "demo", "--set", "train.max_epoch=2"], "error: unknown config key 'train.max_epoch'"),
        (["run", "demo", "--set", "data.batch_size=big"], "error: config key 'data.batch_size': expected an integer"),
        (["run", "fashion-mnist", "--stage", "prepare", "--data-dir", "/nonexistent"], "error: dataset fashion-mnist: missing"),
        (["run", "no-such-thing"], "error: 'no-such-thing' is neither a config file nor a preset"),
        (["run", "demoo"], "error: 'demoo' is neither a config file nor a preset; did you mean 'demo'?"),
        (["run", "./missing.yaml"], "error: missing.yaml: config file not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    res = run_cli(*args, "--executor", "local", "--out", str(tmp_path), env={"SHARDTRAIN_DATA": "/nonexistent"})
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(message), res.stderr
    assert "Traceback" not in res.stderr


def test_debug_shows_the_traceback(tmp_path):
    res = run_cli("--debug", "run", "demo", "--set", "train.max_epoch=2", "--out", str(tmp_path))
    assert res.returncode != 0 and "Traceback" in res.stderr


def test_train_refuses_shards_that_fail_verification(demo, tmp_path):
    out, _ = demo
    copy = tmp_path / "out"
    shutil.copytree(out / "shards", copy / "shards")
    shard = sorted((copy / "shards" / "prepare" / "test").glob("part-*.arrow"))[0]
    data = bytearray(shard.read_bytes())
    data[-64] ^= 0xFF
    shard.write_bytes(bytes(data))
    res = run_cli("run", "demo", "--stage", "train", "--executor", "local", "--out", str(copy))
    assert res.returncode == 2
    assert "sha256 mismatch" in res.stderr.splitlines()[-1]


def test_train_without_shards_says_which_stage_is_missing(tmp_path):
    res = run_cli("run", "demo", "--stage", "train", "--out", str(tmp_path))
    assert res.returncode == 2
    assert "no shards here; run the data stages first" in res.stderr.splitlines()[-1]


def test_train_refuses_labels_outside_the_declared_classes(demo, tmp_path):
    out, _ = demo
    copy = tmp_path / "out"
    shutil.copytree(out / "shards", copy / "shards")
    index_path = copy / "shards" / "prepare" / "test" / "_index.json"
    index = json.loads(index_path.read_text())
    index["labels"]["label"]["classes"] = index["labels"]["label"]["classes"][:5]
    index_path.write_text(json.dumps(index))
    res = run_cli("run", "demo", "--stage", "train", "--executor", "local", "--out", str(copy),
                  "--set", "train.max_epochs=1")
    assert res.returncode == 2
    last = res.stderr.splitlines()[-1]
    assert "label" in last and "test" in last, last


def test_evaluate_stage_alone_uses_the_latest_run(demo):
    out, _ = demo
    res = run_cli("run", "demo", "--stage", "evaluate", "--executor", "local", "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "test" in res.stdout and "accuracy" in res.stdout
