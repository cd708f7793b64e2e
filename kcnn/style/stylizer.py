"""The fast feed-forward stylizer of Johnson, Alahi and Fei-Fei ("Perceptual Losses for Real-Time
Style Transfer and Super-Resolution", ECCV 2016; architecture in its supplementary material).

An image-to-image network: reflection padding, a 9x9 convolution, two stride-2 convolutions down,
residual blocks, two upsampling stages back, a 9x9 convolution to RGB and a scaled tanh, with
instance normalisation throughout (Ulyanov et al., 2016, which Johnson's released models adopted).
Upsampling is nearest-neighbour resize followed by a convolution (Odena et al., 2016) rather than a
strided transposed convolution, which avoids checkerboard artefacts. Input and output are RGB
pixels in [0, 255]; spatial sizes are free (multiples of 4 come back at the same size).
"""

from __future__ import annotations

import keras
from keras import layers

from kcnn.layers import ReflectionPadding2D
from kcnn.registry import Registry

STYLIZERS = Registry("stylizer")
PAPER = "Johnson, Alahi and Fei-Fei, ECCV 2016, supplementary Table 1 (resize-convolution upsampling)"


def _conv(x, filters, kernel_size, strides, name, *, norm=True, activation="relu"):
    x = ReflectionPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="valid", name=f"{name}_conv")(x)
    if norm:
        x = layers.GroupNormalization(groups=-1, epsilon=1e-5, name=f"{name}_in")(x)  # instance norm
    return layers.Activation(activation, name=f"{name}_act")(x) if activation else x


def residual_block(x, name: str):
    """Two 3x3 convolutions with instance norm; the identity is added after the second (no ReLU after)."""
    filters = int(x.shape[-1])
    y = _conv(x, filters, 3, 1, f"{name}_1")
    y = _conv(y, filters, 3, 1, f"{name}_2", activation=None)
    return layers.Add(name=f"{name}_add")([x, y])


@STYLIZERS.register("johnson2016", paper=PAPER)
def johnson2016(input_shape=(None, None, 3), *, filters=(32, 64, 128), residual_blocks: int = 5,
                name: str = "johnson2016") -> keras.Model:
    """The stylizer: ``filters`` widths of the three down stages, ``residual_blocks`` at the lowest level."""
    if len(filters) != 3 or any(not isinstance(f, int) or f < 1 for f in filters):
        raise ValueError(f"filters must be three positive integers (the three stages' widths), got {filters!r}")
    if not isinstance(residual_blocks, int) or residual_blocks < 0:
        raise ValueError(f"residual_blocks must be an integer >= 0, got {residual_blocks!r}")
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = layers.Rescaling(1.0 / 255.0, name="unit_range")(inputs)
    x = _conv(x, filters[0], 9, 1, "down1")
    x = _conv(x, filters[1], 3, 2, "down2")
    x = _conv(x, filters[2], 3, 2, "down3")
    for index in range(1, residual_blocks + 1):
        x = residual_block(x, f"res{index}")
    for index, width in ((1, filters[1]), (2, filters[0])):
        x = layers.UpSampling2D(2, interpolation="nearest", name=f"up{index}_resize")(x)
        x = _conv(x, width, 3, 1, f"up{index}")
    x = _conv(x, 3, 9, 1, "output", norm=False, activation=None)
    x = layers.Activation("tanh", dtype="float32", name="output_tanh")(x)
    outputs = layers.Rescaling(127.5, offset=127.5, dtype="float32", name="pixels")(x)
    return keras.Model(inputs, outputs, name=name)
