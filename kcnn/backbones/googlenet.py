"""GoogLeNet, Inception v1 (Szegedy et al., 2015), without the auxiliary classifiers."""

from __future__ import annotations


from kcnn.backbones.base import backbone_model, image_input, register
from kcnn.blocks import batch_norm_options, conv_bn_act, inception, max_pool
from kcnn.layers import LocalResponseNormalization

PAPER = "Szegedy et al., CVPR 2015, Table 1 and Figure 3"

# Table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj; "pool" is a 3x3/2 max pool.
INCEPTIONS = [
    ("3a", (64, 96, 128, 16, 32, 32)),
    ("3b", (128, 128, 192, 32, 96, 64)),
    "pool",
    ("4a", (192, 96, 208, 16, 48, 64)),
    ("4b", (160, 112, 224, 24, 64, 64)),
    ("4c", (128, 128, 256, 24, 64, 64)),
    ("4d", (112, 144, 288, 32, 64, 64)),
    ("4e", (256, 160, 320, 32, 128, 128)),
    "pool",
    ("5a", (256, 160, 320, 32, 128, 128)),
    ("5b", (384, 192, 384, 48, 128, 128)),
]


@register("googlenet", input_shape=(224, 224, 3), head="gap_linear", head_kwargs={"dropout": 0.4}, paper=PAPER)
@batch_norm_options(momentum=0.99, epsilon=1e-3)  # batch_norm=True only (not in the paper): Keras' defaults
def googlenet(input_shape=(224, 224, 3), *, batch_norm=False, lrn=None, symmetric_padding=False, ceil_mode=False,
              last_pool_size=3, kernel_5x5=5, name="googlenet"):
    """Stem (7x7/2, pool, LRN, 1x1, 3x3, LRN, pool) and nine Inception modules.

    As in the paper there is no batch norm and LRN follows the first pool and the
    second convolution; ``batch_norm=True`` adds BN and, unless ``lrn`` says
    otherwise, drops LRN. Outputs: conv1 (stride 2), conv2 (4), 3b (8), 4e (16), 5b (32).

    torchvision's GoogLeNet, whose checkpoints ``kcnn.weights`` maps, differs from the
    paper in ways these options reproduce (same output sizes at 224): conv1 padded 3
    pixels on every side (``symmetric_padding``; "same" pads 2 above, 3 below), PyTorch
    ceil-mode pooling (``ceil_mode``), a 2x2/2 pool before 5a (``last_pool_size=2``),
    a 3x3 convolution in the "5x5" branch (``kernel_5x5=3``), BN everywhere, no LRN.
    """
    lrn = (not batch_norm) if lrn is None else lrn
    inputs = image_input(input_shape)
    common = dict(batch_norm=batch_norm)

    def pool(x, size, label):
        return max_pool(x, size, 2, padding="same", ceil_mode=ceil_mode, name=label)

    x = conv_bn_act(inputs, 64, 7, 2, padding=3 if symmetric_padding else "same", name="conv1", **common)
    features = [x]
    x = pool(x, 3, "pool1")
    if lrn:
        x = LocalResponseNormalization(name="norm1")(x)
    x = conv_bn_act(x, 64, 1, name="conv2_reduce", **common)
    x = conv_bn_act(x, 192, 3, name="conv2", **common)
    if lrn:
        x = LocalResponseNormalization(name="norm2")(x)
    features.append(x)
    x = pool(x, 3, "pool2")
    pools = 2
    for item in INCEPTIONS:
        if item == "pool":
            features.append(x)
            pools += 1
            x = pool(x, last_pool_size if pools == 4 else 3, f"pool{pools}")
            continue
        label, filters = item
        x = inception(x, *filters, kernel_5x5=kernel_5x5, name=f"inception_{label}", **common)
    features.append(x)
    return backbone_model(inputs, features, name)
