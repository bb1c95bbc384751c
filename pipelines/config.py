"""Typed configuration: frozen dataclasses loaded from YAML, validated at load.

A config is one YAML document (or a preset shipped in ``pipelines/presets``) mapped
onto the dataclasses below. Unknown keys and wrong types fail at load with the dotted
key, the value and what was expected, so a typo never silently falls back to a
default. ``--set a.b=value`` overrides are parsed as YAML scalars and validated the
same way. The resolved config (after overrides) is written beside every shard set and
every run.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from shardtrain.core.errors import ShardtrainError
from shardtrain.features.text import TextFeatureConfig  # prepare.text: one definition, in its module


@dataclass(frozen=True)
class DatasetConfig:
    """Which dataset to read and where its raw files are.

    ``options`` holds dataset-specific settings (validated by the dataset's reader);
    ``data_dir`` is looked in first, then ``$SHARDTRAIN_DATA``, then the user cache.
    """

    name: str = "fashion-mnist"
    data_dir: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HandcraftedConfig:
    """Options of the engineered image descriptor (intensity + orientation histograms)."""

    intensity_bins: int = 16
    orientation_bins: int = 9
    cells: int = 4


@dataclass(frozen=True)
class PrepareConfig:
    """The prepare stage: read raw files, extract features, write shards.

    ``rows_per_shard`` fixes shard boundaries from the data alone (row i of a split
    goes to shard ``i // rows_per_shard``), which is what makes the Ray and the
    in-process executors write byte-identical shards.
    """

    features: str = "pixels"
    handcrafted: HandcraftedConfig = field(default_factory=HandcraftedConfig)
    text: TextFeatureConfig = field(default_factory=TextFeatureConfig)
    rows_per_shard: int = 10000
    batch_rows: int = 2048
    max_reject_fraction: float = 0.01


@dataclass(frozen=True)
class TextAugmentConfig:
    """Text augmentation: EDA (Wei & Zou 2019 defaults) or an offline nlpaug kind with ``params``.

    ``synonyms`` is ``oewn`` (Open English WordNet, found like a dataset), ``nltk``, a
    path to a synonym dictionary, or null.
    """

    method: str = "eda"
    params: dict[str, Any] = field(default_factory=dict)
    alpha_sr: float = 0.1
    alpha_ri: float = 0.1
    alpha_rs: float = 0.1
    p_rd: float = 0.1
    synonyms: str | None = "oewn"


@dataclass(frozen=True)
class AugmentConfig:
    """The augment stage: ``copies`` augmented copies of each training row beside the original.

    ``pipeline`` is an albumentations pipeline in albumentations' own dict form
    (``A.to_dict``); ``text`` configures EDA for text datasets. Validation and test
    splits are never augmented.
    """

    copies: int = 0
    pipeline: dict[str, Any] | None = None
    text: TextAugmentConfig = field(default_factory=TextAugmentConfig)
    preview: int = 8


@dataclass(frozen=True)
class BatchAugmentConfig:
    """Cheap on-device augmentation of dense image batches during training (seeded)."""

    enabled: bool = False
    shift: int = 2
    flip: bool = False
    noise_std: float = 0.0
    erase: float = 0.0


@dataclass(frozen=True)
class DataConfig:
    """How ``ShardDataModule`` feeds the shards to training.

    ``source`` picks the training shards (``auto`` = augment when it ran, else
    prepare); ``val_fraction`` carves a validation split from train (by source id,
    so augmented copies never leak) when the dataset has none.
    """

    source: Literal["auto", "prepare", "augment"] = "auto"
    batch_size: int = 512
    eval_batch_size: int = 4096
    device_cache: Literal["auto", "gpu", "cpu", "none"] = "auto"
    val_fraction: float = 0.1
    audit: bool = False
    batch_augment: BatchAugmentConfig = field(default_factory=BatchAugmentConfig)


@dataclass(frozen=True)
class ModelConfig:
    """Which model to train: a plain MLP, a bagging ensemble or a multitask MLP."""

    kind: Literal["mlp", "bagging", "multitask"] = "mlp"
    hidden: tuple[int, ...] = (512, 512)
    dropout: float = 0.0
    activation: Literal["relu", "softplus", "sigmoid", "tanh"] = "relu"
    members: int = 8
    bootstrap: Literal["poisson", "none"] = "poisson"
    impl: Literal["auto", "vmap", "bmm", "sequential"] = "auto"
    task_weighting: Literal["equal", "static", "uncertainty"] = "equal"
    task_weights: dict[str, float] = field(default_factory=dict)
    embed_dim: int = 64
    seed: int = 0


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and Trainer options (passed through to Lightning where they exist).

    ``cpu_threads`` is torch's intra-op thread count when training on CPU; 0 means the
    machine's cores divided among the processes of this node (DDP ranks), so ranks never
    oversubscribe the cores. ``steps_per_call`` is how many batches (optimizer steps) one
    Lightning ``training_step`` call takes: Lightning's per-call overhead is then paid
    once per group; 0 means auto (16 with the local launcher, DDP included; 1 with Ray Train).
    ``gradient_clip_norm`` > 0 clips the global gradient norm before every optimizer step
    (optimisation is manual, so Lightning's ``gradient_clip_val`` does not apply).
    """

    max_epochs: int = 10
    max_steps: int = -1
    optimizer: Literal["sgd", "adam", "adamw", "rmsprop", "adadelta"] = "adamw"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    l1: float = 0.0
    l2: float = 0.0
    schedule: Literal["none", "onecycle", "cosine"] = "none"
    loss: Literal["auto", "cross_entropy", "mse"] = "auto"
    early_stopping_patience: int = 0
    accelerator: str = "auto"
    devices: Union[int, str] = 1
    strategy: str = "auto"
    precision: str = "32-true"
    log_every_n_steps: int = 50
    cpu_threads: int = 0
    checkpoint_every_n_steps: int = 0
    steps_per_call: int = 0
    gradient_clip_norm: float = 0.0
    launcher: Literal["local", "ray"] = "local"
    num_workers: int = 2
    use_gpu: bool = False
    max_failures: int = 0
    storage_path: str | None = None
    resume: str | None = None


@dataclass(frozen=True)
class EvaluateConfig:
    """Evaluation options: the probability threshold for the coverage metric."""

    coverage_threshold: float = 0.9


@dataclass(frozen=True)
class Config:
    """A whole shardtrain run: dataset, stages, data feeding, model and training."""

    name: str = "custom"
    seed: int = 0
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)


PRESETS = ("demo", "fashion-mnist", "fashion-mnist-multitask", "sms-spam", "kdd99", "nasa-http")


def _type_name(tp: Any) -> str:
    """A short human name for a type annotation, for error messages."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp`` and convert it (lists to tuples, ints to floats)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ShardtrainError(f"config key '{key}': expected a mapping, got {value!r}")
        return build_dataclass(tp, value, key)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ShardtrainError(f"config key '{key}': {value!r} is not one of {_type_name(tp)}")
        return value
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(arg, value, key)
            except ShardtrainError:
                continue
        raise ShardtrainError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is not None:
            raise ShardtrainError(f"config key '{key}': expected null, got {value!r}")
        return None
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ShardtrainError(f"config key '{key}': expected a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ShardtrainError(f"config key '{key}': expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ShardtrainError(f"config key '{key}': expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ShardtrainError(f"config key '{key}': expected a mapping, got {value!r}")
        _key_tp, val_tp = typing.get_args(tp)
        return {str(k): _coerce(val_tp, v, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ShardtrainError(f"config key '{key}': expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ShardtrainError(f"config key '{key}': expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ShardtrainError(f"config key '{key}': expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ShardtrainError(f"config key '{key}': expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {tp!r} at {key}")  # internal: a bad dataclass


def build_dataclass(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, failing on unknown keys with the dotted key."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            allowed = ", ".join(sorted(names))
            raise ShardtrainError(f"unknown config key '{dotted}' (allowed here: {allowed})")
        kwargs[key] = _coerce(hints[key], value, dotted)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The JSON/YAML-ready plain form of a config (tuples become lists)."""
    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(dataclasses.asdict(cfg))


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into its key path and its YAML-parsed value."""
    if "=" not in item:
        raise ShardtrainError(f"--set '{item}': expected key=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    if key.strip() == "":
        raise ShardtrainError(f"--set '{item}': empty key")
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of the raw config mapping with ``key=value`` overrides applied."""
    import copy

    out = copy.deepcopy(data)
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ShardtrainError(f"--set '{item}': '{part}' is not a section")
            node = child
        node[path[-1]] = value
    return out


def preset_path(name: str) -> Path:
    """The YAML file of a preset shipped inside the package."""
    return Path(str(resources.files("shardtrain") / "presets" / f"{name}.yaml"))


def read_yaml(path: Path) -> dict[str, Any]:
    """Read one YAML mapping with ``safe_load``, failing with the file name on bad YAML."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ShardtrainError(f"{path}: cannot read config ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ShardtrainError(f"{path}:{where} invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ShardtrainError(f"{path}: a config must be a YAML mapping, got {type(data).__name__}")
    return data


def load_raw(config_or_preset: str) -> dict[str, Any]:
    """Read a config file, or a preset by name, into a raw mapping (no validation yet)."""
    path = Path(config_or_preset)
    if path.suffix in (".yaml", ".yml", ".json") or path.exists():
        if not path.exists():
            raise ShardtrainError(f"{path}: config file not found")
        data = read_yaml(path)
    elif config_or_preset in PRESETS:
        data = read_yaml(preset_path(config_or_preset))
    else:
        raise ShardtrainError(
            f"'{config_or_preset}' is neither a config file nor a preset (presets: {', '.join(PRESETS)})"
        )
    data.setdefault("name", config_or_preset if config_or_preset in PRESETS else path.stem)
    return data


def load_config(config_or_preset: str, overrides: list[str] | None = None) -> Config:
    """Load, override and validate a config; raises ShardtrainError naming any bad key."""
    return from_dict(apply_overrides(load_raw(config_or_preset), overrides or []))


def from_dict(data: dict[str, Any]) -> Config:
    """Validate a raw mapping into a ``Config``."""
    return build_dataclass(Config, data)


def replace(cfg: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` for nested sections, e.g. ``replace(cfg, train={"max_epochs": 2})``."""
    updates = {}
    for key, value in changes.items():
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            updates[key] = replace(current, **value)
        else:
            updates[key] = value
    return dataclasses.replace(cfg, **updates)

