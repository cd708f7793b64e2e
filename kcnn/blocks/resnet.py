"""ResNet blocks (He et al., 2016): basic (two 3x3) and bottleneck (1x1-3x3-1x1)."""

from __future__ import annotations

from keras import layers

from kcnn.blocks.common import Activation, activation_layer, channels, conv_bn_act


def _shortcut(x, out_channels: int, strides: int, common: dict, name: str):
    """Identity when shapes agree, else a projection (1x1 conv + BN, the paper's option B)."""
    if strides == 1 and channels(x) == out_channels:
        return x
    return conv_bn_act(x, out_channels, 1, strides, activation=None, name=f"{name}_shortcut", **common)


def _padding_3x3(strides: int):
    """Stride-2 3x3 convolutions pad one pixel on every side (as Caffe, PyTorch and keras.applications do)."""
    return 1 if strides > 1 else "same"


def residual_basic(
    x,
    filters: int,
    strides: int = 1,
    *,
    activation: Activation = "relu",
    weight_decay: float = 0.0,
    bn_epsilon: float | None = None,
    use_bias: bool = False,
    name: str,
):
    """Two 3x3 conv-BN layers with a shortcut; ResNet-18/34."""
    common = dict(weight_decay=weight_decay, bn_epsilon=bn_epsilon, use_bias=use_bias)
    shortcut = _shortcut(x, filters, strides, common, name)
    x = conv_bn_act(x, filters, 3, strides, padding=_padding_3x3(strides), activation=activation,
                    name=f"{name}_1", **common)
    x = conv_bn_act(x, filters, 3, activation=None, name=f"{name}_2", **common)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return activation_layer(x, activation, f"{name}_out")


def residual_bottleneck(
    x,
    filters: int,
    strides: int = 1,
    *,
    expansion: int = 4,
    stride_in_3x3: bool = False,
    activation: Activation = "relu",
    weight_decay: float = 0.0,
    bn_epsilon: float | None = None,
    use_bias: bool = False,
    name: str,
):
    """1x1 reduce, 3x3, 1x1 expand to ``filters * expansion``; ResNet-50 and deeper.

    The paper strides the first 1x1 convolution; ``stride_in_3x3=True`` gives the
    later "v1.5" variant that strides the 3x3 instead. ``use_bias=True`` gives every
    convolution a bias, as keras.applications' ResNet50 has.
    """
    out = filters * expansion
    common = dict(weight_decay=weight_decay, bn_epsilon=bn_epsilon, use_bias=use_bias)
    shortcut = _shortcut(x, out, strides, common, name)
    s1, s3 = (1, strides) if stride_in_3x3 else (strides, 1)
    x = conv_bn_act(x, filters, 1, s1, activation=activation, name=f"{name}_1", **common)
    x = conv_bn_act(x, filters, 3, s3, padding=_padding_3x3(s3), activation=activation, name=f"{name}_2", **common)
    x = conv_bn_act(x, out, 1, activation=None, name=f"{name}_3", **common)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return activation_layer(x, activation, f"{name}_out")
