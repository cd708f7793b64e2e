"""A plain convolutional network: stages of 3x3 conv-BN-ReLU, 2x2 max pooling between them.

Not a paper's network: VGG's pattern (Simonyan and Zisserman, 2015: stacked 3x3 convolutions, 2x2 max
pooling, the width doubling per stage) at CIFAR width, with batch norm (Ioffe and Szegedy, 2015) after
every convolution. Its last stage keeps a small receptive field and a fine map, which is what makes
Grad-CAM localise on small images (``kcnn visualize``'s example recipe, ``pipelines/configs/shapes.yaml``).
"""

from __future__ import annotations

from keras import layers

from kcnn.backbones.base import backbone_model, image_input, register
from kcnn.blocks import batch_norm_options, conv_bn_act

PAPER = "VGG's 3x3 pattern at CIFAR width with batch norm (no paper of its own; see kcnn/backbones/convnet.py)"


@register("convnet", input_shape=(32, 32, 3), head="gap_linear", paper=PAPER)
@batch_norm_options(momentum=0.99, epsilon=1e-3)  # Keras' defaults
def convnet(input_shape=(32, 32, 3), *, widths=(16, 32, 64), depth: int = 1, name="convnet"):
    """``len(widths)`` stages of ``depth`` 3x3 conv-BN-ReLU layers (``stage{s}_conv{i}``), 2x2 max pooling
    between stages (none after the last). Outputs: each stage's last activation (strides 1, 2, 4, ...).

    The defaults (16, 32, 64 channels, one convolution each) have a 3x3-then-pool receptive field of
    18 pixels at the last stage: on a 48-pixel image it sees a part of the image, not all of it.
    """
    widths = tuple(widths)
    if not widths or any(not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"widths must be a non-empty sequence of positive integers, got {widths!r}")
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive integer, got {depth!r}")
    inputs = image_input(input_shape)
    x, features = inputs, []
    for stage, width in enumerate(widths, start=1):
        if stage > 1:
            x = layers.MaxPooling2D(2, name=f"stage{stage - 1}_pool")(x)
        for i in range(1, depth + 1):
            x = conv_bn_act(x, width, 3, name=f"stage{stage}_conv{i}")
        features.append(x)
    return backbone_model(inputs, features, name)
