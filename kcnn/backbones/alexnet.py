"""AlexNet (Krizhevsky, Sutskever and Hinton, 2012), the original single-tower 96-256-384-384-256 layout."""

from __future__ import annotations

from keras import layers

from kcnn.backbones.base import backbone_model, image_input, register
from kcnn.blocks import conv_bn_act
from kcnn.layers import LocalResponseNormalization

PAPER = "Krizhevsky et al., NeurIPS 2012, section 3.5 and Figure 2"

# (filters, kernel, stride, padding, LRN after, max-pool after)
SPEC = [
    (96, 11, 4, 2, True, True),
    (256, 5, 1, 2, True, True),
    (384, 3, 1, 1, False, False),
    (384, 3, 1, 1, False, False),
    (256, 3, 1, 1, False, True),
]


@register("alexnet", input_shape=(224, 224, 3), head="dense",
          head_kwargs={"hidden": (4096, 4096), "dropout": 0.5}, paper=PAPER)
def alexnet(input_shape=(224, 224, 3), *, lrn=True, filters=(96, 256, 384, 384, 256), name="alexnet"):
    """Five convolutions with ReLU, LRN after the first two, overlapping 3x3/2 max pooling.

    The paper split conv2, conv4 and conv5 over two GPUs; this is the single-tower
    equivalent with full connectivity (62,378,344 parameters with its classifier at
    1000 classes). conv1 pads by 2 so 224x224 inputs give the paper's 55x55 maps.
    Outputs: pool1 (27x27x96), pool2 (13x13x256), pool5 (6x6x256). torchvision's
    checkpoint is the "one weird trick" variant (Krizhevsky, arXiv:1404.5997):
    ``filters=(64, 192, 384, 256, 256), lrn=False``.
    """
    if len(filters) != len(SPEC):
        raise ValueError(f"filters must give {len(SPEC)} convolution widths, got {filters!r}")
    inputs = image_input(input_shape)
    x, features = inputs, []
    for i, (width, (_, kernel, stride, pad, use_lrn, use_pool)) in enumerate(zip(filters, SPEC), start=1):
        x = conv_bn_act(x, width, kernel, stride, padding=pad, batch_norm=False, name=f"conv{i}")
        if use_lrn and lrn:
            x = LocalResponseNormalization(name=f"norm{i}")(x)
        if use_pool:
            x = layers.MaxPooling2D(3, strides=2, name=f"pool{i}")(x)
            features.append(x)
    return backbone_model(inputs, features, name)
