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
