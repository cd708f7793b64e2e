"""MobileNet v3 Large and Small (Howard et al., ICCV 2019), with the "minimalistic" variants."""

from __future__ import annotations

from kcnn.backbones.base import backbone_model, check_width, image_input, register
from kcnn.backbones.levels import last_map_per_stride
from kcnn.blocks import batch_norm_options, conv_bn_act, make_divisible
from kcnn.blocks.mbconv import mbconv

PAPER = "Howard et al., ICCV 2019, Tables 1 and 2"

# Rows of Tables 1 (Large) and 2 (Small): kernel, expansion size, output channels, squeeze-excite,
# nonlinearity (RE = ReLU, HS = hard-swish), stride.
LARGE = [(3, 16, 16, False, "RE", 1), (3, 64, 24, False, "RE", 2), (3, 72, 24, False, "RE", 1),
         (5, 72, 40, True, "RE", 2), (5, 120, 40, True, "RE", 1), (5, 120, 40, True, "RE", 1),
         (3, 240, 80, False, "HS", 2), (3, 200, 80, False, "HS", 1), (3, 184, 80, False, "HS", 1),
         (3, 184, 80, False, "HS", 1), (3, 480, 112, True, "HS", 1), (3, 672, 112, True, "HS", 1),
         (5, 672, 160, True, "HS", 2), (5, 960, 160, True, "HS", 1), (5, 960, 160, True, "HS", 1)]
SMALL = [(3, 16, 16, True, "RE", 2), (3, 72, 24, False, "RE", 2), (3, 88, 24, False, "RE", 1),
         (5, 96, 40, True, "HS", 2), (5, 240, 40, True, "HS", 1), (5, 240, 40, True, "HS", 1),
         (5, 120, 48, True, "HS", 1), (5, 144, 48, True, "HS", 1), (5, 288, 96, True, "HS", 2),
         (5, 576, 96, True, "HS", 1), (5, 576, 96, True, "HS", 1)]
TABLES = {"large": LARGE, "small": SMALL}
STEM, LAST_EXPANSION, SE_RATIO = 16, 6, 0.25
# The classifier: pooled features -> 1280 (Large) / 1024 (Small) units with the network's nonlinearity.
HEAD_UNITS = {"large": 1280, "small": 1024}


def mobilenet_v3(input_shape=(224, 224, 3), *, size: str = "large", width: float = 1.0,
                 minimalistic: bool = False, weight_decay: float = 0.0, name: str = "mobilenet_v3"):
    """The family builder: a 3x3/2 stem with 16 channels, the bneck rows of Table 1 or 2, a 1x1
    convolution to six times the last width.

    Channels are scaled by ``width`` and rounded to multiples of 8; each block expands by the
    table's ratio of expansion size to input width. ``minimalistic=True`` drops squeeze-excite,
    hard-swish and 5x5 kernels (3x3 and ReLU everywhere). Squeeze-excite reduces to a quarter of
    the expanded width (rounded to 8) with a hard-sigmoid gate. BN momentum 0.999, epsilon 1e-3.
    Outputs: the last map at strides 2 (4 for Small, whose first block strides), 4, 8, 16, 32.

    keras.applications' checkpoints (width 1.0) load with the defaults (``kcnn.weights``): its
    stride-2 ``ZeroPadding2D(correct_pad)`` + "valid" depthwise convolutions pad as "same" does at
    a fixed input size, its classifier's 1x1 convolutions become the head's Dense layers, and its
    in-model Rescaling to [-1, 1] is applied outside (``kcnn.weights.preprocessing``, "tf" mode).
    """
    if size not in TABLES:
        raise ValueError(f"size must be 'large' or 'small', got {size!r}")
    check_width(width)
    inputs = image_input(input_shape)
    bn = dict(weight_decay=weight_decay)
    act = {"RE": "relu", "HS": "relu" if minimalistic else "hard_swish"}
    x = conv_bn_act(inputs, make_divisible(STEM * width), 3, 2, activation=act["HS"], name="stem", **bn)
    maps, paper_in = [(x, 2)], STEM
    for i, (kernel, expansion, out, se, nonlinearity, stride) in enumerate(TABLES[size]):
        if minimalistic:
            kernel, se = 3, False
        in_channels = int(x.shape[-1])
        expanded = make_divisible(in_channels * expansion / paper_in)
        x = mbconv(x, make_divisible(out * width), kernel, stride, expanded=expanded,
                   se_channels=make_divisible(expanded * SE_RATIO) if se else None, activation=act[nonlinearity],
                   se_activation="relu", se_gate="hard_sigmoid", name=f"block{i}", **bn)
        maps.append((x, stride))
        paper_in = out
    x = conv_bn_act(x, make_divisible(int(x.shape[-1]) * LAST_EXPANSION), 1, activation=act["HS"], name="last",
                    **bn)
    maps.append((x, 1))
    return backbone_model(inputs, last_map_per_stride(maps), name)


def _head(size, minimalistic):
    return dict(head="dense", head_kwargs={"hidden": (HEAD_UNITS[size],), "dropout": 0.2, "pool": "avg",
                                           "activation": "relu" if minimalistic else "hard_swish"})


@register("mobilenet_v3_large", input_shape=(224, 224, 3), paper=PAPER, **_head("large", False))
@batch_norm_options(momentum=0.999, epsilon=1e-3)  # keras.applications\' values
def mobilenet_v3_large(input_shape=(224, 224, 3), *, width=1.0, weight_decay=0.0, name="mobilenet_v3_large"):
    """MobileNet v3 Large (Table 1); ``width`` is the paper's multiplier (0.75, 1.0 ...)."""
    return mobilenet_v3(input_shape, size="large", width=width, weight_decay=weight_decay, name=name)


@register("mobilenet_v3_small", input_shape=(224, 224, 3), paper=PAPER, **_head("small", False))
@batch_norm_options(momentum=0.999, epsilon=1e-3)  # keras.applications\' values
def mobilenet_v3_small(input_shape=(224, 224, 3), *, width=1.0, weight_decay=0.0, name="mobilenet_v3_small"):
    """MobileNet v3 Small (Table 2); ``width`` is the paper's multiplier (0.75, 1.0 ...)."""
    return mobilenet_v3(input_shape, size="small", width=width, weight_decay=weight_decay, name=name)


@register("mobilenet_v3_large_minimalistic", input_shape=(224, 224, 3), paper=PAPER, **_head("large", True))
@batch_norm_options(momentum=0.999, epsilon=1e-3)  # keras.applications\' values
def mobilenet_v3_large_minimalistic(input_shape=(224, 224, 3), *, width=1.0, weight_decay=0.0,
                                    name="mobilenet_v3_large_minimalistic"):
    """MobileNet v3 Large without squeeze-excite, hard-swish or 5x5 kernels (ReLU and 3x3 throughout)."""
    return mobilenet_v3(input_shape, size="large", width=width, minimalistic=True, weight_decay=weight_decay,
                        name=name)


@register("mobilenet_v3_small_minimalistic", input_shape=(224, 224, 3), paper=PAPER, **_head("small", True))
@batch_norm_options(momentum=0.999, epsilon=1e-3)  # keras.applications\' values
def mobilenet_v3_small_minimalistic(input_shape=(224, 224, 3), *, width=1.0, weight_decay=0.0,
                                    name="mobilenet_v3_small_minimalistic"):
    """MobileNet v3 Small without squeeze-excite, hard-swish or 5x5 kernels (ReLU and 3x3 throughout)."""
    return mobilenet_v3(input_shape, size="small", width=width, minimalistic=True, weight_decay=weight_decay,
                        name=name)
