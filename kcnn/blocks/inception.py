"""GoogLeNet's Inception module (Szegedy et al., 2015, Fig. 2b)."""

from __future__ import annotations

from keras import layers

from kcnn.blocks.common import Activation, conv_bn_act


def inception(
    x,
    filters_1x1: int,
    reduce_3x3: int,
    filters_3x3: int,
    reduce_5x5: int,
    filters_5x5: int,
    pool_proj: int,
    *,
    batch_norm: bool = False,
    activation: Activation = "relu",
    weight_decay: float = 0.0,
    kernel_5x5: int = 5,
    name: str,
):
    """Four parallel branches concatenated on channels.

    1x1; 1x1 -> 3x3; 1x1 -> 5x5; 3x3 max pool (stride 1) -> 1x1. The arguments
    follow the columns of the paper's Table 1 ("#1x1", "#3x3 reduce", "#3x3",
    "#5x5 reduce", "#5x5", "pool proj"). ``kernel_5x5=3`` makes the "5x5" branch a
    3x3 convolution, as torchvision's GoogLeNet (and its checkpoints) have it.
    """
    common = dict(activation=activation, batch_norm=batch_norm, weight_decay=weight_decay)
    b1 = conv_bn_act(x, filters_1x1, 1, name=f"{name}_1x1", **common)
    b3 = conv_bn_act(x, reduce_3x3, 1, name=f"{name}_3x3_reduce", **common)
    b3 = conv_bn_act(b3, filters_3x3, 3, name=f"{name}_3x3", **common)
    b5 = conv_bn_act(x, reduce_5x5, 1, name=f"{name}_5x5_reduce", **common)
    b5 = conv_bn_act(b5, filters_5x5, kernel_5x5, name=f"{name}_5x5", **common)
    bp = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    bp = conv_bn_act(bp, pool_proj, 1, name=f"{name}_pool_proj", **common)
    return layers.Concatenate(axis=-1, name=f"{name}_concat")([b1, b3, b5, bp])
