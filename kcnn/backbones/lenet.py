"""LeNet-5 (LeCun et al., 1998, "Gradient-based learning applied to document recognition")."""

from __future__ import annotations

from keras import layers

from kcnn.backbones.base import backbone_model, image_input, register
from kcnn.blocks import conv_bn_act

PAPER = "LeCun et al., Proc. IEEE 1998, section II.B"


@register("lenet5", input_shape=(32, 32, 1), head="dense",
          head_kwargs={"hidden": (84,), "activation": "tanh", "dropout": 0.0}, paper=PAPER)
def lenet5(input_shape=(32, 32, 1), *, activation="tanh", pooling="average", name="lenet5"):
    """C1 (6@5x5), S2, C3 (16@5x5), S4, C5 (120@5x5) on a 32x32 image.

    Differences from the paper, as in every modern re-implementation: C3 connects
    to all six S2 maps (the paper's sparse connection table saves 900 weights: 1,516 against 2,416),
    subsampling is a plain pooling layer (the paper's S2/S4 have a trainable
    coefficient and bias per map), and the default head ends in softmax rather
    than Euclidean RBF units. Outputs: C1 (28x28), C3 (10x10), C5 (1x1).
    """
    if pooling not in ("average", "max"):
        raise ValueError(f"pooling must be 'average' or 'max', got {pooling!r}")
    pool = layers.AveragePooling2D if pooling == "average" else layers.MaxPooling2D
    inputs = image_input(input_shape)
    common = dict(padding="valid", activation=activation, batch_norm=False)
    c1 = conv_bn_act(inputs, 6, 5, name="c1", **common)
    s2 = pool(2, name="s2")(c1)
    c3 = conv_bn_act(s2, 16, 5, name="c3", **common)
    s4 = pool(2, name="s4")(c3)
    c5 = conv_bn_act(s4, 120, 5, name="c5", **common)
    return backbone_model(inputs, [c1, c3, c5], name)
