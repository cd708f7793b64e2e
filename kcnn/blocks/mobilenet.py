"""MobileNet blocks: depthwise-separable (v1), inverted residual (v2) and squeeze-and-excite."""

from __future__ import annotations

from keras import layers

from kcnn.blocks.common import (
    KERNEL_INIT,
    Activation,
    activation_layer,
    channels,
    conv_bn_act,
    explicit_padding,
    make_divisible,
    regularizer,
)
from kcnn.blocks.normalization import batch_norm


def _depthwise_bn_act(x, strides, depth_multiplier, activation, weight_decay, bn_momentum, bn_epsilon, name,
                      padding="same"):
    x, mode = explicit_padding(x, padding, f"{name}")
    x = layers.DepthwiseConv2D(
        3,
        strides=strides,
        padding=mode,
        depth_multiplier=depth_multiplier,
        use_bias=False,
        depthwise_initializer=KERNEL_INIT,
        depthwise_regularizer=regularizer(weight_decay),
        name=f"{name}_conv",
    )(x)
    x = batch_norm(x, f"{name}_bn", momentum=bn_momentum, epsilon=bn_epsilon)
    return activation_layer(x, activation, f"{name}_act")


def depthwise_separable(
    x,
    filters: int,
    strides: int = 1,
    *,
    depth_multiplier: int = 1,
    activation: Activation = "relu",
    weight_decay: float = 0.0,
    name: str,
):
    """MobileNet v1 block (Howard et al., 2017, Fig. 3): 3x3 depthwise-BN-ReLU, 1x1 pointwise-BN-ReLU.

    Layers: ``{name}_dw_*`` and ``{name}_pw_*``.
    """
    if depth_multiplier < 1:
        raise ValueError(f"depth_multiplier must be an integer >= 1, got {depth_multiplier}")
    x = _depthwise_bn_act(x, strides, depth_multiplier, activation, weight_decay, None, None, f"{name}_dw")
    return conv_bn_act(x, filters, 1, activation=activation, weight_decay=weight_decay, name=f"{name}_pw")


def squeeze_excite(
    x,
    ratio: float = 0.25,
    *,
    divisor: int = 8,
    activation: Activation = "relu",
    gate: Activation = "sigmoid",
    name: str,
):
    """Squeeze-and-excitation (Hu et al., 2018): global pool, bottleneck of ``ratio``, channel gates."""
    if not 0 < ratio <= 1:
        raise ValueError(f"squeeze_excite ratio must be in (0, 1], got {ratio}")
    c = channels(x)
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze")(x)
    s = layers.Conv2D(make_divisible(c * ratio, divisor), 1, activation=activation, name=f"{name}_reduce")(s)
    s = layers.Conv2D(c, 1, activation=gate, name=f"{name}_expand")(s)
    return layers.Multiply(name=f"{name}_excite")([x, s])


def inverted_residual(
    x,
    filters: int,
    strides: int = 1,
    *,
    expansion: float = 6,
    activation: Activation = "relu6",
    se_ratio: float | None = None,
    weight_decay: float = 0.0,
    bn_momentum: float | None = None,
    bn_epsilon: float | None = None,
    padding="same",
    name: str,
):
    """MobileNet v2 block (Sandler et al., 2018, Table 1).

    1x1 expansion by ``expansion`` (skipped when it is 1), 3x3 depthwise, optional
    squeeze-excite, then a linear 1x1 projection. The residual connection is added
    when the stride is 1 and the input and output channel counts match. ``padding``
    is the depthwise convolution's ("same" or a pixel count on every side). Batch norm
    takes the settings of the backbone being built unless ``bn_momentum`` or
    ``bn_epsilon`` is given (``kcnn.backbones.mobilenet_v2`` uses momentum 0.999).
    """
    if expansion < 1:
        raise ValueError(f"expansion must be >= 1, got {expansion}")
    in_channels = channels(x)
    shortcut = x
    bn = dict(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon, weight_decay=weight_decay)
    if expansion != 1:
        x = conv_bn_act(x, int(round(in_channels * expansion)), 1, activation=activation, name=f"{name}_expand", **bn)
    x = _depthwise_bn_act(x, strides, 1, activation, weight_decay, bn_momentum, bn_epsilon, f"{name}_dw", padding)
    if se_ratio:
        x = squeeze_excite(x, se_ratio, name=f"{name}_se")
    x = conv_bn_act(x, filters, 1, activation=None, name=f"{name}_project", **bn)
    if strides == 1 and in_channels == filters:
        x = layers.Add(name=f"{name}_add")([shortcut, x])
    return x
