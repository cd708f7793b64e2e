"""Putting a checkpoint's tensors into a kcnn model: every tensor used once, every weight filled once.

A family's mapping is a list of ``Pair(kcnn_layer, source, kind, head)``: the kcnn
layer, the source layer name (Keras) or tensor prefix (PyTorch), and the kind of
layer, which says how each of its tensors is named and laid out. ``assign`` checks
the whole plan first and only then writes, so a failure never leaves a partial load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np

from kcnn.weights.sources import CheckpointError


@dataclass(frozen=True)
class Pair:
    """One kcnn layer and where its weights come from."""

    layer: str
    source: str
    # "keras", "keras_conv_as_dense", a TORCH_KINDS key, or "unused" / "keras_unused": the source's tensors are
    # known and deliberately left out (a Keras layer name may carry Keras' auto-naming counter, "normalization_3").
    kind: str = "keras"
    head: bool = False


def _oihw_to_hwio(w):
    return np.transpose(w, (2, 3, 1, 0))


def _depthwise(w):  # (C, 1, kH, kW) -> (kH, kW, C, 1)
    return np.transpose(w, (2, 3, 0, 1))


def _identity(w):
    return w


def _transpose(w):
    return np.transpose(w)


# Per kind: the source tensor suffix and the layout transform for each of the kcnn layer's weights, in order.
_TORCH_BN = [("weight", _identity), ("bias", _identity), ("running_mean", _identity), ("running_var", _identity)]
TORCH_KINDS: dict[str, list[tuple[str, Callable]]] = {
    "conv": [("weight", _oihw_to_hwio), ("bias", _identity)],
    "depthwise": [("weight", _depthwise), ("bias", _identity)],
    "linear": [("weight", _transpose), ("bias", _identity)],
    "flatten_linear": [("weight", None), ("bias", _identity)],  # the transform needs the map's shape
    "bn": _TORCH_BN,
}
UNUSED_KINDS = ("unused", "keras_unused")
# Tensors a PyTorch module carries that no inference weight corresponds to.
TORCH_BUFFERS = ("num_batches_tracked",)


def flatten_linear_transform(layer: keras.layers.Layer) -> Callable:
    """The first dense layer after Flatten: PyTorch flattens (C, H, W), Keras (H, W, C)."""
    flat = layer.input.shape[-1]
    spatial = _flatten_source_shape(layer)

    def transform(w):
        if spatial is None:
            raise CheckpointError(f"{layer.name}: cannot find the feature map shape before Flatten")
        h, wd, c = spatial
        if w.shape[1] != flat:
            return w.T  # let the shape check report it
        return np.transpose(w.reshape(w.shape[0], c, h, wd), (0, 2, 3, 1)).reshape(w.shape[0], -1).T

    return transform


def _flatten_source_shape(layer):
    node = layer._inbound_nodes[0]
    flatten = node.parent_nodes[0].operation if node.parent_nodes else None
    while flatten is not None and not isinstance(flatten, keras.layers.Flatten):
        parents = flatten._inbound_nodes[0].parent_nodes
        flatten = parents[0].operation if parents else None
    if flatten is None:
        return None
    return tuple(flatten.input.shape[1:])


@dataclass
class _Step:
    variable: object
    key: str
    transform: Callable


def plan(model: keras.Model, pairs: list[Pair], tensors: dict[str, np.ndarray], *, skip_head: bool,
         family: str, bn_epsilon: float | None, builder_hint: str) -> list[tuple[object, np.ndarray]]:
    """Check ``pairs`` against ``model`` and ``tensors``; return (variable, value) for every weight to write."""
    by_name = {layer.name: layer for layer in model.layers}
    steps: list[_Step] = []
    allowed_unused: set[str] = {k for k in tensors if k.rsplit(".", 1)[-1] in TORCH_BUFFERS}
    mapped: set[str] = set()
    for pair in pairs:
        if pair.kind in UNUSED_KINDS:
            unused = _source_keys(pair, tensors)
            if not unused:
                raise CheckpointError(f"{family}: the checkpoint has no tensors under {pair.source!r}; it is for "
                                      "a different architecture or variant")
            allowed_unused.update(unused)
            continue
        if pair.head and skip_head:
            allowed_unused.update(_source_keys(pair, tensors))
            continue
        layer = by_name.get(pair.layer)
        if layer is None:
            raise CheckpointError(
                f"{family}: the model has no layer {pair.layer!r} for checkpoint {pair.source!r}; build the model "
                f"with kcnn.build({model.name!r}{builder_hint}) so its layers match the checkpoint"
            )
        mapped.add(layer.name)
        _check_epsilon(layer, bn_epsilon, family, builder_hint, model.name)
        steps.extend(_layer_steps(layer, pair))
    _check_unmapped_layers(model, mapped, skip_head, family, builder_hint)

    used: dict[str, str] = {}
    writes = []
    for step in steps:
        name = step.variable.path
        if step.key in used:
            raise CheckpointError(f"{family}: checkpoint tensor {step.key!r} would fill both {used[step.key]} and {name}")
        if step.key not in tensors:
            raise CheckpointError(
                f"{family}: the checkpoint has no tensor {step.key!r} for {name} (expected shape "
                f"{tuple(step.variable.shape)}); is it a checkpoint for this architecture, built with "
                f"kcnn.build({model.name!r}{builder_hint})?"
            )
        value = step.transform(np.asarray(tensors[step.key]))
        if tuple(value.shape) != tuple(step.variable.shape):
            raise CheckpointError(
                f"{family}: checkpoint tensor {step.key!r} has shape {tuple(tensors[step.key].shape)} but {name} "
                f"expects {tuple(step.variable.shape)}"
            )
        used[step.key] = name
        writes.append((step.variable, value))
    left = [k for k in tensors if k not in used and k not in allowed_unused]
    if left:
        raise CheckpointError(
            f"{family}: checkpoint tensor {left[0]!r} (shape {tuple(tensors[left[0]].shape)}) has no place in the "
            f"model ({len(left)} unused in all); the checkpoint is for a different architecture or variant"
        )
    return writes


def assign(writes) -> None:
    for variable, value in writes:
        variable.assign(value.astype(keras.backend.standardize_dtype(variable.dtype)))


def _source_keys(pair: Pair, tensors) -> list[str]:
    if pair.kind == "keras_unused":
        pattern = re.compile(rf"{re.escape(pair.source)}(_\d+)?/")
        return [k for k in tensors if pattern.match(k)]
    prefix = f"{pair.source}/" if pair.kind.startswith("keras") else f"{pair.source}."
    return [k for k in tensors if k.startswith(prefix)]


def _layer_steps(layer, pair: Pair) -> list[_Step]:
    variables = list(layer.weights)
    if pair.kind == "keras" or pair.kind.startswith("keras_"):
        transform = _squeeze_1x1 if pair.kind == "keras_conv_as_dense" else _identity
        return [_Step(v, f"{pair.source}/{i}", transform) for i, v in enumerate(variables)]
    roles = TORCH_KINDS[pair.kind]
    if len(variables) > len(roles):
        raise CheckpointError(f"{layer.name}: {len(variables)} weights, but a {pair.kind} tensor set has {len(roles)}")
    steps = []
    for variable, (suffix, transform) in zip(variables, roles):
        if transform is None:
            transform = flatten_linear_transform(layer)
        steps.append(_Step(variable, f"{pair.source}.{suffix}", transform))
    return steps


def _squeeze_1x1(w):
    """keras.applications MobileNet's classifier is a 1x1 convolution; kcnn's is Dense."""
    return w.reshape(w.shape[-2], w.shape[-1]) if w.ndim == 4 else w


def _check_epsilon(layer, expected, family, builder_hint, model_name):
    if expected is None or not isinstance(layer, keras.layers.BatchNormalization):
        return
    if not np.isclose(layer.epsilon, expected, rtol=1e-6, atol=0):
        raise CheckpointError(
            f"{family}: {layer.name} has BatchNorm epsilon {layer.epsilon} but the checkpoint was trained with "
            f"{expected}; build the model with kcnn.build({model_name!r}{builder_hint})"
        )


def _check_unmapped_layers(model, mapped, skip_head, family, builder_hint):
    """Every layer with weights is mapped; with ``skip_head`` the unmapped ones must all follow the backbone."""
    last_mapped = max((i for i, layer in enumerate(model.layers) if layer.name in mapped), default=-1)
    for index, layer in enumerate(model.layers):
        if not layer.weights or layer.name in mapped:
            continue
        if skip_head and index > last_mapped:
            continue
        shapes = [tuple(w.shape) for w in layer.weights]
        raise CheckpointError(
            f"{family}: the model's layer {layer.name!r} (weights {shapes}) has no counterpart in the checkpoint"
            + ("" if skip_head else "; pass skip_head=True to load the backbone only")
            + f"; the checkpoint matches kcnn.build({model.name!r}{builder_hint})"
        )
