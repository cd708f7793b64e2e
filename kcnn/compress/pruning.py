"""Magnitude pruning with masks kept as non-trainable weights (Han et al., 2015 and 2016).

``prune(model, densities)`` returns a copy of ``model`` whose chosen ``Conv2D`` and ``Dense``
layers are ``MaskedConv2D`` / ``MaskedDense``: the same layers plus a non-trainable ``kernel_mask``
weight (saved with the model, restored with its checkpoints) that the forward pass multiplies
into the kernel. ``PruningCallback`` writes ``kernel * mask`` back into the kernel after every
optimizer step, so momentum or weight decay never revive a pruned weight: pruned weights stay
exactly zero. With a ``PolynomialDensity`` schedule it also lowers each layer's density from 1
to its target along Zhu & Gupta's cubic (arXiv:1710.01878), pruning the smallest magnitudes.
Biases are never pruned. ``strip_pruning`` turns the masked layers back into plain ones.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import keras
import numpy as np
from keras import layers, ops

from kcnn.compress.tables import TABLES

PRUNABLE = (layers.Conv2D, layers.Dense)


class _MaskedKernel:
    """Adds ``kernel_mask`` (non-trainable, ones at build) and masks the kernel in the forward pass."""

    def __init__(self, *args, target_density: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.target_density = float(target_density)

    def build(self, input_shape):
        super().build(input_shape)
        self.kernel_mask = self.add_weight(name="kernel_mask", shape=tuple(kernel_variable(self).shape),
                                           initializer="ones", trainable=False)

    @property
    def kernel(self):
        kernel = super().kernel
        mask = getattr(self, "kernel_mask", None)
        return kernel if mask is None else kernel * ops.cast(mask, kernel.dtype)

    def get_config(self):
        return {**super().get_config(), "target_density": self.target_density}

    # Conv2D and Dense save only their kernel and bias, by position; the mask travels beside them.
    def save_own_variables(self, store):
        super().save_own_variables(store)
        if self.built:
            store["kernel_mask"] = self.kernel_mask

    def load_own_variables(self, store):
        super().load_own_variables(store)
        if self.built:
            self.kernel_mask.assign(store["kernel_mask"])


@keras.saving.register_keras_serializable(package="kcnn")
class MaskedConv2D(_MaskedKernel, layers.Conv2D):
    """``Conv2D`` whose kernel is multiplied by a stored 0/1 ``kernel_mask``."""


@keras.saving.register_keras_serializable(package="kcnn")
class MaskedDense(_MaskedKernel, layers.Dense):
    """``Dense`` whose kernel is multiplied by a stored 0/1 ``kernel_mask``."""


MASKED = {layers.Conv2D: MaskedConv2D, layers.Dense: MaskedDense}


def kernel_variable(layer):
    """The layer's kernel variable itself (its ``kernel`` attribute may be a masked product)."""
    for variable in layer.trainable_variables + layer.non_trainable_variables:
        if variable.name == "kernel":
            return variable
    raise ValueError(f"layer {layer.name} has no kernel variable")


def resolve_densities(model, densities) -> dict[str, float]:
    """Layer name -> density from a table name, or a dict of layer names / fnmatch globs -> density.

    A name matched by several patterns takes the last one given. Every pattern must match a
    prunable layer (Conv2D or Dense) and every density must lie in (0, 1].
    """
    if isinstance(densities, str):
        if densities not in TABLES:
            raise ValueError(f"unknown density table {densities!r}; known tables: {', '.join(sorted(TABLES))}")
        densities = TABLES[densities]()
    names = [layer.name for layer in model.layers if isinstance(layer, PRUNABLE)]
    resolved = {}
    for pattern, density in densities.items():
        density = float(density)
        if not 0.0 < density <= 1.0:
            raise ValueError(f"density for {pattern!r} must be in (0, 1], got {density}")
        matched = fnmatch.filter(names, pattern)
        if not matched:
            raise ValueError(f"density pattern {pattern!r} matches no Conv2D or Dense layer of {model.name}; "
                             f"its prunable layers are {', '.join(names[:8])}{'...' if len(names) > 8 else ''}")
        resolved.update({name: density for name in matched})
    return resolved


def magnitude_mask(kernel: np.ndarray, density: float) -> np.ndarray:
    """0/1 mask keeping the ``round(density * size)`` largest magnitudes of ``kernel`` (ties: lowest index)."""
    kernel = np.asarray(kernel)
    magnitude = np.abs(kernel.ravel())
    keep = int(round(density * kernel.size))
    mask = np.zeros(kernel.size, dtype=kernel.dtype)
    if keep:
        # The keep-th largest magnitude by selection, not a full sort: VGG-16's fc6 has 103M weights.
        threshold = np.partition(magnitude, kernel.size - keep)[kernel.size - keep]
        above = magnitude > threshold
        mask[above] = 1
        mask[np.flatnonzero(magnitude == threshold)[:keep - int(above.sum())]] = 1
    return mask.reshape(kernel.shape)


def prune(model, densities, *, one_shot: bool = True):
    """A copy of ``model`` with masked layers at the given densities (see ``resolve_densities``).

    ``one_shot=True`` prunes to the targets now; ``one_shot=False`` starts every mask at ones for
    a ``PruningCallback`` with a ``PolynomialDensity`` schedule to lower. Layers at density 1
    stay plain layers.
    """
    targets = {name: d for name, d in resolve_densities(model, densities).items() if d < 1.0}

    def clone(layer):
        config = layer.get_config()
        if layer.name in targets:
            return MASKED[type(layer)].from_config({**config, "target_density": targets[layer.name]})
        return layer.__class__.from_config(config)

    pruned = keras.models.clone_model(model, clone_function=clone)
    for source, target in zip(model.layers, pruned.layers):
        if source.name not in targets:
            target.set_weights(source.get_weights())
            continue
        for variable in source.weights:
            next(v for v in target.weights if v.name == variable.name).assign(variable)
        if one_shot:
            set_density(target, targets[source.name])
    return pruned


def masked_layers(model) -> list:
    return [layer for layer in model.layers if isinstance(layer, _MaskedKernel)]


def set_density(layer, density: float) -> None:
    """Prune ``layer`` (masked) to ``density`` by magnitude of its currently unmasked weights."""
    kernel = kernel_variable(layer)
    current = ops.convert_to_numpy(kernel) * ops.convert_to_numpy(layer.kernel_mask)
    mask = magnitude_mask(current, density)
    layer.kernel_mask.assign(mask)
    kernel.assign(current * mask)


def apply_masks(model) -> None:
    """Write ``kernel * kernel_mask`` into every masked layer's kernel (pruned weights exactly zero)."""
    for layer in masked_layers(model):
        kernel = kernel_variable(layer)
        kernel.assign(kernel * ops.cast(layer.kernel_mask, kernel.dtype))


def strip_pruning(model):
    """A copy of ``model`` with plain ``Conv2D`` / ``Dense`` layers holding the masked kernels."""
    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, _MaskedKernel):
            config.pop("target_density")
            plain = next(base for base in MASKED if isinstance(layer, base))
            return plain.from_config(config)
        return layer.__class__.from_config(config)

    stripped = keras.models.clone_model(model, clone_function=clone)
    for source, target in zip(model.layers, stripped.layers):
        if isinstance(source, _MaskedKernel):
            masked = ops.convert_to_numpy(source.kernel)  # kernel * mask
            for variable in target.weights:
                value = masked if variable.name == "kernel" else next(
                    v for v in source.weights if v.name == variable.name)
                variable.assign(value)
        else:
            target.set_weights(source.get_weights())
    return stripped


@dataclass(frozen=True)
class PolynomialDensity:
    """Zhu & Gupta's gradual pruning: density falls from ``initial`` to each layer's target.

    At step t (optimizer steps, counted from 0), between ``begin_step`` and ``end_step``,
    ``density = target + (initial - target) * (1 - (t - begin_step) / (end_step - begin_step)) ** power``,
    updated every ``frequency`` steps; the target from ``end_step`` on.
    """

    begin_step: int
    end_step: int
    frequency: int = 100
    power: float = 3.0
    initial: float = 1.0

    def __post_init__(self):
        if not 0 <= self.begin_step < self.end_step:
            raise ValueError(f"need 0 <= begin_step < end_step, got {self.begin_step} and {self.end_step}")
        if self.frequency < 1:
            raise ValueError(f"frequency must be >= 1, got {self.frequency}")

    def density(self, step: int, target: float) -> float:
        progress = min(max((step - self.begin_step) / (self.end_step - self.begin_step), 0.0), 1.0)
        return target + (self.initial - target) * (1.0 - progress) ** self.power

    def updates_at(self, step: int) -> bool:
        return self.begin_step <= step <= self.end_step and (
            (step - self.begin_step) % self.frequency == 0 or step == self.end_step)


class PruningCallback(keras.callbacks.Callback):
    """Re-apply the masks after every optimizer step; with ``schedule``, prune gradually.

    Works under ``model.fit`` on every backend and under ``kcnn train``'s own loop (both call
    ``on_train_batch_end`` after each step). The step count is ``epoch * steps + batch``, so a
    resumed run continues the schedule where it stopped; the masks themselves are weights and
    come back with the checkpoint.
    """

    def __init__(self, schedule: PolynomialDensity | None = None):
        super().__init__()
        self.schedule = schedule
        self._epoch = 0

    def on_train_begin(self, logs=None):
        if not masked_layers(self.model):
            raise ValueError("PruningCallback needs a model from kcnn.compress.prune(); "
                             "this one has no masked layers")
        apply_masks(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.schedule is not None:
            step = self._epoch * int(self.params.get("steps") or 0) + batch + 1
            if self.schedule.updates_at(step):
                for layer in masked_layers(self.model):
                    set_density(layer, self.schedule.density(step, layer.target_density))
                return
        apply_masks(self.model)


def density_report(model) -> list[dict]:
    """Per prunable layer: name, kernel size, non-zero kernel weights, biases, density."""
    rows = []
    for layer in model.layers:
        if not isinstance(layer, PRUNABLE):
            continue
        kernel = ops.convert_to_numpy(layer.kernel)
        biases = sum(int(np.prod(v.shape)) for v in layer.trainable_variables if v.name == "bias")
        nonzero = int(np.count_nonzero(kernel))
        rows.append({"layer": layer.name, "kernel": int(kernel.size), "nonzero_kernel": nonzero, "bias": biases,
                     "params": int(kernel.size) + biases, "params_after": nonzero + biases,
                     "density": nonzero / kernel.size})
    return rows
