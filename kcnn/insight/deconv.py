"""Zeiler and Fergus' deconvnet and guided backpropagation: projecting one unit back to pixels.

Both run the model's own backward pass with only ReLU's rule changed, which is exactly the
deconvnet's recipe: max pooling's gradient routes the signal to the argmax recorded in the forward
pass (switch unpooling), a convolution's gradient with respect to its input is the convolution with
the transposed (flipped) filters, and at each ReLU

- deconvnet passes ``relu(signal)`` (the rectification is applied to the signal, Zeiler and Fergus 2014),
- guided backpropagation passes ``relu(signal) * (forward input > 0)`` (Springenberg et al. 2015),
- plain backpropagation would pass ``signal * (forward input > 0)``.

ReLUs are found as ``ReLU`` layers and as layers whose ``activation`` is relu (``Activation``,
``Conv2D(activation="relu")``, ``Dense(...)``); the swap uses ``keras.ops.custom_gradient``, so it works
on every backend.
"""

from __future__ import annotations

import keras
import numpy as np

from kcnn.autodiff import value_and_grad
from kcnn.insight.graph import as_batch, get_layer, run_graph

RULES = ("deconvnet", "guided")


def _rectifier(rule: str):
    @keras.ops.custom_gradient
    def relu(x):
        positive = keras.ops.cast(x > 0, x.dtype)

        def backward(*args, upstream=None):
            signal = args[0] if upstream is None else upstream
            passed = keras.ops.relu(signal)
            return passed if rule == "deconvnet" else passed * positive

        return keras.ops.relu(x), backward

    return relu


def _is_plain_relu(function) -> bool:
    return getattr(function, "__name__", "") == "relu"


def _interceptor(rule: str):
    relu = _rectifier(rule)

    def intercept(layer, call):
        if type(layer).__name__ == "ReLU":
            config = layer.get_config()
            if config.get("max_value") is None and not config.get("negative_slope") and not config.get("threshold"):
                return lambda x, **kwargs: relu(x)
            return None
        if _is_plain_relu(getattr(layer, "activation", None)):
            def without_relu(*args, **kwargs):
                saved = layer.activation
                layer.activation = keras.activations.linear
                try:
                    return relu(call(*args, **kwargs))
                finally:
                    layer.activation = saved
            return without_relu
        return None

    return intercept


def project(model, layer, unit: int, image, *, rule: str = "deconvnet", position=None):
    """Project one unit of ``layer`` back to input space; returns (reconstruction ``[H, W, C]``, position).

    ``unit`` is a channel; ``position`` (row, column) the place in its feature map, by default the
    strongest activation there. The unit's activation value starts the backward pass, every other unit
    of the layer is set to zero (Zeiler and Fergus, section 2.1).
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    batch = as_batch(image)[:1]
    tensor = get_layer(model, layer).output
    if not 0 <= unit < tensor.shape[-1]:
        raise ValueError(f"unit must be in [0, {tensor.shape[-1]}) for layer {get_layer(model, layer).name!r}, "
                         f"got {unit}")
    intercept = _interceptor(rule)
    values = np.asarray(keras.ops.convert_to_numpy(run_graph(model, batch, wanted=tensor, intercept=intercept)))
    mask = np.zeros_like(values)
    if values.ndim == 4:
        if position is None:
            position = tuple(int(i) for i in np.unravel_index(np.argmax(values[0, ..., unit]), values.shape[1:3]))
        mask[0, position[0], position[1], unit] = 1.0
    else:
        mask[0, unit] = 1.0
    start = mask * values

    def objective(x):
        return keras.ops.sum(run_graph(model, x, wanted=tensor, intercept=intercept) * start)

    _, (reconstruction,) = value_and_grad(objective, batch)
    return reconstruction[0], position


def deconvnet(model, layer, unit: int, image, *, position=None):
    """Zeiler-Fergus reconstruction of one unit (switch unpooling, rectification, transposed filters)."""
    return project(model, layer, unit, image, rule="deconvnet", position=position)


def guided_backprop(model, layer, unit: int, image, *, position=None):
    """Guided backpropagation of one unit (Springenberg et al. 2015)."""
    return project(model, layer, unit, image, rule="guided", position=position)


def top_projections(model, layer, unit: int, images, *, k: int = 9, rule: str = "deconvnet"):
    """Zeiler and Fergus' figure 2 for one unit: its ``k`` strongest activations over ``images`` (at most one
    per image, as they take them over the validation set), each projected back to pixels.

    Returns a list of dicts, strongest first: ``index`` (the image), ``position`` (row, column in the
    feature map), ``activation``, ``projection`` and ``patch`` (the projection and the image cropped to the
    unit's receptive field around that position, ``[r, r, C]``, kept inside the image).
    """
    return top_projections_by_unit(model, layer, images, units=[unit], k=k, rule=rule)[unit]


def top_projections_by_unit(model, layer, images, *, units=None, count: int = 4, k: int = 9,
                            rule: str = "deconvnet", on_unit=None) -> dict:
    """:func:`top_projections` of several units of one layer, the feature maps and the receptive field computed
    once: ``{unit: [...]}`` for ``units``, by default the ``count`` channels most active over ``images``.
    ``on_unit(unit, results)``, if given, hears each unit as it is done."""
    from kcnn.analysis import analyze

    layer = get_layer(model, layer)
    batch = as_batch(images)
    tensor = layer.output
    if len(tensor.shape) != 4:
        raise ValueError(f"layer {layer.name!r} has output shape {tuple(tensor.shape)}; top_projections needs "
                         "a 4-D feature map")
    channels = tensor.shape[-1]
    all_maps = np.asarray(keras.ops.convert_to_numpy(run_graph(model, batch, wanted=tensor)))
    if units is None:
        strength = all_maps.reshape(-1, channels).max(axis=0)
        units = [int(c) for c in np.argsort(-strength, kind="stable")[:count]]
    for unit in units:
        if not 0 <= unit < channels:
            raise ValueError(f"unit must be in [0, {channels}) for layer {layer.name!r}, got {unit}")
    row = next(r for r in analyze(model, input_shape=tuple(batch.shape[1:])).layers if r.name == layer.name)
    field, jump = row.receptive_field[:2], row.jump[:2]
    found = {}
    for unit in units:
        maps = all_maps[..., unit]
        strongest = maps.reshape(len(maps), -1).max(axis=1)
        results = []
        for index in np.argsort(-strongest, kind="stable")[:k]:
            position = tuple(int(i) for i in np.unravel_index(np.argmax(maps[index]), maps.shape[1:3]))
            projection, _ = project(model, layer, unit, batch[index], rule=rule, position=position)
            projection = np.asarray(projection)
            support = np.nonzero(np.abs(projection).sum(axis=-1))
            window = [_window(axis_support, p, f, j, size) for axis_support, p, f, j, size
                      in zip(support, position, field, jump, batch.shape[1:3])]
            results.append({"index": int(index), "position": position, "activation": float(strongest[index]),
                            "projection": _crop(projection, window),
                            "patch": _crop(np.asarray(batch[index]), window)})
        found[unit] = results
        if on_unit is not None:
            on_unit(unit, results)
    return found


def _window(support, position: int, field: int, jump: float, size: int) -> tuple:
    """The receptive field of feature-map cell ``position`` along one axis: (first pixel, length).

    The projection is zero outside the field, so the window is centred on the projection's extent
    (``support``: the pixel indices where it is non-zero) and kept inside the image; its length is the
    field's, from the analysis. An all-zero projection falls back on a "same"-padded cell's centre.
    """
    length = min(int(field), size)
    centre = (int(support.min()) + int(support.max())) / 2 if len(support) else (position + 0.5) * jump - 0.5
    return int(np.clip(round(centre - (length - 1) / 2), 0, size - length)), length


def _crop(image: np.ndarray, window) -> np.ndarray:
    (top, height), (left, width) = window
    out = np.zeros((height, width, image.shape[-1]), image.dtype)
    rows = slice(max(top, 0), min(top + height, image.shape[0]))
    cols = slice(max(left, 0), min(left + width, image.shape[1]))
    out[rows.start - top:rows.stop - top, cols.start - left:cols.stop - left] = image[rows, cols]
    return out
