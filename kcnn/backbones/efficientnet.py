"""EfficientNet B0-B7 (Tan and Le, ICML 2019): the B0 stage table scaled by width, depth and resolution."""

from __future__ import annotations

import math

from kcnn.backbones.base import backbone_model, image_input, register
from kcnn.backbones.levels import last_map_per_stride
from kcnn.blocks import batch_norm_options, conv_bn_act, make_divisible
from kcnn.blocks.mbconv import mbconv

PAPER = "Tan and Le, ICML 2019, Table 1 and section 3.3"

# Table 1 (EfficientNet-B0): expansion, kernel, first stride, output channels, layers per stage.
# Every MBConv has squeeze-and-excitation to a quarter of its input channels.
B0_STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
             (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
STEM, TOP, SE_RATIO = 32, 1280, 0.25

# Compound scaling of the reference implementation: width and depth coefficients, input size, dropout.
VARIANTS = {
    "efficientnet_b0": (1.0, 1.0, 224, 0.2),
    "efficientnet_b1": (1.0, 1.1, 240, 0.2),
    "efficientnet_b2": (1.1, 1.2, 260, 0.3),
    "efficientnet_b3": (1.2, 1.4, 300, 0.3),
    "efficientnet_b4": (1.4, 1.8, 380, 0.4),
    "efficientnet_b5": (1.6, 2.2, 456, 0.4),
    "efficientnet_b6": (1.8, 2.6, 528, 0.5),
    "efficientnet_b7": (2.0, 3.1, 600, 0.5),
}


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Channels scaled by ``width``, to the nearest multiple of ``divisor``, never 10% below."""
    return make_divisible(filters * width, divisor)


def round_repeats(repeats: int, depth: float) -> int:
    """Layers per stage scaled by ``depth``, rounded up."""
    return int(math.ceil(depth * repeats))


def efficientnet(input_shape, *, width: float, depth: float, drop_connect_rate: float = 0.2,
                 activation="swish", weight_decay: float = 0.0, name: str = "efficientnet"):
    """The family builder: a 3x3/2 stem, the seven MBConv stages of Table 1 scaled by ``width`` and
    ``depth``, a 1x1 convolution to ``round_filters(1280)`` channels.

    ``drop_connect_rate`` is the stochastic-depth rate of the last block; block ``b`` of ``n``
    drops its residual branch with rate ``drop_connect_rate * b / n`` during training.
    Outputs: the last map at strides 2, 4, 8, 16 and 32.

    keras.applications' checkpoints load with the defaults (``kcnn.weights``): its stride-2
    ``ZeroPadding2D(correct_pad)`` + "valid" convolutions pad exactly as "same" does at a fixed
    input size, its BN epsilon is 1e-3, its squeeze-excite is 1x1 convolutions as here, and its
    in-model Rescaling + Normalization (ImageNet mean/std on [0, 1] pixels) is applied outside,
    by ``kcnn.weights.preprocessing(name, "keras")``.
    """
    if not 0 <= drop_connect_rate < 1:
        raise ValueError(f"drop_connect_rate must be in [0, 1), got {drop_connect_rate!r}")
    inputs = image_input(input_shape)
    x = conv_bn_act(inputs, round_filters(STEM, width), 3, 2, activation=activation, weight_decay=weight_decay,
                    name="stem")
    maps = [(x, 2)]
    total = sum(round_repeats(row[4], depth) for row in B0_STAGES)
    block = 0
    for stage, (expansion, kernel, stride, filters, repeats) in enumerate(B0_STAGES, start=1):
        out_channels = round_filters(filters, width)
        for i in range(round_repeats(repeats, depth)):
            in_channels = int(x.shape[-1])
            s = stride if i == 0 else 1
            x = mbconv(x, out_channels, kernel, s, expanded=in_channels * expansion,
                       se_channels=max(1, int(in_channels * SE_RATIO)), activation=activation,
                       drop_rate=drop_connect_rate * block / total, weight_decay=weight_decay,
                       name=f"block{stage}{chr(ord('a') + i)}")
            maps.append((x, s))
            block += 1
    x = conv_bn_act(x, round_filters(TOP, width), 1, activation=activation, weight_decay=weight_decay, name="top")
    maps.append((x, 1))
    return backbone_model(inputs, last_map_per_stride(maps), name)


def _variant(variant, input_shape, drop_connect_rate, weight_decay, name):
    width, depth, _, _ = VARIANTS[variant]
    return efficientnet(input_shape, width=width, depth=depth, drop_connect_rate=drop_connect_rate,
                        weight_decay=weight_decay, name=name)


def _meta(variant):
    size, dropout = VARIANTS[variant][2], VARIANTS[variant][3]
    return dict(input_shape=(size, size, 3), head="gap_linear", head_kwargs={"dropout": dropout}, paper=PAPER)


@register("efficientnet_b0", **_meta("efficientnet_b0"))
@batch_norm_options(momentum=0.99, epsilon=1e-3)  # the reference (TF) implementation\'s values
def efficientnet_b0(input_shape=(224, 224, 3), *, drop_connect_rate=0.2, weight_decay=0.0, name="efficientnet_b0"):
    """EfficientNet-B0 (width 1.0, depth 1.0, 224 pixels, dropout 0.2): the searched baseline."""
    return _variant("efficientnet_b0", input_shape, drop_connect_rate, weight_decay, name)


@register("efficientnet_b1", **_meta("efficientnet_b1"))
@batch_norm_options(momentum=0.99, epsilon=1e-3)  # the reference (TF) implementation\'s values
def efficientnet_b1(input_shape=(240, 240, 3), *, drop_connect_rate=0.2, weight_decay=0.0, name="efficientnet_b1"):
    """EfficientNet-B1 (width 1.0, depth 1.1, 240 pixels, dropout 0.2)."""
    return _variant("efficientnet_b1", input_shape, drop_connect_rate, weight_decay, name)


@register("efficientnet_b2", **_meta("efficientnet_b2"))
@batch_norm_options(momentum=0.99, epsilon=1e-3)  # the reference (TF) implementation\'s values
def efficientnet_b2(input_shape=(260, 260, 3), *, drop_connect_rate=0.2, weight_decay=0.0, name="efficientnet_b2"):
    """EfficientNet-B2 (width 1.1, depth 1.2, 260 pixels, dropout 0.3)."""
    return _variant("efficientnet_b2", input_shape, drop_connect_rate, weight_decay, name)


@register("efficientnet_b3", **_meta("efficientnet_b3"))
@batch_norm_options(momentum=0.99, epsilon=1e-3)  # the reference (TF) implementation\'s values
def efficientnet_b3(input_shape=(300, 300, 3), *, drop_connect_rate=0.2, weight_decay=0.0, name="efficientnet_b3"):
    """EfficientNet-B3 (width 1.2, depth 1.4, 300 pixels, dropout 0.3)."""
    return _variant("efficientnet_b3", input_shape, drop_connect_rate, weight_decay, name)


@register("efficientnet_b4", **_meta("efficientnet_b4"))
@batch_norm_options(momentum=0.99, epsilon=1e-3)  # the reference (TF) implementation\'s values
def efficientnet_b4(input_shape=(380, 380, 3), *, drop_connect_rate=0.2, weight_decay=0.0, name="efficientnet_b4"):
    """EfficientNet-B4 (width 1.4, depth 1.8, 380 pixels, dropout 0.4)."""
    return _variant("efficientnet_b4", input_shape, drop_connect_rate, weight_decay, name)


@register("efficientnet_b5", **_meta("efficientnet_b5"))
@batch_norm_options(momentum=0.99, epsilon=1e-3)  # the reference (TF) implementation\'s values
def efficientnet_b5(input_shape=(456, 456, 3), *, drop_connect_rate=0.2, weight_decay=0.0, name="efficientnet_b5"):
    """EfficientNet-B5 (width 1.6, depth 2.2, 456 pixels, dropout 0.4)."""
    return _variant("efficientnet_b5", input_shape, drop_connect_rate, weight_decay, name)


@register("efficientnet_b6", **_meta("efficientnet_b6"))
@batch_norm_options(momentum=0.99, epsilon=1e-3)  # the reference (TF) implementation\'s values
def efficientnet_b6(input_shape=(528, 528, 3), *, drop_connect_rate=0.2, weight_decay=0.0, name="efficientnet_b6"):
    """EfficientNet-B6 (width 1.8, depth 2.6, 528 pixels, dropout 0.5)."""
    return _variant("efficientnet_b6", input_shape, drop_connect_rate, weight_decay, name)


@register("efficientnet_b7", **_meta("efficientnet_b7"))
@batch_norm_options(momentum=0.99, epsilon=1e-3)  # the reference (TF) implementation\'s values
def efficientnet_b7(input_shape=(600, 600, 3), *, drop_connect_rate=0.2, weight_decay=0.0, name="efficientnet_b7"):
    """EfficientNet-B7 (width 2.0, depth 3.1, 600 pixels, dropout 0.5)."""
    return _variant("efficientnet_b7", input_shape, drop_connect_rate, weight_decay, name)
