"""Measuring an explanation: the pointing game and the deletion curve.

Pointing game (Zhang et al. 2016): a heatmap hits when its maximum lies on the object. Deletion
(Petsiuk et al. 2018, RISE): remove pixels from the most to the least salient and follow the class
probability; a faithful map makes it fall fast (small area under the curve), faster than a random order.
"""

from __future__ import annotations

import numpy as np

from kcnn.insight.graph import as_batch, predict


def pointing_hit(heatmap, mask, tolerance: float = 0.0) -> bool:
    """True when the heatmap's maximum falls on a pixel where ``mask`` is non-zero, or within ``tolerance``
    pixels of one (Zhang et al. count a hit within 15 pixels of the object on 224-pixel and larger images)."""
    heatmap, mask = np.asarray(heatmap), np.asarray(mask)
    row, column = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    if mask[row, column] or tolerance <= 0:
        return bool(mask[row, column])
    rows, columns = np.nonzero(mask)
    return bool(rows.size) and float(np.min((rows - row) ** 2 + (columns - column) ** 2)) <= tolerance ** 2


def deletion_curve(model, image, heatmap, class_index: int, *, steps: int = 16, up_to: float = 1.0,
                   fill: float | None = None, order=None) -> np.ndarray:
    """Class probability as the top 0, 1/steps, ..., ``up_to`` of pixels (by ``heatmap``) are set to ``fill``.

    ``fill`` defaults to the image's mean (a grey image). ``order`` may give the pixel order directly
    (flat indices, first deleted first), e.g. a random permutation for the baseline.
    """
    image = as_batch(image)[0]
    height, width = image.shape[:2]
    if order is None:
        order = np.argsort(-np.asarray(heatmap).ravel(), kind="stable")
    value = image.mean(axis=(0, 1)) if fill is None else fill
    counts = np.linspace(0, up_to * height * width, steps + 1).round().astype(int)
    batch = np.repeat(image[None], len(counts), axis=0)
    for i, count in enumerate(counts):
        rows, cols = np.unravel_index(order[:count], (height, width))
        batch[i, rows, cols] = value
    return predict(model, batch)[:, class_index]


def area_under(curve) -> float:
    """Trapezoidal area under a curve sampled evenly, the x range taken as [0, 1] (a mean height)."""
    curve = np.asarray(curve, "float64")
    return float(((curve[1:] + curve[:-1]) / 2).sum() / (len(curve) - 1))
