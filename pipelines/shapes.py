"""Deterministic synthetic data sets: coloured geometric shapes on noisy backgrounds, with masks.

``shapes``: each image holds one shape (circle, square or triangle) of a random colour,
size and position over a random background colour plus Gaussian noise. The label is the
shape's class; the mask marks its pixels with ``class + 1`` (0 is background).

``scenes``: each image holds 1 to 4 shapes of random classes, colours and sizes (small to
large), drawn in turn so that later shapes cover earlier ones where they overlap. The
mask gives every pixel its class (0 background, then ``class + 1``) and each object comes
with its box, taken from its visible pixels, for detection.

Splits use disjoint seeds, so they never share an image.
"""

from __future__ import annotations

import numpy as np

CLASS_NAMES = ("circle", "square", "triangle")
MASK_CLASS_NAMES = ("background",) + CLASS_NAMES  # mask value = class index + 1
SPLIT_SIZES = {"train": 600, "validation": 120, "test": 120}
_SPLIT_SEEDS = {"train": 0, "validation": 1, "test": 2}
SCENE_SPLIT_SIZES = {"train": 600, "validation": 120, "test": 120}
_SCENE_SEED_BASE = 2000  # the scenes' split seeds (2000, 2001, 2002) differ from the shapes' (1000, 1001, 1002)
MAX_SCENE_OBJECTS = 4
SCENE_RADIUS = (0.11, 0.3)  # shape radius as a share of the image size: about 7 to 19 pixels at 64
MIN_VISIBLE = 2 / 3  # a later shape leaves every earlier one at least this share of its pixels
NOISE_STD = 12.0


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre row and column coordinates ``[size, size]``."""
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    return rows, cols


def shape_pixels(label: int, cy: float, cx: float, radius: float, rows, cols) -> np.ndarray:
    """The pixels (bool ``[H, W]``) of shape ``label`` (0 circle, 1 square, 2 triangle) centred at ``(cy, cx)``.

    A circle of ``radius``; a square of side ``1.6 * radius``; an upright triangle (apex at the top)
    of height ``2 * radius`` and base ``2 * radius``.
    """
    if label == 0:
        return (rows - cy) ** 2 + (cols - cx) ** 2 <= radius**2
    if label == 1:
        return (np.abs(rows - cy) <= radius * 0.8) & (np.abs(cols - cx) <= radius * 0.8)
    top, bottom = cy - radius, cy + radius
    half_width = (rows - top) / (2 * radius) * radius
    return (rows >= top) & (rows <= bottom) & (np.abs(cols - cx) <= half_width)


def _background(rng) -> np.ndarray:
    return rng.uniform(0, 255, 3)


def _colour_on(background, rng) -> np.ndarray:
    """A random colour far enough from ``background`` in every channel."""
    return (background + rng.uniform(80, 175, 3)) % 256


def _finish(picture, rng, size: int) -> np.ndarray:
    """Add Gaussian pixel noise and round to uint8."""
    picture = picture + rng.normal(0, NOISE_STD, (size, size, 3))
    return np.clip(np.round(picture), 0, 255).astype(np.uint8)


def make_shapes(num_images: int, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``num_images`` images ``[N, size, size, 3]`` uint8, labels ``[N]`` int32, masks ``[N, size, size]`` uint8."""
    if size < 16:
        raise ValueError(f"shapes images need size >= 16 pixels to draw a shape, got {size}")
    rng = np.random.default_rng(seed)
    rows, cols = _grid(size)
    images = np.empty((num_images, size, size, 3), np.uint8)
    masks = np.zeros((num_images, size, size), np.uint8)
    labels = rng.integers(0, len(CLASS_NAMES), num_images).astype(np.int32)
    for i, label in enumerate(labels):
        background = _background(rng)
        colour = _colour_on(background, rng)
        radius = rng.uniform(0.15, 0.3) * size
        cy, cx = rng.uniform(radius, size - radius, 2)
        inside = shape_pixels(label, cy, cx, radius, rows, cols)
        images[i] = _finish(np.where(inside[..., None], colour, background), rng, size)
        masks[i][inside] = label + 1
    return images, labels, masks


def load_split(split: str, size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fixed ``train`` / ``validation`` / ``test`` split of the shapes data set."""
    if split not in SPLIT_SIZES:
        raise ValueError(f"split must be one of {', '.join(SPLIT_SIZES)} for the shapes source, got {split!r}")
    return make_shapes(SPLIT_SIZES[split], size, seed=1000 + _SPLIT_SEEDS[split])


def make_scenes(num_images: int, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list]:
    """``num_images`` scenes: images ``[N, size, size, 3]`` uint8, masks ``[N, size, size]`` uint8, instances.

    ``instances[i]`` lists image ``i``'s objects in drawing order as ``(class, (ymin, xmin, ymax, xmax))``:
    the class index (0 circle, 1 square, 2 triangle; the mask holds ``class + 1``) and the box of the
    object's visible pixels in pixel units, ``ymax`` and ``xmax`` exclusive (a one-pixel object at row
    ``r`` spans ``r`` to ``r + 1``). A shape may cover part of an earlier one, never more than a third
    of it (``MIN_VISIBLE``), so every object keeps most of its outline visible.
    """
    if size < 16:
        raise ValueError(f"scenes need size >= 16 pixels to draw a shape, got {size}")
    rng = np.random.default_rng(seed)
    rows, cols = _grid(size)
    images = np.empty((num_images, size, size, 3), np.uint8)
    masks = np.zeros((num_images, size, size), np.uint8)
    instances = []
    for i in range(num_images):
        background = _background(rng)
        picture = np.broadcast_to(background, (size, size, 3)).copy()
        owner = np.full((size, size), -1, np.int16)  # which object each pixel shows
        classes, areas = [], []
        for _ in range(rng.integers(1, MAX_SCENE_OBJECTS + 1)):
            label = int(rng.integers(0, len(CLASS_NAMES)))
            inside = _place(label, owner, areas, rng, size, rows, cols)
            if inside is None:
                continue
            owner[inside] = len(classes)
            picture[inside] = _colour_on(background, rng)
            classes.append(label)
            areas.append(int(inside.sum()))
        images[i] = _finish(picture, rng, size)
        objects = []
        for index, label in enumerate(classes):
            ys, xs = np.nonzero(owner == index)
            masks[i][ys, xs] = label + 1
            objects.append((label, (int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1)))
        instances.append(objects)
    return images, masks, instances


def _place(label, owner, areas, rng, size, rows, cols, attempts: int = 10):
    """The pixels of a new random shape that leaves every earlier object ``MIN_VISIBLE`` of its area, or None."""
    for _ in range(attempts):
        radius = rng.uniform(*SCENE_RADIUS) * size
        cy, cx = rng.uniform(radius, size - radius, 2)
        inside = shape_pixels(label, cy, cx, radius, rows, cols)
        if not inside.any():
            continue
        covered = np.bincount(owner[inside & (owner >= 0)], minlength=len(areas))
        visible = np.bincount(owner[owner >= 0], minlength=len(areas)) - covered
        if all(left >= MIN_VISIBLE * area for left, area in zip(visible, areas)):
            return inside
    return None


def scene_labels(masks: np.ndarray) -> np.ndarray:
    """Each scene's image-level label: the class covering the most pixels (``[N]`` int32, class indices)."""
    counts = np.stack([(masks == value).sum(axis=(1, 2)) for value in range(1, len(CLASS_NAMES) + 1)], axis=1)
    return counts.argmax(axis=1).astype(np.int32)


def load_scenes(split: str, size: int = 64) -> tuple[np.ndarray, np.ndarray, list]:
    """The fixed ``train`` / ``validation`` / ``test`` split of the scenes data set (``make_scenes``'s three)."""
    if split not in SCENE_SPLIT_SIZES:
        raise ValueError(f"split must be one of {', '.join(SCENE_SPLIT_SIZES)} for the scenes source, got {split!r}")
    return make_scenes(SCENE_SPLIT_SIZES[split], size, seed=_SCENE_SEED_BASE + _SPLIT_SEEDS[split])
