"""Walking a functional Keras model's graph: layers by name, scores before softmax, and runs with a tensor swapped.

Gradients with respect to an intermediate activation (Grad-CAM's dScore/dA) need the part of the
model after that layer as a function of the activation. ``run_graph`` executes the model's nodes in
order, as Keras does, but lets the caller substitute the value of any layer's output and intercept
any layer's call (deconvnet and guided backpropagation swap ReLU's backward pass this way). It works
on any functional or Sequential model, not only kcnn's, on every backend.
"""

from __future__ import annotations

import keras
import numpy as np

CONV_TYPES = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "MaskedConv2D")  # Masked: pruning while training
SOFTMAX_NAMES = ("softmax",)


def functional(model: keras.Model) -> keras.Model:
    """The functional graph of a functional or Sequential model."""
    if isinstance(model, keras.Sequential):
        inner = getattr(model, "_functional", None)
        if inner is None:
            raise ValueError("build the Sequential model with a keras.Input before visualising it")
        return inner
    if not hasattr(model, "_nodes_by_depth") or not getattr(model, "inputs", None):
        raise ValueError(f"kcnn.insight needs a functional or Sequential model; {type(model).__name__} is a "
                         "subclassed model whose layers are only known when called. Wrap it in a functional model")
    return model


def get_layer(model: keras.Model, layer) -> keras.layers.Layer:
    """A layer given by name or as the layer itself; an unknown name lists the layers there are."""
    if isinstance(layer, keras.layers.Layer):
        return layer
    names = [item.name for item in model.layers]
    if layer not in names:
        raise ValueError(f"no layer named {layer!r} in model {model.name!r}; its layers are: {', '.join(names)}")
    return model.get_layer(layer)


def output_tensor(model: keras.Model, layer) -> keras.KerasTensor:
    """The symbolic output of ``layer`` inside ``model``'s graph."""
    return get_layer(model, layer).output


def is_conv(layer) -> bool:
    return type(layer).__name__ in CONV_TYPES


def spatial(tensor) -> tuple:
    return tuple(tensor.shape[1:3]) if len(tensor.shape) == 4 else ()


def last_conv_layer(model: keras.Model) -> keras.layers.Layer:
    """The last convolution whose output still has more than one position (Grad-CAM's usual choice)."""
    convs = [layer for layer in functional(model).layers if is_conv(layer)]
    if not convs:
        raise ValueError(f"model {model.name!r} has no convolution layer; name a layer with a 4-D output instead")
    wide = [layer for layer in convs if any(d is None or d > 1 for d in spatial(layer.output))]
    return (wide or convs)[-1]


def first_conv_layer(model: keras.Model) -> keras.layers.Layer:
    convs = [layer for layer in functional(model).layers if is_conv(layer)]
    if not convs:
        raise ValueError(f"model {model.name!r} has no convolution layer")
    return convs[0]


def _is_softmax(function) -> bool:
    return getattr(function, "__name__", "") in SOFTMAX_NAMES


def _final_softmax(model):
    """(layer, fused): the layer ending the model in a softmax, fused when it is e.g. Dense(activation="softmax")."""
    layer = functional(model).outputs[0]._keras_history.operation
    kind = type(layer).__name__
    if kind == "Softmax" or (kind == "Activation" and _is_softmax(layer.activation)):
        return layer, False
    if _is_softmax(getattr(layer, "activation", None)):
        return layer, True
    return None, False


def score_tensor(model: keras.Model) -> keras.KerasTensor:
    """The symbolic tensor holding the class scores: the input of a final softmax layer, else the output
    (whose last layer may fuse the softmax: :func:`scores` removes it)."""
    layer, fused = _final_softmax(model)
    return layer.input if layer is not None and not fused else functional(model).outputs[0]


def scores(model: keras.Model, inputs, *, replace=None, intercept=None):
    """The class scores before a final softmax (logits), also when the last layer fuses the softmax."""
    layer, fused = _final_softmax(model)
    if not fused:
        return run_graph(model, inputs, wanted=score_tensor(model), replace=replace, intercept=intercept)

    def without_softmax(op, call):
        if op is layer:
            def linear(*args, **kwargs):
                saved = op.activation
                op.activation = keras.activations.linear
                try:
                    return call(*args, **kwargs)
                finally:
                    op.activation = saved
            return linear
        return intercept(op, call) if intercept is not None else None

    return run_graph(model, inputs, wanted=functional(model).outputs[0], replace=replace, intercept=without_softmax)


def run_graph(model: keras.Model, inputs, *, wanted, replace=None, intercept=None):
    """Values of the symbolic tensors ``wanted`` for ``inputs``.

    ``replace`` maps a symbolic tensor to the value to use instead of computing it. ``intercept(layer,
    call)`` may return a replacement for ``call`` (a function of the layer's arguments) or None.
    Layers run in inference mode.
    """
    graph = functional(model)
    values = {id(t): v for t, v in zip(graph.inputs, keras.tree.flatten(inputs))}
    for tensor, value in (replace or {}).items():
        values[id(tensor)] = value
    wanted_ids = [id(t) for t in keras.tree.flatten(wanted)]
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        for node in graph._nodes_by_depth[depth]:
            if not node.operation or node.is_input:
                continue
            if all(id(t) in values for t in node.outputs):
                continue  # replaced
            if any(id(t) not in values for t in node.input_tensors):
                continue
            args, kwargs = node.arguments.fill_in(values)
            call = node.operation
            if intercept is not None:
                call = intercept(node.operation, call) or call
            outputs = call(*args, **kwargs)
            for symbolic, value in zip(node.outputs, keras.tree.flatten(outputs)):
                values[id(symbolic)] = value
        if all(i in values for i in wanted_ids):
            break
    missing = [i for i in wanted_ids if i not in values]
    if missing:
        raise ValueError("a requested tensor is not computable from the model's inputs")
    found = [values[i] for i in wanted_ids]
    return keras.tree.pack_sequence_as(wanted, found)


def as_batch(images) -> np.ndarray:
    """One image ``[H, W, C]`` or a batch ``[N, H, W, C]`` -> float32 batch."""
    array = np.asarray(images, dtype="float32")
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise ValueError(f"images must be [H, W, C] or [N, H, W, C], got shape {array.shape}")
    return array


def predict(model: keras.Model, images, batch_size: int = 64) -> np.ndarray:
    """The model's outputs as numpy, in batches, inference mode."""
    batch = as_batch(images)
    parts = [keras.ops.convert_to_numpy(model(batch[i:i + batch_size], training=False))
             for i in range(0, len(batch), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0,), "float32")
