"""A deterministic synthetic data set: coloured geometric shapes on noisy backgrounds, with masks.

Each image holds one shape (circle, square or triangle) of a random colour, size and
position over a random background colour plus Gaussian noise. The label is the
shape's class; the mask marks its pixels with ``class + 1`` (0 is background), for
the segmentation head. Splits use disjoint seeds, so they never share an image.
"""

from __future__ import annotations

import numpy as np

CLASS_NAMES = ("circle", "square", "triangle")
SPLIT_SIZES = {"train": 600, "validation": 120, "test": 120}
_SPLIT_SEEDS = {"train": 0, "validation": 1, "test": 2}


def make_shapes(num_images: int, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``num_images`` images ``[N, size, size, 3]`` uint8, labels ``[N]`` int32, masks ``[N, size, size]`` uint8."""
    if size < 16:
        raise ValueError(f"shapes images need size >= 16 pixels to draw a shape, got {size}")
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    images = np.empty((num_images, size, size, 3), np.uint8)
    masks = np.zeros((num_images, size, size), np.uint8)
    labels = rng.integers(0, len(CLASS_NAMES), num_images).astype(np.int32)
    for i, label in enumerate(labels):
        background = rng.uniform(0, 255, 3)
        colour = (background + rng.uniform(80, 175, 3)) % 256  # far enough from the background
        radius = rng.uniform(0.15, 0.3) * size
        cy, cx = rng.uniform(radius, size - radius, 2)
        if label == 0:
            inside = (rows - cy) ** 2 + (cols - cx) ** 2 <= radius**2
        elif label == 1:
            inside = (np.abs(rows - cy) <= radius * 0.8) & (np.abs(cols - cx) <= radius * 0.8)
        else:  # upright triangle: apex at the top, base at the bottom
            top, bottom = cy - radius, cy + radius
            half_width = (rows - top) / (2 * radius) * radius
            inside = (rows >= top) & (rows <= bottom) & (np.abs(cols - cx) <= half_width)
        picture = np.where(inside[..., None], colour, background) + rng.normal(0, 12, (size, size, 3))
        images[i] = np.clip(np.round(picture), 0, 255).astype(np.uint8)
        masks[i][inside] = label + 1
    return images, labels, masks


def load_split(split: str, size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fixed ``train`` / ``validation`` / ``test`` split of the shapes data set."""
    if split not in SPLIT_SIZES:
        raise ValueError(f"split must be one of {', '.join(SPLIT_SIZES)} for the shapes source, got {split!r}")
    return make_shapes(SPLIT_SIZES[split], size, seed=1000 + _SPLIT_SEEDS[split])
