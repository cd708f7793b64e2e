"""Batch norm folded into the convolution before it: the same function with one op fewer per block.

At inference a batch-norm layer computes ``gamma * (x - mean) / sqrt(var + eps) + beta`` with frozen
statistics, an affine map per channel. When ``x`` is a convolution's output (no activation between, read
by the batch norm alone), the map moves into the convolution: each output channel's kernel is scaled by
``s = gamma / sqrt(var + eps)`` and its bias becomes ``beta + (bias - mean) * s``. The batch norm becomes
an identity. Exact up to float round-off (the products are taken in float64, then stored as float32);
``kcnn export`` folds by default, so the exported graph runs fused convolution-bias(-activation) kernels.
"""

from __future__ import annotations

import keras
import numpy as np

FOLDABLE = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv1D", "Conv3D")


@keras.saving.register_keras_serializable(package="kcnn")
class FoldedBatchNorm(keras.layers.Layer):
    """Where a batch norm was, once folded into its convolution: passes its input through."""

    def call(self, inputs, training=None, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


def foldable_pairs(model) -> dict[str, str]:
    """Batch-norm layer name -> the name of the convolution it folds into."""
    consumers: dict[int, int] = {}
    for layer in model.layers:
        for node in getattr(layer, "_inbound_nodes", []):
            for tensor in node.input_tensors:
                consumers[id(tensor)] = consumers.get(id(tensor), 0) + 1
    for tensor in keras.tree.flatten(model.outputs):
        consumers[id(tensor)] = consumers.get(id(tensor), 0) + 1
    pairs = {}
    for layer in model.layers:
        if type(layer).__name__ != "BatchNormalization" or len(getattr(layer, "_inbound_nodes", [])) != 1:
            continue
        (tensor,) = layer._inbound_nodes[0].input_tensors
        producer = tensor._keras_history.operation
        if (type(producer).__name__ not in FOLDABLE or len(producer._inbound_nodes) != 1
                or consumers.get(id(tensor), 0) != 1 or keras.activations.serialize(producer.activation) != "linear"
                or getattr(producer, "data_format", "channels_last") != "channels_last"
                or layer.axis not in (-1, len(tensor.shape) - 1)):
            continue
        pairs[layer.name] = producer.name
    return pairs


def fold_batch_norm(model) -> keras.Model:
    """A copy of ``model`` whose foldable batch norms are folded into their convolutions (see the module)."""
    pairs = foldable_pairs(model)
    if not pairs:
        return model
    convolutions = set(pairs.values())

    def clone(layer):
        config = layer.get_config()
        if layer.name in pairs:
            return FoldedBatchNorm(name=layer.name)
        if layer.name in convolutions:
            return layer.__class__.from_config({**config, "use_bias": True})
        return layer.__class__.from_config(config)

    folded = keras.models.clone_model(model, clone_function=clone)
    clones = dict(zip((layer.name for layer in model.layers), folded.layers))  # cloning keeps the layer order
    for source in model.layers:
        if source.name not in pairs and source.name not in convolutions:
            clones[source.name].set_weights(source.get_weights())
    for norm_name, conv_name in pairs.items():
        _fold(model.get_layer(conv_name), model.get_layer(norm_name), clones[conv_name])
    return folded


def _fold(conv, norm, target) -> None:
    values = lambda variable: np.asarray(keras.ops.convert_to_numpy(variable), "float64")  # noqa: E731
    mean, variance = values(norm.moving_mean), values(norm.moving_variance)
    gamma = values(norm.gamma) if norm.gamma is not None else np.ones_like(mean)
    beta = values(norm.beta) if norm.beta is not None else np.zeros_like(mean)
    scale = gamma / np.sqrt(variance + norm.epsilon)
    kind = type(conv).__name__
    bias = values(conv.bias) if conv.use_bias else np.zeros_like(mean)
    new_bias = beta + (bias - mean) * scale
    if kind == "DepthwiseConv2D":  # [kh, kw, in, multiplier]: output channel c * multiplier + m
        kernel = values(conv.kernel)
        target.kernel.assign((kernel * scale.reshape(kernel.shape[2], kernel.shape[3])).astype("float32"))
    elif kind == "SeparableConv2D":  # the pointwise kernel makes the output channels
        target.depthwise_kernel.assign(values(conv.depthwise_kernel).astype("float32"))
        target.pointwise_kernel.assign((values(conv.pointwise_kernel) * scale).astype("float32"))
    else:  # [..., in / groups, out]
        target.kernel.assign((values(conv.kernel) * scale).astype("float32"))
    target.bias.assign(new_bias.astype("float32"))
