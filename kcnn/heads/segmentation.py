"""FCN segmentation head (Long, Shelhamer and Darrell, 2015)."""

from __future__ import annotations

from keras import layers

from kcnn.analysis.report import feature_strides
from kcnn.blocks.common import KERNEL_INIT
from kcnn.heads.base import HEADS, check_num_classes, softmax
from kcnn.layers import MatchSpatial


def _factor(strides, deep: int, shallow: int) -> int:
    """The upsampling factor between two levels, from their effective strides."""
    return max(1, round(strides[deep][0] / strides[shallow][0]))


def _upsample(x, num_classes: int, factor: int, name: str):
    if factor == 1:
        return x
    return layers.Conv2DTranspose(
        num_classes, 2 * factor, strides=factor, padding="same", use_bias=False,
        kernel_initializer=KERNEL_INIT, dtype="float32", name=name,
    )(x)


@HEADS.register("segmentation")
def segmentation(backbone, num_classes: int, *, skips: int = 2, name: str = "fcn"):
    """1x1 class scores on the deepest map, upsampled by transposed convolutions and fused with skips.

    ``skips=2`` is FCN-8s (scores from the two next-shallower levels are added),
    ``skips=1`` FCN-16s, ``skips=0`` FCN-32s. Output: per-pixel softmax at the input
    resolution, ``[batch, height, width, num_classes]``, in float32.
    """
    check_num_classes(num_classes)
    features = backbone.outputs
    if not isinstance(skips, int) or not 0 <= skips < len(features):
        raise ValueError(f"skips must be an integer in [0, {len(features) - 1}] for this backbone, got {skips!r}")
    strides = [(1, 1)] + feature_strides(backbone)  # index 0: the input image
    deepest = features[-1]
    x = layers.Conv2D(num_classes, 1, kernel_initializer=KERNEL_INIT, dtype="float32", name=f"{name}_score")(deepest)
    previous = len(features)
    for level in range(1, skips + 1):
        skip = features[-1 - level]
        x = _upsample(x, num_classes, _factor(strides, previous, previous - 1), f"{name}_up{level}")
        x = MatchSpatial(dtype="float32", name=f"{name}_match{level}")([x, skip])
        # No bias: the deepest score layer carries the per-class bias. (With one, TensorFlow 2.21's oneDNN
        # graph rewrite of Conv2D+BiasAdd+Add segfaults when the other addend comes from a pad.)
        score = layers.Conv2D(num_classes, 1, use_bias=False, kernel_initializer="zeros", dtype="float32",
                              name=f"{name}_score_skip{level}")(skip)
        x = layers.Add(dtype="float32", name=f"{name}_fuse{level}")([x, score])
        previous -= 1
    image = backbone.inputs[0]
    x = _upsample(x, num_classes, _factor(strides, previous, 0), f"{name}_up_final")
    x = MatchSpatial(dtype="float32", name=f"{name}_match_final")([x, image])
    return softmax(x)
