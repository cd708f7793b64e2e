"""RegNet's residual bottleneck with group convolution: the X block, and the Y block (X plus squeeze-excite)."""

from __future__ import annotations

from keras import layers

from kcnn.blocks.common import channels, conv_bn_act
from kcnn.blocks.mbconv import squeeze_excite_to


def regnet_block(x, filters: int, strides: int = 1, *, group_width: int, bottleneck_ratio: float = 1.0,
                 se_ratio: float = 0.0, weight_decay: float = 0.0, bn_momentum: float | None = None,
                 bn_epsilon: float | None = None, name: str):
    """Radosavovic et al. 2020, Fig. 4: 1x1 conv to ``filters * bottleneck_ratio``, 3x3 group conv
    (groups of ``group_width`` channels) with the stride, optional squeeze-excite to ``se_ratio``
    of the block's input width (RegNetY), 1x1 conv to ``filters``; BN after each, ReLU after the
    first two and after the sum. The shortcut is a strided 1x1 conv + BN where the shape changes.
    """
    in_channels = channels(x)
    inner = int(round(filters * bottleneck_ratio))
    if inner % group_width:
        raise ValueError(f"{name}: bottleneck width {inner} is not a multiple of group_width {group_width}")
    bn = dict(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon, weight_decay=weight_decay)
    shortcut = x
    if strides != 1 or in_channels != filters:
        shortcut = conv_bn_act(x, filters, 1, strides, activation=None, name=f"{name}_shortcut", **bn)
    x = conv_bn_act(x, inner, 1, name=f"{name}_a", **bn)
    x = conv_bn_act(x, inner, 3, strides, groups=inner // group_width, name=f"{name}_b", **bn)
    if se_ratio:
        x = squeeze_excite_to(x, max(1, int(in_channels * se_ratio)), name=f"{name}_se")
    x = conv_bn_act(x, filters, 1, activation=None, name=f"{name}_c", **bn)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)
