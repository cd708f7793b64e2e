"""NFNet F0-F2 (Brock, De, Smith and Simonyan, ICML 2021): normalizer-free ResNets, no batch norm."""

from __future__ import annotations

import math

from kcnn.backbones.base import backbone_model, image_input, register
from kcnn.blocks.nfnet import nf_block, scaled_gelu, ws_conv

PAPER = "Brock et al., ICML 2021, Table 1 and Appendix C"
WIDTHS = (256, 512, 1536, 1536)
# Blocks per stage, training and test resolution, dropout before the classifier (Table 1).
VARIANTS = {
    "nfnet_f0": ((1, 2, 6, 3), 192, 256, 0.2),
    "nfnet_f1": ((2, 4, 12, 6), 224, 320, 0.3),
    "nfnet_f2": ((3, 6, 18, 9), 256, 352, 0.4),
}
STEM = (16, 32, 64)  # then WIDTHS[0] // 2, strides 2, 1, 1, 2
FINAL_MULTIPLIER = 2


def nfnet(input_shape, depths, *, alpha: float = 0.2, stochastic_depth: float = 0.1, group_width: int = 128,
          bottleneck_ratio: float = 0.5, se_ratio: float = 0.5, weight_decay: float = 0.0, name: str = "nfnet"):
    """The family builder: a four-convolution stem, four stages of ``nf_block`` (the first block of
    stages 2-4 strides), a 1x1 WS conv to twice the last width and the scaled GELU.

    Signal propagation: each block's branch input is scaled by ``beta = 1 / expected std``; the
    expected variance grows by ``alpha**2`` per block and resets to 1 after each stage's
    transition block. ``stochastic_depth`` is the drop rate of the last block, linear in the index.
    Outputs: stem (stride 4) and each stage (4, 8, 16, 32); the stem's stride-2 map is the first.
    """
    if not 0 <= stochastic_depth < 1:
        raise ValueError(f"stochastic_depth must be in [0, 1), got {stochastic_depth!r}")
    inputs = image_input(input_shape)
    wd = dict(weight_decay=weight_decay)
    x = ws_conv(inputs, STEM[0], 3, 2, name="stem_conv0", **wd)
    features = [x]
    for i, filters in enumerate(STEM[1:] + (WIDTHS[0] // 2,), start=1):
        x = ws_conv(scaled_gelu(x, f"stem_act{i - 1}"), filters, 3, 2 if i == 3 else 1, name=f"stem_conv{i}", **wd)
    total, index = sum(depths), 0
    for stage, (depth, filters) in enumerate(zip(depths, WIDTHS), start=1):
        expected_std = 1.0
        for i in range(depth):
            x = nf_block(x, filters, 2 if i == 0 and stage > 1 else 1, beta=1.0 / expected_std, alpha=alpha,
                         group_width=group_width, bottleneck_ratio=bottleneck_ratio, se_ratio=se_ratio,
                         drop_rate=stochastic_depth * index / total, name=f"stage{stage}_block{i + 1}", **wd)
            if i == 0:
                expected_std = 1.0
            expected_std = math.sqrt(expected_std**2 + alpha**2)
            index += 1
        features.append(x)
    x = ws_conv(x, FINAL_MULTIPLIER * WIDTHS[-1], 1, name="final_conv", **wd)
    features[-1] = scaled_gelu(x, "final_act")
    return backbone_model(inputs, features, name)


def _meta(variant):
    size, dropout = VARIANTS[variant][2], VARIANTS[variant][3]
    return dict(input_shape=(size, size, 3), head="gap_linear", head_kwargs={"dropout": dropout}, paper=PAPER)


@register("nfnet_f0", **_meta("nfnet_f0"))
def nfnet_f0(input_shape=(256, 256, 3), *, stochastic_depth=0.1, weight_decay=0.0, name="nfnet_f0"):
    """NFNet-F0: stages of 1, 2, 6, 3 blocks; trained at 192, evaluated at 256 pixels; dropout 0.2."""
    return nfnet(input_shape, VARIANTS["nfnet_f0"][0], stochastic_depth=stochastic_depth,
                 weight_decay=weight_decay, name=name)


@register("nfnet_f1", **_meta("nfnet_f1"))
def nfnet_f1(input_shape=(320, 320, 3), *, stochastic_depth=0.1, weight_decay=0.0, name="nfnet_f1"):
    """NFNet-F1: stages of 2, 4, 12, 6 blocks; trained at 224, evaluated at 320 pixels; dropout 0.3."""
    return nfnet(input_shape, VARIANTS["nfnet_f1"][0], stochastic_depth=stochastic_depth,
                 weight_decay=weight_decay, name=name)


@register("nfnet_f2", **_meta("nfnet_f2"))
def nfnet_f2(input_shape=(352, 352, 3), *, stochastic_depth=0.1, weight_decay=0.0, name="nfnet_f2"):
    """NFNet-F2: stages of 3, 6, 18, 9 blocks; trained at 256, evaluated at 352 pixels; dropout 0.4."""
    return nfnet(input_shape, VARIANTS["nfnet_f2"][0], stochastic_depth=stochastic_depth,
                 weight_decay=weight_decay, name=name)
