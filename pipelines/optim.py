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


# The classifier is left unclipped, as in the paper (section 4.1): kcnn heads name it "logits" or "conv_scores".
AGC_UNCLIPPED = ("logits/", "conv_scores/")


def unitwise_norm(x):
    """Frobenius norm per output unit: per element for biases and scalars, per column of a dense
    kernel (in, out), per output channel of a convolution kernel (h, w, in, out)."""
    if len(x.shape) <= 1:
        return ops.abs(x)
    axes = tuple(range(len(x.shape) - 1))
    return ops.sqrt(ops.sum(ops.square(x), axis=axes, keepdims=True))


def adaptive_gradient_clip(grads, variables, clip: float, epsilon: float = 1e-3):
    """Adaptive gradient clipping (Brock et al., 2021, eq. 3), unit-wise.

    A unit's gradient G is rescaled to ``clip * max(||W||, epsilon) / ||G||`` times itself
    when ``||G|| / max(||W||, epsilon) > clip``, and left alone otherwise. Variables
    of the final classifier (``AGC_UNCLIPPED``) are not clipped.
    """
    clipped = []
    for grad, variable in zip(grads, variables):
        if grad is None or any(str(variable.path).startswith(p) for p in AGC_UNCLIPPED):
            clipped.append(grad)
            continue
        weight = ops.cast(variable, grad.dtype)
        max_norm = ops.maximum(unitwise_norm(weight), epsilon) * clip
        grad_norm = unitwise_norm(grad)
        scaled = grad * (max_norm / ops.maximum(grad_norm, 1e-6))
        clipped.append(ops.where(grad_norm > max_norm, scaled, grad))
    return clipped


class _AdaptiveGradientClipping:
    """Optimizer mixin: clip gradients with :func:`adaptive_gradient_clip` before every update."""

    def __init__(self, *args, agc_clip: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.agc_clip = float(agc_clip)

    def apply(self, grads, trainable_variables=None):
        variables = self._trainable_variables if trainable_variables is None else list(trainable_variables)
        return super().apply(adaptive_gradient_clip(list(grads), variables, self.agc_clip), trainable_variables)

    def get_config(self):
        return {**super().get_config(), "agc_clip": self.agc_clip}


@keras.saving.register_keras_serializable(package="kcnn")
class AGCSGD(_AdaptiveGradientClipping, keras.optimizers.SGD):
    """SGD with adaptive gradient clipping (NFNets' optimizer: SGD, Nesterov momentum, AGC)."""


@keras.saving.register_keras_serializable(package="kcnn")
class AGCAdamW(_AdaptiveGradientClipping, keras.optimizers.AdamW):
    """AdamW with adaptive gradient clipping."""


@keras.saving.register_keras_serializable(package="kcnn")
class AGCRMSprop(_AdaptiveGradientClipping, keras.optimizers.RMSprop):
    """RMSprop with adaptive gradient clipping."""


def make_optimizer(cfg: OptimizerConfig, *, steps_per_epoch: int, epochs: int, global_batch: int):
    schedule = WarmupSchedule(
        effective_learning_rate(cfg, global_batch), total_steps=steps_per_epoch * epochs,
        warmup_steps=round(cfg.warmup_epochs * steps_per_epoch), kind=cfg.schedule,
        boundaries=[e * steps_per_epoch for e in cfg.step_epochs], factor=cfg.step_factor)
    common = dict(learning_rate=schedule, weight_decay=cfg.weight_decay or None, global_clipnorm=cfg.clip_norm,
                  use_ema=cfg.ema is not None, ema_momentum=cfg.ema or 0.99)
    agc = cfg.agc_clip is not None
    if agc:
        common["agc_clip"] = cfg.agc_clip
    if cfg.name == "sgd":
        return (AGCSGD if agc else keras.optimizers.SGD)(momentum=cfg.momentum, nesterov=cfg.nesterov, **common)
    if cfg.name == "adamw":
        common["weight_decay"] = cfg.weight_decay
        return (AGCAdamW if agc else keras.optimizers.AdamW)(**common)
    return (AGCRMSprop if agc else keras.optimizers.RMSprop)(momentum=cfg.momentum, **common)
