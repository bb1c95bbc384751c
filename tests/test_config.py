"""Config loading: presets, overrides, and clear errors for unknown keys and wrong types."""

from __future__ import annotations

import pytest

from shardtrain.config import PRESETS, Config, from_dict, load_config, preset_path, to_dict
from shardtrain.core.errors import ShardtrainError


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_and_round_trips(name):
    cfg = load_config(name)
    assert isinstance(cfg, Config)
    assert preset_path(name).exists()
    assert from_dict(to_dict(cfg)) == cfg


def test_overrides_are_typed():
    cfg = load_config("fashion-mnist", ["train.max_epochs=2", "model.hidden=[64, 32]", "model.dropout=0.5"])
    assert cfg.train.max_epochs == 2
    assert cfg.model.hidden == (64, 32)
    assert cfg.model.dropout == 0.5


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.max_epoch=2", "unknown config key 'train.max_epoch'"),
        ("train.max_epochs=two", "config key 'train.max_epochs': expected an integer"),
        ("model.activation=gelu", "config key 'model.activation': 'gelu' is not one of"),
        ("data.audit=3", "config key 'data.audit': expected true/false"),
        ("bogus=1", "unknown config key 'bogus'"),
        ("model.hidden=[1, x]", "config key 'model.hidden[1]'"),
    ],
)
def test_bad_keys_and_types_name_the_key(override, fragment):
    with pytest.raises(ShardtrainError) as err:
        load_config("fashion-mnist", [override])
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_config_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  max_epochs: [\n")
    with pytest.raises(ShardtrainError, match="bad.yaml: line"):
        load_config(str(bad))
    with pytest.raises(ShardtrainError, match="not found"):
        load_config(str(tmp_path / "missing.yaml"))
    with pytest.raises(ShardtrainError, match="neither a config file nor a preset"):
        load_config("no-such-preset")
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ShardtrainError, match="must be a YAML mapping"):
        load_config(str(listy))


def test_yaml_12_numbers_in_overrides_and_files(tmp_path):
    cfg = load_config("demo", ["train.lr=1e-3", "train.weight_decay=5E-4", "model.dropout=.5"])
    assert cfg.train.lr == 1e-3 and cfg.train.weight_decay == 5e-4 and cfg.model.dropout == 0.5
    path = tmp_path / "c.yaml"
    path.write_text("dataset: {name: digits}\ntrain:\n  lr: 1e-3\n  max_epochs: 3\n")
    cfg = load_config(str(path))
    assert cfg.train.lr == 1e-3 and isinstance(cfg.train.lr, float) and cfg.train.max_epochs == 3


@pytest.mark.parametrize("override, fragment", [
    ("data.batch_size=0", "config key 'data.batch_size': must be >= 1, got 0"),
    ("train.lr=-1", "config key 'train.lr': must be > 0, got -1"),
    ("train.accelerator=tpux", "config key 'train.accelerator': 'tpux' is not one of"),
    ("model.dropout=1.5", "config key 'model.dropout': must be >= 0 and < 1, got 1.5"),
    ("model.dropout=-0.1", "config key 'model.dropout': must be >= 0 and < 1, got -0.1"),
    ("data.val_fraction=1", "config key 'data.val_fraction': must be >= 0 and < 1, got 1"),
    ("train.max_epochs=-2", "config key 'train.max_epochs': must be >= -1"),
    ("evaluate.coverage_threshold=2", "config key 'evaluate.coverage_threshold': must be >= 0 and <= 1"),
    ("prepare.rows_per_shard=0", "config key 'prepare.rows_per_shard': must be >= 1"),
    ("augment.text.alpha_sr=2", "config key 'augment.text.alpha_sr'"),
    ("model.kind=tree", "config key 'model.kind': 'tree' is not one of 'mlp', 'bagging', 'multitask'"),
    ("dataset.name=nope", "config key 'dataset.name': 'nope' is not one of"),
    ("dataset.name=oewn-2025", "'oewn-2025' is a resource"),
])
def test_value_ranges_are_checked_at_load(override, fragment):
    with pytest.raises(ShardtrainError) as err:
        load_config("fashion-mnist", [override])
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_model_union_per_kind_and_kind_change_revalidates():
    from shardtrain.config import BaggingConfig, MLPConfig, MultitaskConfig

    assert type(from_dict({}).model) is MLPConfig  # kind defaults to mlp
    cfg = load_config("fashion-mnist", ["model.kind=bagging", "model.members=3"])
    assert isinstance(cfg.model, BaggingConfig) and cfg.model.members == 3 and cfg.model.impl == "auto"
    assert isinstance(load_config("fashion-mnist-multitask").model, MultitaskConfig)
    with pytest.raises(ShardtrainError, match="unknown config key 'model.task_weighting'"):
        load_config("fashion-mnist-multitask", ["model.kind=mlp"])  # multitask keys do not apply to an mlp
    with pytest.raises(ShardtrainError, match="unknown config key 'model.members'"):
        load_config("fashion-mnist", ["model.members=3"])


def test_dataset_union_checks_options_per_name():
    cfg = load_config("fashion-mnist-multitask")
    assert cfg.dataset.options.coarse is True
    with pytest.raises(ShardtrainError, match="unknown config key 'dataset.options.coarse'"):
        load_config("fashion-mnist-multitask", ["dataset.name=mnist"])
    with pytest.raises(ShardtrainError, match=r"did you mean 'dataset.options.val_fraction'\?"):
        load_config("kdd99", ["dataset.options.val_fractio=0.2"])
    with pytest.raises(ShardtrainError, match="only applies to image datasets"):
        load_config("kdd99", ["prepare.features=handcrafted"])
    with pytest.raises(ShardtrainError, match="only applies to text datasets"):
        load_config("kdd99", ["prepare.text.bits=10"])
    with pytest.raises(ShardtrainError, match="has no augment stage"):
        load_config("nasa-http", ["augment.copies=1"])


def test_replace_revalidates_and_presets_describe_themselves():
    from shardtrain.config import describe_presets, replace

    cfg = load_config("demo")
    assert replace(cfg, train={"max_epochs": 2}).train.max_epochs == 2
    assert replace(cfg, model={"kind": "bagging"}).model.members == 8
    assert replace(cfg.train, lr=0.5).lr == 0.5
    with pytest.raises(ShardtrainError, match="data.batch_size"):
        replace(cfg, data={"batch_size": -3})
    assert all(desc and "\n" not in desc for _, desc in describe_presets())
