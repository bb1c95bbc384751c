"""Typed configuration: frozen pydantic models loaded from YAML 1.2, validated at load.

A config is one YAML document (or a preset shipped in ``pipelines/presets``) mapped
onto the models below. ``dataset`` is one union member per ``dataset.name`` (each
dataset kind's own options, see ``shardtrain.datasets``) and ``model`` one per
``model.kind``. Everything that can be checked from the config alone is checked at
load (value ranges, unknown keys, options that do not apply to the dataset), and every
failure is one ``ShardtrainError`` line naming the dotted key, the value and what is
allowed. ``--set a.b=value`` overrides are parsed as YAML 1.2 scalars (``1e-3`` is a
number) and validated the same way. The resolved config is written beside every shard
set and every run.
"""

from __future__ import annotations

import copy
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, model_validator

from shardtrain.augment.text import TextAugmentConfig
from shardtrain.core.errors import ShardtrainError
from shardtrain.core.validation import (Fraction, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt,
                                        in_range, tagged_union, validate)
from shardtrain.datasets import DATASETS, RESOURCES, Dataset
from shardtrain.features.image import HandcraftedOptions
from shardtrain.features.text import TextFeatureConfig


class Section(BaseModel):
    """Base of every config section: frozen, and unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class PrepareConfig(Section):
    """The prepare stage: read raw files, extract features, write shards.

    ``rows_per_shard`` fixes shard boundaries from the data alone (row i of a split
    goes to shard ``i // rows_per_shard``), which is what makes the Ray and the
    in-process executors write byte-identical shards. ``features`` and
    ``handcrafted`` apply to image datasets, ``text`` to text datasets.
    """

    features: Literal["pixels", "handcrafted"] = "pixels"
    handcrafted: HandcraftedOptions = HandcraftedOptions()
    text: TextFeatureConfig = TextFeatureConfig()
    rows_per_shard: PositiveInt = 10000
    batch_rows: PositiveInt = 2048
    max_reject_fraction: Fraction = 0.01
    # The byte ranges a task reads itself (shardtrain.shards.blocks): the driver plans, never reads.
    # Statistics are merged block by block in input order, so the output depends on this
    # number (it is in the fingerprint) and never on the executor or the cluster's size.
    block_bytes: PositiveInt = 32 << 20
    # Partitions of a shuffle (the http-log's sessionisation by host), fixed here rather than by
    # the cluster for the same reason.
    shuffle_partitions: PositiveInt = 16
    # A user's batch function "package.module:function", fn(batch, ctx) -> batch, run after
    # the kind's own transform in every shard task (shardtrain.stages.usermap).
    map: str | None = None
    map_options: dict[str, Any] = {}


class AugmentConfig(Section):
    """The augment stage: ``copies`` augmented copies of each training row beside the original.

    ``pipeline`` is an albumentations pipeline in albumentations' own dict form
    (``A.to_dict``, image datasets); ``text`` configures EDA or nlpaug (text datasets).
    Validation and test splits are never augmented.
    """

    copies: NonNegativeInt = 0
    pipeline: dict[str, Any] | None = None
    text: TextAugmentConfig = TextAugmentConfig()
    preview: NonNegativeInt = 8
    map: str | None = None
    map_options: dict[str, Any] = {}


class BatchAugmentConfig(Section):
    """Cheap on-device augmentation of dense image batches during training (seeded)."""

    enabled: bool = False
    shift: NonNegativeInt = 2
    flip: bool = False
    noise_std: NonNegativeFloat = 0.0
    erase: Fraction = 0.0


class DataConfig(Section):
    """How ``ShardDataModule`` feeds the shards to training.

    ``source`` picks the training shards (``auto`` = augment when it ran, else
    prepare); ``val_fraction`` carves a validation split from train (by source id,
    so augmented copies never leak) when the dataset has none. ``batch_size`` is rows
    per rank per step, or ``auto``: resolved at train time from the training rows and
    the ranks (the largest power of two <= 512 that still gives ~100 optimizer steps per
    epoch, at least 16; ``shardtrain.data.datamodule.auto_batch_size``), and recorded
    as a number in the run's ``config.yaml``.
    """

    source: Literal["auto", "prepare", "augment"] = "auto"
    batch_size: Union[PositiveInt, Literal["auto"]] = "auto"
    eval_batch_size: PositiveInt = 4096
    device_cache: Literal["auto", "gpu", "cpu", "none"] = "auto"
    val_fraction: Annotated[float, in_range(ge=0, lt=1)] = 0.1
    audit: bool = False
    batch_augment: BatchAugmentConfig = BatchAugmentConfig()


class MLPConfig(Section):
    """A plain MLP (an EmbeddingBag in front of it for sparse text features)."""

    kind: Literal["mlp"] = "mlp"
    hidden: tuple[PositiveInt, ...] = (512, 512)
    dropout: Annotated[float, in_range(ge=0, lt=1)] = 0.0
    activation: Literal["relu", "softplus", "sigmoid", "tanh"] = "relu"
    embed_dim: PositiveInt = 64
    seed: int = 0


class BaggingConfig(MLPConfig):
    """A bagging ensemble of ``members`` MLPs, each member's bootstrap a function of (seed, member, sample_id)."""

    kind: Literal["bagging"] = "bagging"  # type: ignore[assignment]
    members: PositiveInt = 8
    bootstrap: Literal["poisson", "none"] = "poisson"
    impl: Literal["auto", "vmap", "bmm", "sequential"] = "auto"


class MultitaskConfig(MLPConfig):
    """One trunk with a head per label column; losses weighted equally, statically or by learned uncertainty."""

    kind: Literal["multitask"] = "multitask"  # type: ignore[assignment]
    task_weighting: Literal["equal", "static", "uncertainty"] = "equal"
    task_weights: dict[str, NonNegativeFloat] = {}


ModelConfig = Union[MLPConfig, BaggingConfig, MultitaskConfig]
_ModelField = tagged_union("kind", {"mlp": MLPConfig, "bagging": BaggingConfig, "multitask": MultitaskConfig},
                           default="mlp")
DatasetConfig = Union[tuple(DATASETS.values())]  # type: ignore[valid-type]
_DatasetField = tagged_union("name", DATASETS)
_Epochs = Annotated[int, in_range(ge=-1)]  # -1: no limit (Lightning's convention)


class TrainConfig(Section):
    """Optimisation and Trainer options (passed through to Lightning where they exist).

    ``cpu_threads`` is torch's intra-op thread count when training on CPU; 0 means the
    machine's cores divided among the processes of this node (DDP ranks). ``steps_per_call``
    is how many batches (optimizer steps) one Lightning ``training_step`` call takes; 0
    means auto (16 with the local launcher, 1 with Ray Train). ``gradient_clip_norm`` > 0
    clips the global gradient norm before every optimizer step. ``max_epochs`` and
    ``max_steps`` are >= 1, or -1 for no limit.
    """

    max_epochs: _Epochs = 10
    max_steps: _Epochs = -1
    optimizer: Literal["sgd", "adam", "adamw", "rmsprop", "adadelta"] = "adamw"
    lr: PositiveFloat = 1e-3
    momentum: Annotated[float, in_range(ge=0, lt=1)] = 0.9
    weight_decay: NonNegativeFloat = 0.0
    l1: NonNegativeFloat = 0.0
    l2: NonNegativeFloat = 0.0
    schedule: Literal["none", "onecycle", "cosine"] = "none"
    loss: Literal["auto", "cross_entropy", "mse"] = "auto"
    early_stopping_patience: NonNegativeInt = 0
    # The validation metric that picks the evaluated checkpoint and drives early stopping:
    # auto = val_accuracy (max) for classification, val_loss (min) for regression.
    monitor: Literal["auto", "val_loss", "val_accuracy"] = "auto"
    monitor_mode: Literal["auto", "min", "max"] = "auto"
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps", "tpu"] = "auto"  # Lightning's registry + auto/gpu
    devices: Union[Annotated[int, in_range(ge=-1)], str] = 1
    strategy: str = "auto"
    precision: Literal["transformer-engine", "transformer-engine-float16", "16-true", "16-mixed", "bf16-true",
                       "bf16-mixed", "32-true", "64-true"] = "32-true"
    log_every_n_steps: PositiveInt = 50
    cpu_threads: NonNegativeInt = 0
    checkpoint_every_n_steps: NonNegativeInt = 0
    steps_per_call: NonNegativeInt = 0
    gradient_clip_norm: NonNegativeFloat = 0.0
    # Loss weight per class, keys "<task>:<class>" ("<class>" alone for one task), e.g.
    # {"attack:attack": 4.0}: a cost-sensitive loss (a missed attack costs more than a false
    # alarm); a row's weight is the product over its tasks. Unnamed classes weigh 1.
    class_weights: dict[str, PositiveFloat] = {}
    launcher: Literal["local", "ray"] = "local"
    num_workers: PositiveInt = 2
    use_gpu: bool = False
    max_failures: Annotated[int, in_range(ge=-1)] = 0
    storage_path: str | None = None
    resume: str | None = None
    # Experiment loggers, one or a list (shardtrain.training.loggers); values checked at load.
    logger: Union[Literal["csv", "tensorboard", "mlflow"], list[Literal["csv", "tensorboard", "mlflow"]]] = "csv"

    @model_validator(mode="after")
    def _epochs_not_zero(self) -> TrainConfig:
        """0 epochs or steps trains nothing; say so at load rather than after the data stages."""
        for key in ("max_epochs", "max_steps"):
            if getattr(self, key) == 0:
                raise ShardtrainError(f"config key 'train.{key}': must be >= 1 or -1 (no limit), got 0")
        return self


class EvaluateConfig(Section):
    """Evaluation options: the probability threshold for the coverage metric."""

    coverage_threshold: Fraction = 0.9


class StorageConfig(Section):
    """Object-store settings for URIs (``s3://...``) in ``--out``, ``--data-dir`` and dataset paths.

    Credentials never go here: they come from the standard AWS variables and config
    files. ``endpoint_override`` points ``s3://`` at an S3-compatible store
    (``http://127.0.0.1:9000``); ``region`` overrides the AWS region.
    """

    endpoint_override: str | None = None
    region: str | None = None


class Config(Section):
    """A whole shardtrain run: dataset, stages, data feeding, model and training.

    The cross-section checks (an option that does not apply to the dataset kind, an
    augment stage the dataset has no transform for) run here, so they fail at load.
    """

    name: str = "custom"
    description: str = ""
    seed: int = 0
    dataset: _DatasetField = DATASETS["fashion-mnist"]()
    prepare: PrepareConfig = PrepareConfig()
    augment: AugmentConfig = AugmentConfig()
    data: DataConfig = DataConfig()
    model: _ModelField = MLPConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    storage: StorageConfig = StorageConfig()

    @model_validator(mode="after")
    def _applies_to_dataset(self) -> Config:
        """Refuse options the dataset kind would silently ignore."""
        ds, name = self.dataset, self.dataset.name
        defaults = {"prepare.features": "pixels", "prepare.handcrafted": HandcraftedOptions(),
                    "augment.pipeline": None, "prepare.text": TextFeatureConfig(), "augment.text": TextAugmentConfig()}
        applies = {"prepare.features": "image", "prepare.handcrafted": "image", "augment.pipeline": "image",
                   "prepare.text": "text", "augment.text": "text"}
        for key, modality in applies.items():
            section, field = key.split(".")
            value = getattr(getattr(self, section), field)
            if ds.modality != modality and value != defaults[key]:
                raise ShardtrainError(f"config key '{key}': only applies to {modality} datasets, and dataset "
                                      f"'{name}' is {ds.modality} data (remove the key)")
        if self.augment.copies > 0:
            if not ds.augmentable:
                raise ShardtrainError(f"config key 'augment.copies': dataset '{name}' has no augment stage "
                                      f"(no label-preserving transform for {ds.modality} data), got "
                                      f"{self.augment.copies}; set 0")
        if self.data.source == "augment" and self.augment.copies == 0:
            raise ShardtrainError("config key 'data.source': 'augment' needs augment.copies >= 1, got copies 0")
        return self


PRESETS = ("demo", "fashion-mnist", "fashion-mnist-multitask", "fashion-mnist-bagging", "sms-spam", "sms-spam-best", "kdd99",
           "nasa-http")


class _Yaml12Loader(yaml.SafeLoader):
    """``safe_load`` with YAML 1.2 floats: ``1e-3`` and ``1E5`` are numbers (PyYAML's 1.1 wants ``1.0e-3``)."""


_Yaml12Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _first in "-+0123456789.":
    _Yaml12Loader.yaml_implicit_resolvers[_first] = [
        (tag, rx) for tag, rx in _Yaml12Loader.yaml_implicit_resolvers.get(_first, [])
        if tag != "tag:yaml.org,2002:float"]
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def yaml_load(text: str) -> Any:
    """Parse YAML with ``SafeLoader`` semantics and YAML 1.2 numbers."""
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass


def to_dict(cfg: Any) -> dict[str, Any]:
    """The plain, YAML-safe form of a config or section (tuples become lists); round-trips through from_dict."""
    return cfg.model_dump(mode="json")


def from_dict(data: dict[str, Any]) -> Config:
    """Validate a raw mapping into a ``Config``, or raise one ShardtrainError line naming the key."""
    if not isinstance(data, dict):
        raise ShardtrainError(f"config: expected a mapping, got {type(data).__name__}")
    name = (data.get("dataset") or {}).get("name") if isinstance(data.get("dataset"), dict) else None
    if name in RESOURCES:
        raise ShardtrainError(f"config key 'dataset.name': {name!r} is a resource ({RESOURCES[name].description}), "
                              f"not a labelled dataset; datasets: {', '.join(DATASETS)}")
    kind = DATASETS.get(name if isinstance(name, str) else "fashion-mnist")
    if kind is not None and kind.recipe:
        data = _under(kind.recipe, data)
    return validate(Config, data)


def _under(recipe: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the dataset kind's recipe filled in wherever ``data`` leaves a key unset.

    A section ``data`` sets as a whole to something other than a mapping (a typed value,
    ``null``) is taken as it is. Re-validating a resolved config changes nothing: every
    recipe key is then already set.
    """
    out = dict(data)
    for key, value in recipe.items():
        if key not in out:
            out[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = _under(value, out[key])
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into its key path and its YAML-1.2-parsed value."""
    if "=" not in item:
        raise ShardtrainError(f"--set '{item}': expected key=value")
    key, raw = item.split("=", 1)
    if key.strip() == "":
        raise ShardtrainError(f"--set '{item}': empty key")
    try:
        value = yaml_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of the raw config mapping with ``key=value`` overrides applied."""
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
    """Read one YAML mapping (safe, YAML 1.2 numbers), failing with the file name on bad YAML."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ShardtrainError(f"{path}: cannot read config ({exc.strerror})") from None
    try:
        data = yaml_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ShardtrainError(f"{path}:{where} invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ShardtrainError(f"{path}: a config must be a YAML mapping, got {type(data).__name__}")
    return data


CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def is_config_path(config_or_preset: str) -> bool:
    """A path is a path: it contains a directory separator or ends in ``.yaml``/``.yml``/``.json``;
    anything else is a preset name, even when a file or folder of that name exists here."""
    text = str(config_or_preset)
    return "/" in text or "\\" in text or text.lower().endswith(CONFIG_SUFFIXES)


def load_raw(config_or_preset: str) -> dict[str, Any]:
    """Read a config file, or a preset by name, into a raw mapping (no validation yet).

    ``is_config_path`` decides which: a bare name is always a preset, so a folder called
    ``demo`` never hides the preset (``./demo.yaml`` or ``./demo`` names a file).
    """
    import difflib

    if is_config_path(config_or_preset):
        path = Path(config_or_preset).expanduser()
        if not path.exists():
            raise ShardtrainError(f"{path}: config file not found")
        if not path.is_file():
            raise ShardtrainError(f"{path}: not a config file (a directory)")
        data = read_yaml(path)
        data.setdefault("name", path.stem)
        return data
    if config_or_preset not in PRESETS:
        close = difflib.get_close_matches(config_or_preset, PRESETS, n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ShardtrainError(
            f"'{config_or_preset}' is neither a config file nor a preset{hint} (presets: {', '.join(PRESETS)}; "
            f"a config file path contains '/' or ends in .yaml/.yml/.json, e.g. ./{config_or_preset}.yaml)")
    data = read_yaml(preset_path(config_or_preset))
    data.setdefault("name", config_or_preset)
    return data


def load_config(config_or_preset: str, overrides: list[str] | None = None) -> Config:
    """Load, override and validate a config; raises ShardtrainError naming any bad key."""
    return from_dict(apply_overrides(load_raw(config_or_preset), overrides or []))


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` merged in, section by section (a typed value replaces its section)."""
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        elif isinstance(value, BaseModel):
            out[key] = value.model_dump(mode="json")
        else:
            out[key] = value
    return out


def replace(cfg: Any, **changes: Any) -> Any:
    """A re-validated copy with nested changes, e.g. ``replace(cfg, train={"max_epochs": 2})``.

    Works on a whole ``Config`` or one section; changing ``model.kind`` re-validates the
    model section as the new kind.
    """
    merged = _merge(to_dict(cfg), changes)
    return from_dict(merged) if isinstance(cfg, Config) else validate(type(cfg), merged)


def describe_presets() -> list[tuple[str, str]]:
    """Each preset's name and its one-line ``description``."""
    return [(name, str(load_raw(name).get("description", ""))) for name in PRESETS]


__all__ = [
    "AugmentConfig", "BaggingConfig", "BatchAugmentConfig", "Config", "DataConfig", "Dataset", "DatasetConfig",
    "EvaluateConfig", "StorageConfig", "MLPConfig", "ModelConfig", "MultitaskConfig", "PRESETS", "PrepareConfig", "TrainConfig",
    "CONFIG_SUFFIXES", "apply_overrides", "describe_presets", "from_dict", "is_config_path", "load_config", "load_raw",
    "parse_override", "preset_path", "read_yaml", "replace", "to_dict", "yaml_load",
]
