"""DenseNet blocks (Huang et al., 2017): dense block with bottleneck layers, and transition."""

from __future__ import annotations

from keras import layers

from kcnn.blocks.common import KERNEL_INIT, activation_layer, channels, regularizer
from kcnn.blocks.normalization import batch_norm

BN_EPSILON = 1.001e-5  # what kcnn.backbones.densenet121 uses; the blocks read the builder's setting


def _bn_act_conv(x, filters: int, kernel_size: int, weight_decay: float, bn_epsilon: float | None, name: str):
    """Pre-activation unit: BN, ReLU, conv (DenseNet's composite function H)."""
    x = batch_norm(x, f"{name}_bn", epsilon=bn_epsilon)
    x = activation_layer(x, "relu", f"{name}_act")
    return layers.Conv2D(
        filters,
        kernel_size,
        padding="same",
        use_bias=False,
        kernel_initializer=KERNEL_INIT,
        kernel_regularizer=regularizer(weight_decay),
        name=f"{name}_conv",
    )(x)


def dense_block(
    x, num_layers: int, growth_rate: int = 32, *, bn_size: int = 4, weight_decay: float = 0.0,
    bn_epsilon: float | None = None, name: str
):
    """``num_layers`` BN-ReLU-1x1(bn_size*k)-BN-ReLU-3x3(k) layers, each fed all earlier maps."""
    if num_layers < 1 or growth_rate < 1:
        raise ValueError(f"dense_block {name}: num_layers and growth_rate must be >= 1")
    for i in range(1, num_layers + 1):
        y = _bn_act_conv(x, bn_size * growth_rate, 1, weight_decay, bn_epsilon, f"{name}_layer{i}_1")
        y = _bn_act_conv(y, growth_rate, 3, weight_decay, bn_epsilon, f"{name}_layer{i}_2")
        x = layers.Concatenate(axis=-1, name=f"{name}_layer{i}_concat")([x, y])
    return x


def transition(x, compression: float = 0.5, *, weight_decay: float = 0.0, bn_epsilon: float | None = None,
               name: str):
    """BN-ReLU-1x1 conv to ``compression`` times the channels, then 2x2 average pooling."""
    if not 0 < compression <= 1:
        raise ValueError(f"transition compression must be in (0, 1], got {compression}")
    x = _bn_act_conv(x, int(channels(x) * compression), 1, weight_decay, bn_epsilon, name)
    return layers.AveragePooling2D(2, strides=2, name=f"{name}_pool")(x)
