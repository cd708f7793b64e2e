"""Fine-tuning: start from pretrained weights, freeze part of the network, unfreeze it later at its own rate.

The config keys this reads: ``model.weights`` ("imagenet", a checkpoint file, or a
previous run directory), ``model.freeze`` ("none", "backbone", or a layer name: every
layer up to and including it), ``train.unfreeze_at_epoch`` and
``train.unfreeze_learning_rate`` (the two-stage recipe: stage two is a fresh warm-up-
free schedule of its own over the remaining epochs), and
``optimizer.backbone_lr_multiplier`` (discriminative rates: backbone updates scaled
against the head's). Frozen layers have ``trainable = False``; a frozen
BatchNormalization layer then runs in inference mode, using and keeping its moving
statistics, as the Keras transfer-learning guide prescribes, and it stays frozen when
the rest of the network is unfrozen.
"""

from __future__ import annotations

import difflib
import os

import keras
from keras import ops

import kcnn
from pipelines.optim import WarmupSchedule, effective_learning_rate, make_optimizer
from pipelines.run_dir import RunDir

# Layer-name prefixes of kcnn's heads (classification and segmentation); everything else is backbone.
HEAD_PREFIXES = ("head_", "fc", "logits", "predictions", "conv_scores", "fcn_")


class FineTuneError(ValueError):
    """A fine-tuning setting that cannot be applied, with the fix in the message."""


def is_head_layer(layer) -> bool:
    return layer.name.startswith(HEAD_PREFIXES)


def build_model(model_config, num_classes: int, input_shape: tuple) -> keras.Model:
    """``kcnn.build`` from the model section, starting from ``model.weights`` when it is set."""
    weights = model_config.weights
    common = dict(num_classes=num_classes, head=model_config.head, input_shape=input_shape,
                  backbone_kwargs=model_config.builder_kwargs(), head_kwargs=dict(model_config.head_kwargs))
    if weights is None or os.path.isdir(weights):
        model = kcnn.build(model_config.name, **common)
        if weights is not None:
            copy_from_run(model, weights)
        return model
    return kcnn.build(model_config.name, weights=weights, **common)


def pretrained_normalization(model_config) -> dict:
    """The input normalisation ``model.weights`` was trained with, in [0, 1] pixel units; {} without weights.

    A pretrained checkpoint gives its own (``kcnn.weights.preprocessing``: mean, std,
    channel order and crop fraction); a previous run directory gives what that run
    recorded in its ``preprocessing.json``. Keys: mean, std, crop_fraction, channel_order.
    """
    weights = getattr(model_config, "weights", None)
    if weights is None:
        return {}
    if os.path.isdir(weights):
        run = RunDir(weights)
        if not os.path.exists(run.file(RunDir.PREPROCESSING)):
            raise FineTuneError(f"model.weights: {weights} has no {RunDir.PREPROCESSING}; point it at a finished run "
                                "directory, 'imagenet', or a checkpoint file")
        recorded = run.preprocessing()
        return {"mean": recorded.mean, "std": recorded.std, "crop_fraction": recorded.crop_fraction,
                "channel_order": recorded.channel_order}
    from kcnn.weights import checkpoint_spec

    return checkpoint_spec(model_config.name, weights).preprocessing.unit_range()


def copy_from_run(model: keras.Model, run_dir: str) -> int:
    """Copy every backbone layer's weights from the ``model.keras`` a previous run wrote; returns the count.

    The head starts afresh: it is the part a new task (new classes) replaces.
    """
    path = RunDir(run_dir).model
    if not os.path.exists(path):
        raise FineTuneError(f"model.weights: {run_dir} has no model.keras; point it at a finished run directory, "
                            "'imagenet', or a checkpoint file")
    from kcnn.files import load_keras_model  # registers kcnn's custom layers before loading

    source = load_keras_model(path, compile=False)
    theirs = {layer.name: layer for layer in source.layers}
    copied = 0
    for layer in model.layers:
        if not layer.weights:
            continue
        if is_head_layer(layer):
            continue
        other = theirs.get(layer.name)
        shapes = [tuple(w.shape) for w in layer.weights]
        if other is None or [tuple(w.shape) for w in other.weights] != shapes:
            found = None if other is None else [tuple(w.shape) for w in other.weights]
            raise FineTuneError(f"model.weights: layer {layer.name!r} (weights {shapes}) does not match the run in "
                                f"{run_dir} (found {found}); use the same model.name and backbone_kwargs as that run")
        layer.set_weights(other.get_weights())
        copied += 1
    return copied


def frozen_layers(model: keras.Model, freeze: str) -> list:
    """The layers ``model.freeze`` names: none, the backbone, or every layer up to and including a named one."""
    if freeze == "none":
        return []
    if freeze == "backbone":
        return [layer for layer in model.layers if not is_head_layer(layer)]
    names = [layer.name for layer in model.layers]
    if freeze not in names:
        close = difflib.get_close_matches(freeze, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise FineTuneError(f"model.freeze: the model has no layer {freeze!r}.{hint} Use 'none', 'backbone' or a "
                            "layer name from `kcnn analyze`")
    return model.layers[: names.index(freeze) + 1]


def apply_stage(model: keras.Model, config, epoch: int) -> None:
    """Set which layers train at ``epoch`` (0-based): frozen before ``train.unfreeze_at_epoch``, then all but BN."""
    frozen = {id(layer) for layer in frozen_layers(model, config.model.freeze)}
    unfrozen = config.train.unfreeze_at_epoch is not None and epoch >= config.train.unfreeze_at_epoch
    for layer in model.layers:
        if id(layer) in frozen:
            layer.trainable = unfrozen and not isinstance(layer, keras.layers.BatchNormalization)
        else:
            layer.trainable = True


def starts_stage_two(config, epoch: int) -> bool:
    return config.train.unfreeze_at_epoch is not None and epoch == config.train.unfreeze_at_epoch


@keras.saving.register_keras_serializable(package="kcnn")
class TwoStageSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """``first`` until ``boundary`` steps, then ``second`` counted from the boundary."""

    def __init__(self, first, second, boundary: int):
        self.first = first if isinstance(first, WarmupSchedule) else keras.optimizers.schedules.deserialize(first)
        self.second = second if isinstance(second, WarmupSchedule) else keras.optimizers.schedules.deserialize(second)
        self.boundary = int(boundary)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        return ops.where(step < self.boundary, self.first(step), self.second(ops.maximum(step - self.boundary, 0.0)))

    def get_config(self):
        return {"first": keras.optimizers.schedules.serialize(self.first),
                "second": keras.optimizers.schedules.serialize(self.second), "boundary": self.boundary}


def make_stage_optimizer(config, *, steps_per_epoch: int, epochs: int, global_batch: int):
    """The configured optimizer; with ``train.unfreeze_at_epoch`` its rate switches schedules at that epoch."""
    optimizer = make_optimizer(config.optimizer, steps_per_epoch=steps_per_epoch, epochs=epochs,
                               global_batch=global_batch)
    boundary_epoch = config.train.unfreeze_at_epoch
    if boundary_epoch is None:
        return optimizer
    cfg = config.optimizer
    first = WarmupSchedule(effective_learning_rate(cfg, global_batch), total_steps=steps_per_epoch * boundary_epoch,
                           warmup_steps=round(cfg.warmup_epochs * steps_per_epoch), kind=cfg.schedule,
                           boundaries=[e * steps_per_epoch for e in cfg.step_epochs], factor=cfg.step_factor)
    rate = config.train.unfreeze_learning_rate or config.optimizer.learning_rate
    second = WarmupSchedule(rate, total_steps=steps_per_epoch * (epochs - boundary_epoch),
                            kind=config.optimizer.schedule,
                            boundaries=[(e - boundary_epoch) * steps_per_epoch for e in config.optimizer.step_epochs
                                        if e > boundary_epoch], factor=config.optimizer.step_factor)
    optimizer.learning_rate = TwoStageSchedule(first, second, boundary_epoch * steps_per_epoch)
    return optimizer


def gradient_scales(model: keras.Model, config, variables) -> list[float]:
    """Per-variable multipliers: ``optimizer.backbone_lr_multiplier`` for backbone variables, 1 for the head.

    Scaling an SGD gradient scales its step exactly (momentum is linear in it), which
    is why the config accepts a multiplier other than 1 only with SGD.
    """
    multiplier = 1.0 if config is None else config.optimizer.backbone_lr_multiplier
    head_ids = {id(w) for layer in model.layers if is_head_layer(layer) for w in layer.weights}
    return [1.0 if id(v) in head_ids else multiplier for v in variables]
