"""VGG (Simonyan and Zisserman, 2015), configurations A, B, D and E of Table 1."""

from __future__ import annotations

from keras import layers

from kcnn.backbones.base import backbone_model, image_input, register
from kcnn.blocks import batch_norm_options, conv_bn_act

PAPER = "Simonyan and Zisserman, ICLR 2015, Table 1"

# Convolutions per block; every block doubles the width up to 512 and ends in a 2x2 max pool.
DEPTHS = {"vgg11": (1, 1, 2, 2, 2), "vgg13": (2, 2, 2, 2, 2), "vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
WIDTHS = (64, 128, 256, 512, 512)


def _vgg(depths, input_shape, batch_norm, name):
    inputs = image_input(input_shape)
    x, features = inputs, []
    for block, (depth, width) in enumerate(zip(depths, WIDTHS), start=1):
        for i in range(1, depth + 1):
            x = conv_bn_act(x, width, 3, batch_norm=batch_norm, use_bias=True, name=f"block{block}_conv{i}")
        x = layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)
        features.append(x)
    return backbone_model(inputs, features, name)


def _register(variant: str):
    @register(variant, input_shape=(224, 224, 3), head="dense",
              head_kwargs={"hidden": (4096, 4096), "dropout": 0.5}, paper=PAPER)
    @batch_norm_options(momentum=0.99, epsilon=1e-3)  # batch_norm=True only (not in the paper): Keras' defaults
    def builder(input_shape=(224, 224, 3), *, batch_norm=False, name=variant):
        return _vgg(DEPTHS[variant], input_shape, batch_norm, name)

    builder.__name__ = builder.__qualname__ = variant
    builder.__doc__ = (
        f"{variant.upper()}: 3x3 convolutions in five blocks of {DEPTHS[variant]} layers, each block "
        "ending in 2x2 max pooling; ``batch_norm=True`` adds BN after every convolution. "
        "Outputs: each block's pooled map (strides 2 to 32)."
    )
    return builder


vgg11, vgg13, vgg16, vgg19 = (_register(v) for v in DEPTHS)
