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
