"""Normalizer-free blocks (Brock et al., 2021): scaled weight standardisation, alpha/beta signal scaling."""

from __future__ import annotations

from keras import layers

from kcnn.blocks.common import channels, regularizer
from kcnn.layers import ScalarGain, WSConv2D

# GELU rescaled so a unit Gaussian input gives unit-variance output (the paper's gamma for GELU).
GELU_GAMMA = 1.7015043497085571


def scaled_gelu(x, name: str):
    x = layers.Activation("gelu", name=f"{name}_gelu")(x)
    return layers.Rescaling(GELU_GAMMA, name=f"{name}_gamma")(x)


def ws_conv(x, filters: int, kernel_size: int = 1, strides: int = 1, *, groups: int = 1, weight_decay: float = 0.0,
            name: str):
    """A weight-standardised convolution with bias and learned gain ("same" padding)."""
    return WSConv2D(filters, kernel_size, strides=strides, padding="same", groups=groups,
                    kernel_initializer="he_normal", kernel_regularizer=regularizer(weight_decay), name=name)(x)


def nf_block(x, filters: int, strides: int = 1, *, beta: float, alpha: float = 0.2, group_width: int = 128,
             bottleneck_ratio: float = 0.5, se_ratio: float = 0.5, drop_rate: float = 0.0,
             weight_decay: float = 0.0, name: str):
    """The NFNet bottleneck (paper Fig. 5): ``h = x + alpha * gain * f(act(x) / beta-scaled)``.

    The branch sees ``act(x) * beta`` with ``beta = 1 / expected std of x``: 1x1 WS conv to
    ``filters * bottleneck_ratio``, two 3x3 grouped WS convs (the first strided), 1x1 WS conv to
    ``filters``, squeeze-excite gate times 2, stochastic depth ``drop_rate``, a learned skip gain
    starting at zero, then ``alpha``. Where the shape changes, the shortcut is average-pooled
    (stride 2) and projected by a 1x1 WS conv from the pre-activated input.
    """
    in_channels = channels(x)
    width = int(filters * bottleneck_ratio)
    if width % group_width:
        raise ValueError(f"{name}: bottleneck width {width} is not a multiple of group_width {group_width}")
    groups = width // group_width
    wd = dict(weight_decay=weight_decay)
    out = layers.Rescaling(beta, name=f"{name}_beta")(scaled_gelu(x, f"{name}_preact"))
    shortcut = x
    if strides != 1 or in_channels != filters:
        shortcut = out
        if strides != 1:
            shortcut = layers.AveragePooling2D(2, strides=strides, padding="same", name=f"{name}_shortcut_pool")(out)
        shortcut = ws_conv(shortcut, filters, 1, name=f"{name}_shortcut_conv", **wd)
    out = ws_conv(out, width, 1, name=f"{name}_conv0", **wd)
    out = ws_conv(scaled_gelu(out, f"{name}_act0"), width, 3, strides, groups=groups, name=f"{name}_conv1", **wd)
    out = ws_conv(scaled_gelu(out, f"{name}_act1"), width, 3, groups=groups, name=f"{name}_conv1b", **wd)
    out = ws_conv(scaled_gelu(out, f"{name}_act1b"), filters, 1, name=f"{name}_conv2", **wd)
    gate = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_squeeze")(out)
    gate = layers.Conv2D(max(1, int(filters * se_ratio)), 1, activation="relu", name=f"{name}_se_reduce")(gate)
    gate = layers.Conv2D(filters, 1, activation="sigmoid", name=f"{name}_se_expand")(gate)
    gate = layers.Rescaling(2.0, name=f"{name}_se_times2")(gate)
    out = layers.Multiply(name=f"{name}_se_excite")([out, gate])
    if drop_rate:
        out = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}_drop")(out)
    out = ScalarGain(0.0, name=f"{name}_skip_gain")(out)
    out = layers.Rescaling(alpha, name=f"{name}_alpha")(out)
    return layers.Add(name=f"{name}_add")([shortcut, out])
