"""AlexNet (Krizhevsky, Sutskever and Hinton, 2012): 96-256-384-384-256, single tower or the paper's two."""

from __future__ import annotations

from keras import layers

from kcnn.backbones.base import backbone_model, image_input, register
from kcnn.blocks import conv_bn_act
from kcnn.layers import LocalResponseNormalization

PAPER = "Krizhevsky et al., NeurIPS 2012, section 3.5 and Figure 2"

# (filters, kernel, stride, padding, LRN after, max-pool after, split over the two GPUs in Figure 2)
SPEC = [
    (96, 11, 4, 2, True, True, False),
    (256, 5, 1, 2, True, True, True),
    (384, 3, 1, 1, False, False, False),
    (384, 3, 1, 1, False, False, True),
    (256, 3, 1, 1, False, True, True),
]


@register("alexnet", input_shape=(224, 224, 3), head="dense",
          head_kwargs={"hidden": (4096, 4096), "dropout": 0.5}, paper=PAPER)
def alexnet(input_shape=(224, 224, 3), *, lrn=True, groups=1, filters=(96, 256, 384, 384, 256), name="alexnet"):
    """Five convolutions with ReLU, LRN after the first two, overlapping 3x3/2 max pooling.

    The paper split conv2, conv4 and conv5 over two GPUs; this is the single-tower
    equivalent with full connectivity (62,378,344 parameters with its classifier at
    1000 classes); ``groups=2`` builds the paper's two towers: conv2, conv4 and conv5 see
    only their own GPU's half of the channels, conv3 and the classifier cross (60,965,224
    parameters, 724M multiply-adds). ``lrn=False`` leaves out local response normalisation.
    conv1 pads by 2 so 224x224 inputs give the paper's 55x55 maps.
    Outputs: pool1 (27x27x96), pool2 (13x13x256), pool5 (6x6x256). torchvision's
    checkpoint is the "one weird trick" variant (Krizhevsky, arXiv:1404.5997):
    ``filters=(64, 192, 384, 256, 256), lrn=False``.
    """
    if groups not in (1, 2):
        raise ValueError(f"groups must be 1 (single tower) or 2 (the paper's two GPUs), got {groups!r}")
    if len(filters) != len(SPEC):
        raise ValueError(f"filters must give {len(SPEC)} convolution widths, got {filters!r}")
    inputs = image_input(input_shape)
    x, features = inputs, []
    for i, (width, (_, kernel, stride, pad, use_lrn, use_pool, split)) in enumerate(zip(filters, SPEC), start=1):
        x = conv_bn_act(x, width, kernel, stride, padding=pad, groups=groups if split else 1, batch_norm=False,
                        name=f"conv{i}")
        if use_lrn and lrn:
            x = LocalResponseNormalization(name=f"norm{i}")(x)
        if use_pool:
            x = layers.MaxPooling2D(3, strides=2, name=f"pool{i}")(x)
            features.append(x)
    return backbone_model(inputs, features, name)
