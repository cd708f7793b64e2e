"""RegNetX and RegNetY (Radosavovic et al., CVPR 2020), generated from the design-space parameters."""

from __future__ import annotations

import math
from dataclasses import dataclass

from kcnn.backbones.base import backbone_model, image_input, register
from kcnn.blocks import batch_norm_options, conv_bn_act
from kcnn.blocks.regnet import regnet_block

PAPER = "Radosavovic et al., CVPR 2020, section 3.3 and Appendix C"
STEM = 32


@dataclass(frozen=True)
class RegNetSpec:
    """One point of the design space: initial width w0, slope wa, multiplier wm, total depth,
    group width, bottleneck ratio and squeeze-excite ratio (0 for RegNetX, 0.25 for RegNetY)."""

    w0: int
    wa: float
    wm: float
    depth: int
    group_width: int
    bottleneck_ratio: float = 1.0
    se_ratio: float = 0.0


# The published models (the paper's Appendix C figures / the reference pycls configurations).
X = {
    "002": (24, 36.44, 2.49, 13, 8), "004": (24, 24.48, 2.54, 22, 16), "006": (48, 36.97, 2.24, 16, 24),
    "008": (56, 35.73, 2.28, 16, 16), "016": (80, 34.01, 2.25, 18, 24), "032": (88, 26.31, 2.25, 25, 48),
    "040": (96, 38.65, 2.43, 23, 40), "064": (184, 60.83, 2.07, 17, 56), "080": (80, 49.56, 2.88, 23, 120),
    "120": (168, 73.36, 2.37, 19, 112), "160": (216, 55.59, 2.1, 22, 128), "320": (320, 69.86, 2.0, 23, 168),
}
Y = {
    "002": (24, 36.44, 2.49, 13, 8), "004": (48, 27.89, 2.09, 16, 8), "006": (48, 32.54, 2.32, 15, 16),
    "008": (56, 38.84, 2.4, 14, 16), "016": (48, 20.71, 2.65, 27, 24), "032": (80, 42.63, 2.66, 21, 24),
    "040": (96, 31.41, 2.24, 22, 64), "064": (112, 33.22, 2.27, 25, 72), "080": (192, 76.82, 2.19, 17, 56),
    "120": (168, 73.36, 2.37, 19, 112), "160": (200, 106.23, 2.48, 18, 112), "320": (232, 115.89, 2.53, 20, 232),
}
SPECS = {
    **{f"regnetx_{k}": RegNetSpec(*v) for k, v in X.items()},
    **{f"regnety_{k}": RegNetSpec(*v, se_ratio=0.25) for k, v in Y.items()},
}


def stage_plan(spec: RegNetSpec, quantum: int = 8) -> list[tuple[int, int, int]]:
    """The quantised-linear rule: ``(width, depth, group width)`` per stage.

    Block j gets the linear width u_j = w0 + wa * j, snapped to w0 * wm^s_j with
    s_j = round(log(u_j / w0) / log(wm)) and rounded to a multiple of ``quantum``;
    consecutive blocks of equal width form a stage. Each stage's group width is then
    capped by its bottleneck width and the bottleneck width rounded to a multiple of it.
    """
    widths = []
    for j in range(spec.depth):
        exponent = round(math.log((spec.w0 + spec.wa * j) / spec.w0) / math.log(spec.wm))
        widths.append(int(round(spec.w0 * spec.wm**exponent / quantum) * quantum))
    stages = []
    for width in widths:
        if stages and stages[-1][0] == width:
            stages[-1][1] += 1
        else:
            stages.append([width, 1])
    plan = []
    for width, depth in stages:
        inner = int(width * spec.bottleneck_ratio)
        group = min(spec.group_width, inner)
        inner = int(round(inner / group) * group)
        plan.append((int(inner / spec.bottleneck_ratio), depth, group))
    return plan


def regnet(input_shape, spec: RegNetSpec, *, weight_decay: float = 0.0, name: str = "regnet"):
    """The family builder: a 3x3/2 stem with 32 channels and the stages of ``stage_plan(spec)``,
    each starting with a stride-2 block. Outputs: stem (stride 2) and each stage (4 to 32).

    The RegNet checkpoints of Keras 2's keras.applications (tf-keras) load with the defaults
    (``kcnn.weights``); their model's Rescaling(1 / 255) is applied outside, by
    ``kcnn.weights.preprocessing(name, "keras")``.
    """
    inputs = image_input(input_shape)
    bn = dict(weight_decay=weight_decay)
    x = conv_bn_act(inputs, STEM, 3, 2, name="stem", **bn)
    features = [x]
    for stage, (width, depth, group) in enumerate(stage_plan(spec), start=1):
        for i in range(depth):
            x = regnet_block(x, width, 2 if i == 0 else 1, group_width=group, bottleneck_ratio=spec.bottleneck_ratio,
                             se_ratio=spec.se_ratio, name=f"stage{stage}_block{i + 1}", **bn)
        features.append(x)
    return backbone_model(inputs, features, name)


def _build(variant, input_shape, weight_decay, name):
    return regnet(input_shape, SPECS[variant], weight_decay=weight_decay, name=name)


def _reg(variant):
    registered = register(variant, input_shape=(224, 224, 3), head="gap_linear", head_kwargs={"dropout": 0.0},
                          paper=PAPER)
    options = batch_norm_options(momentum=0.9, epsilon=1e-5)  # pycls' BN (PyTorch momentum 0.1, eps 1e-5)
    return lambda builder: registered(options(builder))


@_reg("regnetx_002")
def regnetx_002(input_shape=(224, 224, 3), *, weight_decay=0.0, name="regnetx_002"):
    """RegNetX-200MF."""
    return _build("regnetx_002", input_shape, weight_decay, name)

@_reg("regnetx_004")
def regnetx_004(input_shape=(224, 224, 3), *, weight_decay=0.0, name="regnetx_004"):
    """RegNetX-400MF."""
    return _build("regnetx_004", input_shape, weight_decay, name)

@_reg("regnetx_006")
def regnetx_006(input_shape=(224, 224, 3), *, weight_decay=0.0, name="regnetx_006"):
    """RegNetX-600MF."""
    return _build("regnetx_006", input_shape, weight_decay, name)

@_reg("regnetx_008")
def regnetx_008(input_shape=(224, 224, 3), *, weight_decay=0.0, name="regnetx_008"):
    """RegNetX-800MF."""
    return _build("regnetx_008", input_shape, weight_decay, name)

@_reg("regnetx_016")
def regnetx_016(input_shape=(224, 224, 3), *, weight_decay=0.0, name="regnetx_016"):
    """RegNetX-1.6GF."""
    return _build("regnetx_016", input_shape, weight_decay, name)

@_reg("regnetx_032")
def regnetx_032(input_shape=(224, 224, 3), *, weight_decay=0.0, name="regnetx_032"):
    """RegNetX-3.2GF."""
    return _build("regnetx_032", input_shape, weight_decay, name)

@_reg("regnetx_040")
def regnetx_040(input_shape=(224, 224, 3), *, weight_decay=0.0, name="regnetx_040"):
    """RegNetX-4.0GF."""
    return _build("regnetx_040", input_shape, weight_decay, name)

@_reg("regnetx_064")
def regnetx_064(input_shape=(224, 224, 3), *, weight_decay=0.0, name="regnetx_064"):
    """RegNetX-6.4GF."""
    return _build("regnetx_064", input_shape, weight_decay, name)

@_reg("regnetx_080")
def regnetx_080(input_shape=(224, 224, 3), *, weight_decay=0.0, name="regnetx_080"):
    """RegNetX-8.0GF."""
    return _build("regnetx_080", input_shape, weight_decay, name)

@_reg("regnetx_120")
def regnetx_120(input_shape=(224, 224, 3), *, weight_decay=0.0, name="regnetx_120"):
    """RegNetX-12GF."""
    return _build("regnetx_120", input_shape, weight_decay, name)

@_reg("regnetx_160")
def regnetx_160(input_shape=(224, 224, 3), *, weight_decay=0.0, name="regnetx_160"):
    """RegNetX-16GF."""
    return _build("regnetx_160", input_shape, weight_decay, name)

@_reg("regnetx_320")
def regnetx_320(input_shape=(224, 224, 3), *, weight_decay=0.0, name="regnetx_320"):
    """RegNetX-32GF."""
    return _build("regnetx_320", input_shape, weight_decay, name)

@_reg("regnety_002")
def regnety_002(input_shape=(224, 224, 3), *, weight_decay=0.0, name="regnety_002"):
    """RegNetY-200MF."""
    return _build("regnety_002", input_shape, weight_decay, name)

@_reg("regnety_004")
def regnety_004(input_shape=(224, 224, 3), *, weight_decay=0.0, name="regnety_004"):
    """RegNetY-400MF."""
    return _build("regnety_004", input_shape, weight_decay, name)

@_reg("regnety_006")
def regnety_006(input_shape=(224, 224, 3), *, weight_decay=0.0, name="regnety_006"):
    """RegNetY-600MF."""
    return _build("regnety_006", input_shape, weight_decay, name)

@_reg("regnety_008")
def regnety_008(input_shape=(224, 224, 3), *, weight_decay=0.0, name="regnety_008"):
    """RegNetY-800MF."""
    return _build("regnety_008", input_shape, weight_decay, name)

@_reg("regnety_016")
def regnety_016(input_shape=(224, 224, 3), *, weight_decay=0.0, name="regnety_016"):
    """RegNetY-1.6GF."""
    return _build("regnety_016", input_shape, weight_decay, name)

@_reg("regnety_032")
def regnety_032(input_shape=(224, 224, 3), *, weight_decay=0.0, name="regnety_032"):
    """RegNetY-3.2GF."""
    return _build("regnety_032", input_shape, weight_decay, name)

@_reg("regnety_040")
def regnety_040(input_shape=(224, 224, 3), *, weight_decay=0.0, name="regnety_040"):
    """RegNetY-4.0GF."""
    return _build("regnety_040", input_shape, weight_decay, name)

@_reg("regnety_064")
def regnety_064(input_shape=(224, 224, 3), *, weight_decay=0.0, name="regnety_064"):
    """RegNetY-6.4GF."""
    return _build("regnety_064", input_shape, weight_decay, name)

@_reg("regnety_080")
def regnety_080(input_shape=(224, 224, 3), *, weight_decay=0.0, name="regnety_080"):
    """RegNetY-8.0GF."""
    return _build("regnety_080", input_shape, weight_decay, name)

@_reg("regnety_120")
def regnety_120(input_shape=(224, 224, 3), *, weight_decay=0.0, name="regnety_120"):
    """RegNetY-12GF."""
    return _build("regnety_120", input_shape, weight_decay, name)

@_reg("regnety_160")
def regnety_160(input_shape=(224, 224, 3), *, weight_decay=0.0, name="regnety_160"):
    """RegNetY-16GF."""
    return _build("regnety_160", input_shape, weight_decay, name)

@_reg("regnety_320")
def regnety_320(input_shape=(224, 224, 3), *, weight_decay=0.0, name="regnety_320"):
    """RegNetY-32GF."""
    return _build("regnety_320", input_shape, weight_decay, name)
