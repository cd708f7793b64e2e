"""The mobile inverted bottleneck with squeeze-and-excitation (EfficientNet's MBConv, MobileNet v3's bneck)."""

from __future__ import annotations

from keras import layers

from kcnn.blocks.common import KERNEL_INIT, Activation, activation_layer, channels, conv_bn_act, regularizer
from kcnn.blocks.normalization import batch_norm


def squeeze_excite_to(x, squeeze_channels: int, *, activation: Activation = "relu", gate: Activation = "sigmoid",
                      name: str):
    """Squeeze-and-excitation with an explicit bottleneck width (the families differ in how they round it).

    Global average pool, 1x1 convolution to ``squeeze_channels`` with ``activation``,
    1x1 convolution back with ``gate``, channel-wise product. Layers ``{name}_squeeze``,
    ``{name}_reduce``, ``{name}_expand``, ``{name}_excite``.
    """
    if squeeze_channels < 1:
        raise ValueError(f"squeeze_channels must be >= 1, got {squeeze_channels}")
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze")(x)
    s = layers.Conv2D(squeeze_channels, 1, activation=activation, kernel_initializer=KERNEL_INIT,
                      name=f"{name}_reduce")(s)
    s = layers.Conv2D(channels(x), 1, activation=gate, kernel_initializer=KERNEL_INIT, name=f"{name}_expand")(s)
    return layers.Multiply(name=f"{name}_excite")([x, s])


def mbconv(
    x,
    filters: int,
    kernel_size: int = 3,
    strides: int = 1,
    *,
    expanded: int,
    se_channels: int | None = None,
    activation: Activation = "swish",
    se_activation: Activation = None,
    se_gate: Activation = "sigmoid",
    drop_rate: float = 0.0,
    weight_decay: float = 0.0,
    bn_momentum: float | None = None,
    bn_epsilon: float | None = None,
    name: str,
):
    """Inverted bottleneck: 1x1 expansion to ``expanded`` channels (skipped when it equals the input),
    ``kernel_size`` depthwise convolution, optional squeeze-excite to ``se_channels``, linear 1x1
    projection to ``filters``; identity shortcut when the stride is 1 and the widths match.

    ``drop_rate`` drops the whole residual branch per sample during training (stochastic
    depth, EfficientNet's "drop connect"); ``se_activation`` defaults to ``activation``.
    Layers: ``{name}_expand_*``, ``{name}_dw_*``, ``{name}_se_*``, ``{name}_project_*``, ``{name}_add``.
    """
    if not 0 <= drop_rate < 1:
        raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
    in_channels = channels(x)
    shortcut = x
    bn = dict(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon, weight_decay=weight_decay)
    if expanded != in_channels:
        x = conv_bn_act(x, expanded, 1, activation=activation, name=f"{name}_expand", **bn)
    x = layers.DepthwiseConv2D(kernel_size, strides=strides, padding="same", use_bias=False,
                               depthwise_initializer=KERNEL_INIT, depthwise_regularizer=regularizer(weight_decay),
                               name=f"{name}_dw_conv")(x)
    x = batch_norm(x, f"{name}_dw_bn", momentum=bn_momentum, epsilon=bn_epsilon)
    x = activation_layer(x, activation, f"{name}_dw_act")
    if se_channels:
        x = squeeze_excite_to(x, se_channels, activation=se_activation or activation, gate=se_gate,
                              name=f"{name}_se")
    x = conv_bn_act(x, filters, 1, activation=None, name=f"{name}_project", **bn)
    if strides == 1 and in_channels == filters:
        if drop_rate:
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}_drop")(x)
        x = layers.Add(name=f"{name}_add")([shortcut, x])
    return x
