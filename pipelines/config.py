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

from pipelines import choices


def key(default=dataclasses.MISSING, help: str = "", *, factory=dataclasses.MISSING):
    """A config key: its default and the one-line description docs/config.md is generated from."""
    return field(default=default, default_factory=factory, metadata={"help": help})


class ConfigError(ValueError):
    """A configuration key or value that cannot be used, with the fix in the message."""


@dataclass(frozen=True)
class DataConfig:
    source: str = key("digits", "where images come from: digits, shapes, scenes, tfds:NAME, folder:PATH, "
                                "tfrecord:GLOB ({split} in the glob becomes the split name); detection: also "
                                "coco:ROOT (annotations/instances_<split>.json beside the image folder); "
                                "super_resolution: photos")
    image_size: int = key(32, "side of the square model input, in pixels")
    channels: int = key(3, "1 (grey) or 3 (RGB); files are decoded to RGB and converted by luminance")
    batch_size: int = key(64, "global batch size (divided over the replicas)")
    augment: str = key("none", "training augmentation preset: none, cifar, alexnet, inception or strong")
    mix: Optional[str] = key(None, "mixup or cutmix on training batches (labels become soft), or null")
    mix_alpha: Optional[float] = key(None, "Beta(alpha, alpha) of the mix; null: the paper's value (0.2 MixUp, 1.0 "
                                           "CutMix)")
    crop_fraction: Optional[float] = key(None, "share of the resized image the evaluation centre crop keeps (0.875: "
                                               "224 of 256); null: the pretrained weights' (model.weights), else 1.0")
    mean: Optional[Tuple[float, ...]] = key(None, "per-channel mean subtracted from [0, 1] pixels (one value or one "
                                                  "per channel); null: the pretrained weights', else 0.5")
    std: Optional[Tuple[float, ...]] = key(None, "per-channel standard deviation pixels are divided by; null: the "
                                                 "pretrained weights', else 0.5")
    data_dir: Optional[str] = key(None, "TFDS data directory (default $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    train_split: str = key("train", "split trained on (the only one augmented)")
    validation_split: str = key("validation", "split evaluated after every epoch (picks the best model)")
    test_split: str = key("test", "split of the final test figures and of kcnn evaluate")
    cache: bool = key(True, "keep decoded (or encoded) source elements in memory after the first epoch")
    download: bool = key(False, "let TFDS download and prepare a tfds:NAME data set that is not there yet")
    bad_files: str = key("error", "undecodable files in a folder source: error (stop, naming them) or skip (leave "
                                  "out, logged)")
    split_fractions: Tuple[float, ...] = key((0.8, 0.1, 0.1), "train, validation and test shares of a folder source "
                                                             "without split subfolders (split by class)")
    split_seed: int = key(0, "seed of that split: the same seed gives the same files in each split")

    def check(self):
        _positive(self, "image_size", "batch_size")
        _choice(self, "channels", choices.CHANNELS)
        _choice(self, "augment", choices.AUGMENT_PRESETS)
        _choice(self, "mix", (None, *choices.MIXES))
        _choice(self, "bad_files", choices.BAD_FILE_POLICIES)
        if self.crop_fraction is not None:
            _range(self, "crop_fraction", 0.0, 1.0, low_open=True)
        fractions = self.split_fractions
        if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6 or fractions[0] == 0:
            raise ConfigError(f"data.split_fractions must be three shares (train, validation, test) >= 0 summing "
                              f"to 1 with train > 0, e.g. [0.8, 0.1, 0.1]; got {list(fractions)}")


@dataclass(frozen=True)
class ModelConfig:
    task: str = key("classification", "what the model learns: classification, segmentation, super_resolution or "
                                      "detection (pipelines/tasks)")
    name: str = key("squeezenet1_1", "registered backbone (`kcnn models` lists them); super_resolution: espcn, "
                                     "srcnn")
    head: Optional[str] = key(None, "head name (fully_conv, gap_linear, dense, segmentation, fcos); null: the "
                                    "paper's head (the task's for segmentation and detection)")
    backbone_kwargs: dict = key(factory=dict, help="keyword arguments of the backbone builder, e.g. {width: 0.5}")
    head_kwargs: dict = key(factory=dict, help="keyword arguments of the head builder, e.g. {dropout: 0.2}")
    weights: Optional[str] = key(None, "fine-tuning: start from imagenet, a checkpoint file or a previous run "
                                       "directory; null: random initialisation")
    freeze: str = key("none", "fine-tuning: none, backbone, or a layer name (that layer and all before it)")
    bn_momentum: Optional[float] = key(None, "batch-norm momentum of every BN layer (Keras' convention: weight of "
                                             "the old average); null: the backbone's paper value")
    bn_epsilon: Optional[float] = key(None, "batch-norm epsilon of every BN layer; null: the backbone's paper value")
    task_options: dict = key(factory=dict, help="the task's own options: segmentation {dice_weight: 0.5}; "
                                                "super_resolution {scale: 3}; detection {score_threshold, "
                                                "iou_threshold, max_detections, center_radius, size_boundaries}")

    def check(self):
        from kcnn.blocks.normalization import batch_norm_defaults
        from pipelines.tasks import get_task

        try:
            task = get_task(self.task)
        except ValueError as error:  # the task names and the closest match
            raise ConfigError(f"model.task: {error}") from None
        task.resolve_options(self.task_options)
        builder = task.check_model(self)  # looked up in the registry the task builds from
        if not isinstance(self.freeze, str) or not self.freeze:
            raise ConfigError("model.freeze must be 'none', 'backbone' or a layer name")
        for option in ("bn_momentum", "bn_epsilon"):
            if getattr(self, option) is None:
                continue
            if batch_norm_defaults(builder) is None:
                raise ConfigError(f"model.{option}: {self.name} has no batch norm; leave model.{option} unset")
            if option in self.backbone_kwargs:
                raise ConfigError(f"model.{option} and model.backbone_kwargs.{option} are both set; keep one")
        if self.bn_momentum is not None:
            _range(self, "bn_momentum", 0.0, 1.0, high_open=True)
        if self.bn_epsilon is not None:
            _range(self, "bn_epsilon", 0.0, 1.0, low_open=True)

    def builder_kwargs(self) -> dict:
        """``backbone_kwargs`` with the batch-norm keys that are set."""
        extra = {option: getattr(self, option) for option in ("bn_momentum", "bn_epsilon")
                 if getattr(self, option) is not None}
        return {**self.backbone_kwargs, **extra}


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = key("sgd", "sgd, adamw or rmsprop")
    learning_rate: float = key(0.1, "peak learning rate (per base_batch_size images with lr_scaling linear)")
    momentum: float = key(0.9, "momentum of sgd and rmsprop")
    nesterov: bool = key(False, "Nesterov momentum (sgd)")
    weight_decay: float = key(0.0, "decoupled weight decay (the optimizer's weight_decay)")
    schedule: str = key("cosine", "learning-rate schedule after warm-up: constant, step or cosine")
    warmup_epochs: float = key(0.0, "epochs of linear warm-up from 0 to the learning rate")
    step_epochs: Tuple[int, ...] = key((), "epochs where the step schedule multiplies the rate by step_factor")
    step_factor: float = key(0.1, "factor of each step of the step schedule")
    label_smoothing: float = key(0.0, "e in targets (1 - e) y + e / K of the cross-entropy")
    ema: Optional[float] = key(None, "decay of an exponential moving average of the weights, used as the final "
                                     "weights; null: off")
    clip_norm: Optional[float] = key(None, "clip the global gradient norm to this value; null: off")
    agc_clip: Optional[float] = key(None, "adaptive gradient clipping (Brock et al. 2021): clip each unit's gradient "
                                          "to this fraction of its weight norm, e.g. 0.01; null: off")
    lr_scaling: str = key("none", "none, or linear: learning_rate * batch_size / base_batch_size (Goyal et al. 2017)")
    base_batch_size: int = key(256, "batch size the learning rate is given for under linear scaling")
    backbone_lr_multiplier: float = key(1.0, "fine-tuning: the backbone's learning rate relative to the head's")

    def check(self):
        _choice(self, "name", choices.OPTIMIZERS)
        _choice(self, "schedule", choices.SCHEDULES)
        _choice(self, "lr_scaling", choices.LR_SCALINGS)
        _range(self, "learning_rate", 0.0, 10.0, low_open=True)
        _range(self, "momentum", 0.0, 1.0)
        _range(self, "weight_decay", 0.0, 1.0)
        _range(self, "label_smoothing", 0.0, 1.0, high_open=True)
        _range(self, "step_factor", 0.0, 1.0, low_open=True)
        _range(self, "warmup_epochs", 0.0, 1e6)
        _positive(self, "base_batch_size")
        _range(self, "backbone_lr_multiplier", 0.0, 1e3)
        if self.backbone_lr_multiplier != 1.0 and self.name != "sgd":
            raise ConfigError("optimizer.backbone_lr_multiplier scales gradients, which sets the step size only for "
                              "sgd (adaptive optimizers undo a gradient scale); use optimizer.name=sgd or leave it 1.0")
        if self.ema is not None:
            _range(self, "ema", 0.0, 1.0, low_open=True, high_open=True)
        if self.clip_norm is not None:
            _range(self, "clip_norm", 0.0, 1e9, low_open=True)
        if self.agc_clip is not None:
            _range(self, "agc_clip", 0.0, 1e9, low_open=True)
        if self.schedule == "step" and not self.step_epochs:
            raise ConfigError("optimizer.step_epochs must list the epochs where the rate drops when "
                              "optimizer.schedule is 'step', e.g. [30, 60, 80]")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = key(10, "epochs to train")
    seed: int = key(0, "seed of weights, shuffling and augmentation")
    precision: str = key("auto", "auto (mixed_float16 on GPUs with tensor cores, else float32), float32, "
                                 "mixed_float16 or mixed_bfloat16")
    jit_compile: str = key("auto", "XLA for the training step: auto (on GPUs), true or false")
    strategy: str = key("auto", "tf.distribute strategy: auto, default, mirrored or multi_worker (TF_CONFIG)")
    early_stopping_patience: Optional[int] = key(None, "stop after this many epochs without a better validation "
                                                       "accuracy; null: never")
    steps_per_epoch: Optional[int] = key(None, "cap on the steps of an epoch (quick runs); null: the whole training "
                                               "split")
    unfreeze_at_epoch: Optional[int] = key(None, "fine-tuning: stage two (everything trainable) starts at this "
                                                 "0-based epoch; null: one stage")
    unfreeze_learning_rate: Optional[float] = key(None, "stage two's peak learning rate; null: optimizer.learning_rate")
    precise_bn_batches: int = key(32, "re-estimate batch-norm statistics over this many training batches before "
                                      "each evaluation (0: off; capped at the steps of an epoch)")
    sync_bn: bool = key(False, "batch statistics over all replicas while training (several replicas only)")
    prune_table: Optional[str] = key(None, "prune while training to a named density table (squeezenet_table1: "
                                           "Iandola et al. Table 1; han_alexnet_table4, han_vgg16_table5: Han et "
                                           "al.'s Deep Compression Tables 4 and 5); null: off")
    prune_density: Optional[float] = key(None, "prune every Conv2D and Dense layer to this density while training; "
                                               "null: off")
    prune_end_epoch: Optional[int] = key(None, "reach the densities gradually (Zhu and Gupta) by the end of this "
                                               "epoch; null: prune once before the first step")

    def check(self):
        _positive(self, "epochs")
        _choice(self, "precision", choices.PRECISIONS)
        _choice(self, "jit_compile", choices.JIT_COMPILE)
        _choice(self, "strategy", choices.STRATEGIES)
        if self.early_stopping_patience is not None:
            _positive(self, "early_stopping_patience")
        if self.steps_per_epoch is not None:
            _positive(self, "steps_per_epoch")
        if self.unfreeze_at_epoch is not None and not 0 < self.unfreeze_at_epoch < self.epochs:
            raise ConfigError(f"train.unfreeze_at_epoch must be between 1 and train.epochs - 1 ({self.epochs - 1}), "
                              f"got {self.unfreeze_at_epoch}")
        if self.unfreeze_learning_rate is not None:
            _range(self, "unfreeze_learning_rate", 0.0, 10.0, low_open=True)
        if self.prune_table is not None and self.prune_density is not None:
            raise ConfigError("train.prune_table and train.prune_density are both set; keep one")
        if self.prune_table is not None:
            from kcnn.compress.tables import TABLES

            _choice(self, "prune_table", tuple(sorted(TABLES)))
        if self.prune_density is not None:
            _range(self, "prune_density", 0.0, 1.0, low_open=True)
        if self.prune_end_epoch is not None and not 1 <= self.prune_end_epoch <= self.epochs:
            raise ConfigError(f"train.prune_end_epoch must be between 1 and train.epochs ({self.epochs}), "
                              f"got {self.prune_end_epoch}")
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
