"""Photographs for super-resolution: the ones installed packages ship, split by photograph, and their Y patches.

Where they come from (nothing is downloaded). scikit-image's wheel bundles some images in
``skimage/data/`` (the rest are fetched with pooch on first use, and are not used here);
scikit-learn ships two photographs (``load_sample_images``: china.jpg, flower.jpg). Of the
bundled files these are photographs of natural scenes and are used:

- colour: astronaut, chelsea (a cat), coffee, rocket, motorcycle_left (one of a stereo pair),
  and scikit-learn's china and flower;
- greyscale, replicated to RGB and used for training only: camera, coins, moon, and the
  brick, grass and gravel textures (photographed surfaces). Their Y is ``16 + 219 g``.

Left out: motorcycle_right (the other view of the same scene as motorcycle_left: a near-duplicate
that would leak across splits), scientific images (hubble_deep_field, mostly black sky; retina, a
fundus image with a black surround; ihc and cell, microscopy), the blurred clock_motion, scanned
text (page, text) and synthetic pictures (color, logo, chessboard_*, phantom, horse).

The split is by photograph and fixed (``PHOTO_SPLITS``): test = scikit-learn's two photographs,
validation = chelsea and coffee, train = the other nine. No photograph is in two splits.

Images follow the papers: YCbCr as MATLAB's ``rgb2ycbcr`` (ITU-R BT.601, the constants of
:mod:`kcnn.quality`), the network sees Y in [0, 1] (``Y / 255``), and low-resolution inputs are
bicubic downscalings of the high-resolution Y (:func:`bicubic_downscale`).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from kcnn.quality import YCBCR_FROM_RGB, YCBCR_OFFSET
from pipelines.augment import split_seed
from pipelines.choices import SPLITS

SKIMAGE = "skimage"
SKLEARN = "sklearn"

# split -> (name, package, file): files of skimage/data/ or of scikit-learn's load_sample_images.
PHOTO_SPLITS = {
    "train": (("astronaut", SKIMAGE, "astronaut.png"), ("rocket", SKIMAGE, "rocket.jpg"),
              ("motorcycle", SKIMAGE, "motorcycle_left.png"), ("camera", SKIMAGE, "camera.png"),
              ("coins", SKIMAGE, "coins.png"), ("moon", SKIMAGE, "moon.png"), ("brick", SKIMAGE, "brick.png"),
              ("grass", SKIMAGE, "grass.png"), ("gravel", SKIMAGE, "gravel.png")),
    "validation": (("chelsea", SKIMAGE, "chelsea.png"), ("coffee", SKIMAGE, "coffee.png")),
    "test": (("china", SKLEARN, "china.jpg"), ("flower", SKLEARN, "flower.jpg")),
}
assert tuple(PHOTO_SPLITS) == SPLITS


# ------------------------------------------------------------------------------ photographs


def photo_names(split: str) -> tuple[str, ...]:
    """The names of a split's photographs, in the order :func:`load_photos` returns them."""
    return tuple(name for name, _, _ in _split_table(split))


def load_photos(split: str) -> list[np.ndarray]:
    """A split's photographs as uint8 RGB ``[H, W, 3]`` arrays (greyscale ones replicated), read-only.

    Decoded once per process and cached; names from :func:`photo_names`.
    """
    return [_photo(package, filename) for _, package, filename in _split_table(split)]


def _split_table(split: str):
    if split not in PHOTO_SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return PHOTO_SPLITS[split]


@functools.lru_cache(maxsize=None)
def _photo(package: str, filename: str) -> np.ndarray:
    if package == SKLEARN:
        from sklearn.datasets import load_sample_image

        image = np.asarray(load_sample_image(filename), np.uint8)
    else:
        import importlib.util

        from PIL import Image

        spec = importlib.util.find_spec("skimage")
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError("the super-resolution photographs need scikit-image: pip install scikit-image")
        path = os.path.join(list(spec.submodule_search_locations)[0], "data", filename)
        with Image.open(path) as opened:
            image = np.asarray(opened.convert("RGB"), np.uint8)
    image.flags.writeable = False
    return image


# ------------------------------------------------------------------------ colour and resizing


def rgb_to_ycbcr(images: tf.Tensor) -> tf.Tensor:
    """RGB in [0, 1] ``[..., 3]`` -> YCbCr in [0, 1] ``[..., 3]``: MATLAB's ``rgb2ycbcr`` (BT.601) divided by 255.

    Y is in [16, 235] / 255, Cb and Cr in [16, 240] / 255; ``Y * 255`` is :func:`kcnn.quality.rgb_to_y`.
    """
    images = tf.cast(images, tf.float32)
    matrix = tf.constant(YCBCR_FROM_RGB.T / 255.0, tf.float32)
    return tf.tensordot(images, matrix, 1) + tf.constant(YCBCR_OFFSET / 255.0, tf.float32)


def ycbcr_to_rgb(images: tf.Tensor) -> tf.Tensor:
    """The inverse of :func:`rgb_to_ycbcr` (not clipped: YCbCr outside the RGB cube gives values outside [0, 1])."""
    images = tf.cast(images, tf.float32)
    inverse = tf.constant(np.linalg.inv(YCBCR_FROM_RGB / 255.0).T, tf.float32)
    return tf.tensordot(images - tf.constant(YCBCR_OFFSET / 255.0, tf.float32), inverse, 1)


def bicubic_downscale(images: tf.Tensor, scale: int) -> tf.Tensor:
    """Shrink ``[batch, H, W, C]`` (or ``[H, W, C]``) images in [0, 1] by ``scale``, to ``H // scale`` x ``W // scale``.

    Bicubic (Keys' cubic, a = -0.5) with antialiasing: the kernel is widened by ``scale``, as MATLAB's
    ``imresize`` does when it shrinks, which is how SRCNN and ESPCN made their inputs. At the image
    edges TensorFlow renormalises the kernel where MATLAB mirrors the image, which the evaluation
    protocol's border crop leaves out. Crop sizes to a multiple of ``scale`` first (:func:`modcrop`).
    Clipped to [0, 1].
    """
    images = tf.cast(images, tf.float32)
    size = tf.shape(images)[-3:-1] // scale
    return tf.clip_by_value(tf.image.resize(images, size, method="bicubic", antialias=True), 0.0, 1.0)


def bicubic_upscale(images: tf.Tensor, scale: int) -> tf.Tensor:
    """Enlarge ``[batch, H, W, C]`` (or ``[H, W, C]``) images in [0, 1] ``scale`` times, bicubic, clipped to [0, 1].

    The same interpolation as ``kcnn.superres.bicubic`` (Keras' bicubic ``UpSampling2D``), which
    leaves the overshoot unclipped; this is the papers' bicubic baseline.
    """
    images = tf.cast(images, tf.float32)
    size = tf.shape(images)[-3:-1] * scale
    return tf.clip_by_value(tf.image.resize(images, size, method="bicubic"), 0.0, 1.0)


def modcrop(image: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom and right of ``[H, W, ...]`` so both sides are multiples of ``scale`` (the papers' modcrop)."""
    height, width = image.shape[0] // scale * scale, image.shape[1] // scale * scale
    return image[:height, :width]


@functools.lru_cache(maxsize=None)
def _luma(split: str) -> tuple[np.ndarray, ...]:
    """Each photograph's Y in [0, 1] as float32 ``[H, W, 1]``, computed once."""
    return tuple(rgb_to_ycbcr(tf.constant(p, tf.float32) / 255.0)[..., :1].numpy() for p in load_photos(split))


# ------------------------------------------------------------------------------ data sets


@dataclass(frozen=True)
class PhotoInfo:
    """What :func:`sr_dataset` yields: ``count`` elements per epoch (patches when training, whole
    photographs otherwise) in ``batches`` batches, from the photographs ``names``."""

    split: str
    names: tuple
    scale: int
    training: bool
    count: int
    batches: int
    patch_size: int | None = None


def sr_dataset(split: str, *, scale: int, patch_size: int, batch_size: int, seed: int = 0,
               training: bool | None = None, patches_per_epoch: int | None = None):
    """``(tf.data.Dataset, PhotoInfo)`` of ``(low-resolution Y, high-resolution Y)`` pairs, float32 in [0, 1].

    Training (``training=None``: on the train split): batches ``[batch_size, p / scale, p / scale, 1]``
    and ``[batch_size, p, p, 1]`` with ``p = patch_size``: a random photograph (chosen in proportion to
    its number of crop positions, so every crop position is equally likely), a random ``p`` x ``p``
    crop of its Y, flipped left-right and up-down each with probability 1/2, and its
    :func:`bicubic_downscale`. Every draw is stateless and seeded from ``seed``: the same seed gives
    the same batches, and each pass over the data set draws new patches. ``patches_per_epoch``
    defaults to the number of non-overlapping ``p`` x ``p`` tiles of the split; the last partial
    batch is dropped.

    Evaluation: each photograph whole, one per batch (sizes differ; ``batch_size`` is not used),
    cropped to a multiple of ``scale``: ``[1, H / scale, W / scale, 1]`` and ``[1, H, W, 1]``.
    """
    names = photo_names(split)
    training = split == "train" if training is None else bool(training)
    if not _positive_int(scale) or scale < 2:
        raise ValueError(f"scale must be an integer >= 2, got {scale!r}")
    if not _positive_int(batch_size):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not _positive_int(patch_size) or patch_size % scale:
        raise ValueError(f"patch_size must be a positive multiple of the scale {scale} (the low-resolution patch "
                         f"is patch_size / scale pixels), got {patch_size!r}")
    if not training:
        return _evaluation(split, scale), PhotoInfo(split, names, scale, False, len(names), len(names))
    lumas = _luma(split)
    smallest = min(min(y.shape[:2]) for y in lumas)
    if patch_size > smallest:
        raise ValueError(f"patch_size {patch_size} is larger than the smallest {split} photograph's side "
                         f"({smallest} pixels)")
    tiles = sum((y.shape[0] // patch_size) * (y.shape[1] // patch_size) for y in lumas)
    count = tiles if patches_per_epoch is None else patches_per_epoch
    if not _positive_int(count) or count < batch_size:
        raise ValueError(f"patches_per_epoch must be an integer >= batch_size ({batch_size}), got {count!r}")
    sample = _patch_sampler(lumas, patch_size)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2).take(count)
    dataset = (seeds.map(sample, num_parallel_calls=tf.data.AUTOTUNE)
               .batch(batch_size, drop_remainder=True)
               .map(lambda high: (bicubic_downscale(high, scale), high), num_parallel_calls=tf.data.AUTOTUNE)
               .prefetch(tf.data.AUTOTUNE))
    info = PhotoInfo(split, names, scale, True, count, count // batch_size, patch_size)
    return dataset, info


def _patch_sampler(lumas, size: int):
    """(seed ``[2]``) -> one random, randomly flipped ``[size, size, 1]`` crop, gathered from all photos at once."""
    flat = tf.constant(np.concatenate([y.reshape(-1) for y in lumas]))
    heights = tf.constant([y.shape[0] for y in lumas], tf.int32)
    widths = tf.constant([y.shape[1] for y in lumas], tf.int32)
    offsets = tf.constant(np.cumsum([0] + [y.size for y in lumas[:-1]]), tf.int32)
    positions = np.array([(y.shape[0] - size + 1) * (y.shape[1] - size + 1) for y in lumas], np.float64)
    logits = tf.constant(np.log(positions / positions.sum())[np.newaxis], tf.float32)
    steps = tf.range(size)

    def sample(seed):
        s_photo, s_top, s_left, s_flip = split_seed(tf.cast(seed, tf.int32), 4)
        k = tf.random.stateless_categorical(logits, 1, s_photo, dtype=tf.int32)[0, 0]
        height, width = heights[k], widths[k]
        top = tf.random.stateless_uniform([], s_top, 0, height - size + 1, dtype=tf.int32)
        left = tf.random.stateless_uniform([], s_left, 0, width - size + 1, dtype=tf.int32)
        flip_rows, flip_columns = tf.unstack(tf.random.stateless_uniform([2], s_flip) < 0.5)
        rows = top + tf.where(flip_rows, size - 1 - steps, steps)
        columns = left + tf.where(flip_columns, size - 1 - steps, steps)
        index = offsets[k] + rows[:, tf.newaxis] * width + columns[tf.newaxis, :]
        return tf.gather(flat, index)[..., tf.newaxis]

    return sample


@functools.lru_cache(maxsize=None)
def _evaluation_pairs(split: str, scale: int) -> tuple:
    """Each photograph's ``(low, high)`` Y pair, ``[1, h, w, 1]``, computed once per split and scale."""
    pairs = []
    for y in _luma(split):
        high = modcrop(y, scale)[np.newaxis]
        pairs.append((bicubic_downscale(high, scale).numpy(), high))
    return tuple(pairs)


def _evaluation(split: str, scale: int) -> tf.data.Dataset:
    pairs = _evaluation_pairs(split, scale)
    dataset = tf.data.Dataset.from_tensors(pairs[0])
    for pair in pairs[1:]:
        dataset = dataset.concatenate(tf.data.Dataset.from_tensors(pair))
    return dataset


def _positive_int(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= 1
