"""FCOS: an anchor-free detection head over a feature pyramid (Tian et al., 2019; FPN: Lin et al., 2017)."""

from __future__ import annotations

import math

from keras import initializers, layers

from kcnn.analysis.report import feature_strides
from kcnn.blocks.common import KERNEL_INIT
from kcnn.detection import PRIOR_PROBABILITY, ExpStride, FCOSDecode, LevelScale
from kcnn.heads.base import HEADS, check_num_classes
from kcnn.layers import MatchSpatial


def _groups(channels: int, most: int = 32) -> int:
    """GroupNorm's group count: the paper's 32, or the largest power of two under it that divides ``channels``."""
    groups = most
    while channels % groups:
        groups //= 2
    return groups


def _backbone_levels(backbone, levels):
    """The backbone's output at each requested pyramid level (level ``l``: stride ``2**l``)."""
    strides = [s[0] for s in feature_strides(backbone)]
    by_level = {int(round(math.log2(s))): x for s, x in zip(strides, backbone.outputs) if s > 0}
    missing = [level for level in levels if level not in by_level]
    if missing:
        have = ", ".join(f"{level} (stride {2 ** level})" for level in sorted(by_level))
        raise ValueError(f"the backbone has no feature map at pyramid level(s) {missing}; it has levels {have}. "
                         "Pass levels= from those (the FPN adds extra_levels above the deepest)")
    return [by_level[level] for level in levels]


@HEADS.register("fcos")
def fcos(backbone, num_classes: int, *, levels=(3, 4, 5), extra_levels: int = 2, channels: int = 256,
         convs: int = 4, name: str = "fcos"):
    """FPN over the backbone's ``levels`` plus ``extra_levels`` stride-2 levels, and FCOS' shared head.

    The paper's detector is ``levels=(3, 4, 5)``, ``extra_levels=2`` (P6, P7 from P5), 256
    channels and four 3x3 conv-GroupNorm-ReLU layers in each tower. Per location the head predicts
    ``num_classes`` logits (bias initialised to a 1% prior), four distances ``exp(s_l * x) * stride``
    (a learnable scale per level) and a centerness logit on the regression tower. Output: float32
    ``[batch, locations, num_classes + 5]`` (see ``kcnn.detection``).
    """
    check_num_classes(num_classes)
    levels = tuple(int(level) for level in levels)
    if not levels or list(levels) != sorted(set(levels)) or any(b != a + 1 for a, b in zip(levels, levels[1:])):
        raise ValueError(f"levels must be consecutive increasing pyramid levels such as (3, 4, 5), got {levels}")
    for key, value, low in (("extra_levels", extra_levels, 0), ("channels", channels, 1), ("convs", convs, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{key} must be an integer >= {low}, got {value!r}")
    features = _backbone_levels(backbone, levels)
    laterals = [layers.Conv2D(channels, 1, kernel_initializer=KERNEL_INIT, name=f"{name}_lateral{level}")(x)
                for level, x in zip(levels, features)]
    merged = [laterals[-1]]
    for level, lateral in zip(reversed(levels[:-1]), reversed(laterals[:-1])):  # top-down
        up = layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_up{level}")(merged[0])
        up = MatchSpatial(name=f"{name}_match{level}")([up, lateral])
        merged.insert(0, layers.Add(name=f"{name}_merge{level}")([up, lateral]))
    pyramid = [layers.Conv2D(channels, 3, padding="same", kernel_initializer=KERNEL_INIT, name=f"{name}_p{level}")(x)
               for level, x in zip(levels, merged)]
    x = pyramid[-1]
    for i in range(extra_levels):
        level = levels[-1] + 1 + i
        if i:
            x = layers.ReLU(name=f"{name}_p{level}_relu")(x)
        x = layers.Conv2D(channels, 3, strides=2, padding="same", kernel_initializer=KERNEL_INIT,
                          name=f"{name}_p{level}")(x)
        pyramid.append(x)
    all_levels = list(levels) + [levels[-1] + 1 + i for i in range(extra_levels)]

    def tower(kind):
        convs_ = []
        for i in range(convs):
            convs_.append((layers.Conv2D(channels, 3, padding="same", kernel_initializer=initializers.RandomNormal(
                stddev=0.01), name=f"{name}_{kind}_conv{i}"),
                layers.GroupNormalization(_groups(channels), name=f"{name}_{kind}_gn{i}"),
                layers.ReLU(name=f"{name}_{kind}_relu{i}")))
        return convs_

    class_tower, box_tower = tower("class"), tower("box")
    prior = -math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY)
    class_logits = layers.Conv2D(num_classes, 3, padding="same", name=f"{name}_class_logits", dtype="float32",
                                 kernel_initializer=initializers.RandomNormal(stddev=0.01),
                                 bias_initializer=initializers.Constant(prior))
    distances = layers.Conv2D(4, 3, padding="same", name=f"{name}_distances", dtype="float32",
                              kernel_initializer=initializers.RandomNormal(stddev=0.01))
    centerness = layers.Conv2D(1, 3, padding="same", name=f"{name}_centerness", dtype="float32",
                               kernel_initializer=initializers.RandomNormal(stddev=0.01))
    outputs = []
    for level, feature in zip(all_levels, pyramid):
        c = b = feature
        for conv, norm, relu in class_tower:
            c = relu(norm(conv(c)))
        for conv, norm, relu in box_tower:
            b = relu(norm(conv(b)))
        scaled = LevelScale(dtype="float32", name=f"{name}_scale{level}")(distances(b))
        ltrb = ExpStride(2 ** level, dtype="float32", name=f"{name}_distances{level}")(scaled)
        outputs.append(layers.Concatenate(dtype="float32", name=f"{name}_level{level}")(
            [class_logits(c), ltrb, centerness(b)]))
    return FCOSDecode([2 ** level for level in all_levels], dtype="float32", name=f"{name}_outputs")(outputs)
