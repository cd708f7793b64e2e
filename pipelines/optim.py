"""Optimizers and learning-rate schedules from an :class:`OptimizerConfig`."""

from __future__ import annotations

import math

import keras
from keras import ops

from pipelines.config import OptimizerConfig


@keras.saving.register_keras_serializable(package="kcnn")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to ``learning_rate`` over ``warmup_steps``, then constant, step decay or cosine to zero.

    ``boundaries`` (steps) and ``factor`` give the step decay (AlexNet divided by ten
    each time); ``kind="cosine"`` decays over the steps after warm-up to ``total_steps``.
    """

    def __init__(self, learning_rate: float, total_steps: int, warmup_steps: int = 0, kind: str = "cosine",
                 boundaries=(), factor: float = 0.1):
        self.learning_rate = float(learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.kind = kind
        self.boundaries = [int(b) for b in boundaries]
        self.factor = float(factor)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        rate = ops.convert_to_tensor(self.learning_rate, "float32")
        if self.kind == "cosine":
            span = max(self.total_steps - self.warmup_steps, 1)
            progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
            rate = rate * 0.5 * (1.0 + ops.cos(math.pi * progress))
        elif self.kind == "step":
            drops = sum(ops.cast(step >= b, "float32") for b in self.boundaries) if self.boundaries else 0.0
            rate = rate * ops.power(self.factor, drops)
        if self.warmup_steps:
            warm = self.learning_rate * (step + 1.0) / self.warmup_steps
            rate = ops.where(step < self.warmup_steps, warm, rate)
        return rate

    def get_config(self):
        return {"learning_rate": self.learning_rate, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "kind": self.kind, "boundaries": self.boundaries,
                "factor": self.factor}


def effective_learning_rate(cfg: OptimizerConfig, global_batch: int) -> float:
    """The configured rate, scaled linearly with the global batch when ``lr_scaling: linear`` (Goyal et al. 2017)."""
    if cfg.lr_scaling == "linear":
        return cfg.learning_rate * global_batch / cfg.base_batch_size
    return cfg.learning_rate


def make_optimizer(cfg: OptimizerConfig, *, steps_per_epoch: int, epochs: int, global_batch: int):
    schedule = WarmupSchedule(
        effective_learning_rate(cfg, global_batch), total_steps=steps_per_epoch * epochs,
        warmup_steps=round(cfg.warmup_epochs * steps_per_epoch), kind=cfg.schedule,
        boundaries=[e * steps_per_epoch for e in cfg.step_epochs], factor=cfg.step_factor)
    common = dict(learning_rate=schedule, weight_decay=cfg.weight_decay or None, global_clipnorm=cfg.clip_norm,
                  use_ema=cfg.ema is not None, ema_momentum=cfg.ema or 0.99)
    if cfg.name == "sgd":
        return keras.optimizers.SGD(momentum=cfg.momentum, nesterov=cfg.nesterov, **common)
    if cfg.name == "adamw":
        common["weight_decay"] = cfg.weight_decay
        return keras.optimizers.AdamW(**common)
    return keras.optimizers.RMSprop(momentum=cfg.momentum, **common)
