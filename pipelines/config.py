"""Training configuration: frozen dataclasses loaded from YAML and overridable with ``section.key=value``.

Every value is checked before any work starts: an unknown or misspelt key names
its section's valid keys and the closest match; a wrong type or an out-of-range
value names the key and what it accepts.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Tuple

import yaml


class ConfigError(ValueError):
    """A configuration key or value that cannot be used, with the fix in the message."""


@dataclass(frozen=True)
class DataConfig:
    source: str = "digits"
    image_size: int = 32
    channels: int = 3
    batch_size: int = 64
    augment: str = "none"
    mix: Optional[str] = None
    mix_alpha: Optional[float] = None
    crop_fraction: float = 1.0
    mean: Tuple[float, ...] = (0.5,)
    std: Tuple[float, ...] = (0.5,)
    data_dir: Optional[str] = None
    train_split: str = "train"
    validation_split: str = "validation"
    test_split: str = "test"
    cache: bool = True

    def check(self):
        _positive(self, "image_size", "batch_size")
        _choice(self, "channels", (1, 3))
        _choice(self, "augment", ("none", "cifar", "alexnet", "inception", "strong"))
        _choice(self, "mix", (None, "mixup", "cutmix"))
        _range(self, "crop_fraction", 0.0, 1.0, low_open=True)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "squeezenet1_1"
    head: Optional[str] = None
    backbone_kwargs: dict = field(default_factory=dict)
    head_kwargs: dict = field(default_factory=dict)
    bn_momentum: Optional[float] = None  # None: the backbone's own (paper) value
    bn_epsilon: Optional[float] = None

    def check(self):
        import kcnn
        from kcnn.blocks.normalization import batch_norm_defaults

        builder = kcnn.backbones.BACKBONES.entry(self.name).fn  # raises with the names and the closest match
        if self.head is not None:
            kcnn.heads.HEADS.entry(self.head)
        for key in ("bn_momentum", "bn_epsilon"):
            if getattr(self, key) is None:
                continue
            if batch_norm_defaults(builder) is None:
                raise ConfigError(f"model.{key}: {self.name} has no batch norm; leave model.{key} unset")
            if key in self.backbone_kwargs:
                raise ConfigError(f"model.{key} and model.backbone_kwargs.{key} are both set; keep one")
        if self.bn_momentum is not None:
            _range(self, "bn_momentum", 0.0, 1.0, high_open=True)
        if self.bn_epsilon is not None:
            _range(self, "bn_epsilon", 0.0, 1.0, low_open=True)

    def builder_kwargs(self) -> dict:
        """``backbone_kwargs`` with the batch-norm keys that are set."""
        extra = {key: getattr(self, key) for key in ("bn_momentum", "bn_epsilon") if getattr(self, key) is not None}
        return {**self.backbone_kwargs, **extra}


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "sgd"
    learning_rate: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    step_epochs: Tuple[int, ...] = ()
    step_factor: float = 0.1
    label_smoothing: float = 0.0
    ema: Optional[float] = None
    clip_norm: Optional[float] = None
    lr_scaling: str = "none"
    base_batch_size: int = 256

    def check(self):
        _choice(self, "name", ("sgd", "adamw", "rmsprop"))
        _choice(self, "schedule", ("constant", "step", "cosine"))
        _choice(self, "lr_scaling", ("none", "linear"))
        _range(self, "learning_rate", 0.0, 10.0, low_open=True)
        _range(self, "momentum", 0.0, 1.0)
        _range(self, "weight_decay", 0.0, 1.0)
        _range(self, "label_smoothing", 0.0, 1.0, high_open=True)
        _range(self, "step_factor", 0.0, 1.0, low_open=True)
        _range(self, "warmup_epochs", 0.0, 1e6)
        _positive(self, "base_batch_size")
        if self.ema is not None:
            _range(self, "ema", 0.0, 1.0, low_open=True, high_open=True)
        if self.clip_norm is not None:
            _range(self, "clip_norm", 0.0, 1e9, low_open=True)
        if self.schedule == "step" and not self.step_epochs:
            raise ConfigError("optimizer.step_epochs must list the epochs where the rate drops when "
                              "optimizer.schedule is 'step', e.g. [30, 60, 80]")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    seed: int = 0
    precision: str = "auto"
    jit_compile: str = "auto"
    strategy: str = "auto"
    early_stopping_patience: Optional[int] = None
    steps_per_epoch: Optional[int] = None
    precise_bn_batches: int = 32  # 0: evaluate with the moving averages as training left them
    sync_bn: bool = False  # batch statistics over all replicas (several replicas only)

    def check(self):
        _positive(self, "epochs")
        _choice(self, "precision", ("auto", "float32", "mixed_float16", "mixed_bfloat16"))
        _choice(self, "jit_compile", ("auto", "true", "false"))
        _choice(self, "strategy", ("auto", "default", "mirrored", "multi_worker"))
        if self.early_stopping_patience is not None:
            _positive(self, "early_stopping_patience")
        if self.steps_per_epoch is not None:
            _positive(self, "steps_per_epoch")
        if self.precise_bn_batches < 0:
            raise ConfigError(f"train.precise_bn_batches must be >= 0 (0 turns precise batch norm off), "
                              f"got {self.precise_bn_batches}")


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(_plain(self.to_dict()), sort_keys=False)


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}


def from_dict(raw: dict | None, overrides: list[str] = ()) -> Config:
    """Build and check a :class:`Config` from nested dicts (YAML) and ``section.key=value`` overrides."""
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError("a config must be a mapping of sections (data, model, optimizer, train)")
    raw = {key: dict(value) if isinstance(value, dict) else ({} if value is None else value)
           for key, value in (raw or {}).items()}
    for override in overrides:
        path, sep, text = override.partition("=")
        section, dot, key = path.strip().partition(".")
        if not sep or not dot or not key:
            raise ConfigError(f"override {override!r} must look like section.key=value, e.g. train.epochs=5")
        _known(section, SECTIONS, "section")
        raw.setdefault(section, {})[key] = yaml.safe_load(text) if text.strip() else None
    sections = {}
    for section, values in raw.items():
        _known(section, SECTIONS, "section")
        cls = _section_class(section)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if not isinstance(values, dict):
            raise ConfigError(f"section {section!r} must be a mapping of keys to values, got {values!r}")
        for key in values:
            _known(key, fields, f"key in section {section!r}")
        hints = typing.get_type_hints(cls)
        sections[section] = cls(**{k: _coerce(f"{section}.{k}", v, hints[k]) for k, v in values.items()})
    config = Config(**sections)
    for section in SECTIONS:
        getattr(config, section).check()
    return config


def load(path: str, overrides: list[str] = ()) -> Config:
    """Read a YAML config file and apply overrides."""
    try:
        with open(path) as handle:
            raw = yaml.safe_load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} does not exist") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path!r} is not valid YAML: {error}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"config file {path!r} must hold a mapping of sections (data, model, optimizer, train)")
    return from_dict(raw, overrides)


def _section_class(section: str):
    return {"data": DataConfig, "model": ModelConfig, "optimizer": OptimizerConfig, "train": TrainConfig}[section]


def _known(name: str, valid, what: str) -> None:
    if name in valid:
        return
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown {what} {name!r}.{hint} Valid: {', '.join(valid)}")


def _coerce(key: str, value: Any, hint):
    """Check ``value`` against the field's type; accept ints for floats and lists for tuples."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (tuple, Tuple):
        items = value if isinstance(value, (list, tuple)) else [value]
        return tuple(_coerce(key, item, args[0]) for item in items)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # PyYAML (YAML 1.1) reads 1e-4 as a string: accept it
        try:
            return float(value)
        except ValueError:
            pass
    if hint is str and isinstance(value, bool):  # YAML reads true/false; jit_compile takes them as words
        return "true" if value else "false"
    if hint is dict and isinstance(value, dict):
        return dict(value)
    if isinstance(hint, type) and isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    name = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"{key} must be of type {name}, got {value!r} ({type(value).__name__})")


def _positive(obj, *names) -> None:
    for name in names:
        value = getattr(obj, name)
        if value < 1:
            raise ConfigError(f"{_section_of(obj)}.{name} must be >= 1, got {value!r}")


def _choice(obj, name, choices) -> None:
    value = getattr(obj, name)
    if value not in choices:
        raise ConfigError(f"{_section_of(obj)}.{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def _range(obj, name, low, high, *, low_open=False, high_open=False) -> None:
    value = getattr(obj, name)
    ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ConfigError(f"{_section_of(obj)}.{name} must be in {interval}, got {value!r}")


def _section_of(obj) -> str:
    return {DataConfig: "data", ModelConfig: "model", OptimizerConfig: "optimizer", TrainConfig: "train"}[type(obj)]


def _plain(value):
    """Tuples to lists, for YAML."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
