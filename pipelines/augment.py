"""Augmentations, each usable alone, and the named recipes that combine them.

Every random op is stateless: it takes a ``seed`` tensor of shape ``[2]`` and gives
the same result for the same seed, so a pipeline with a fixed seed repeats exactly
whatever its parallelism. Images are float32 in [0, 1], channels last.

Per-image ops (``[H, W, C]`` in, ``[size, size, C]`` out) change the geometry of one
image: ``pad_and_crop``, ``random_resized_crop``, ``resize_and_random_crop``,
``randaugment``. Batch ops (``[B, S, S, C]``) are vectorised over the batch with a
separate draw per image: ``flip``, ``color_jitter``, ``pca_lighting``, ``affine``,
``random_erasing``; ``mixup`` and ``cutmix`` also mix the one-hot labels.

Joint ops (segmentation) move an image ``[H, W, C]`` and its class-index mask ``[H, W]``
by one random draw: ``joint_flip``, ``joint_scale_crop``, ``joint_center_crop``; the
image is resampled bilinearly, the mask by nearest neighbour so it keeps its class
values, and pixels from outside the image are 0 in the image and ``IGNORE`` (255) in
the mask. ``joint_geometry`` is a recipe's geometry on the pair; the colour batch ops
then change the image alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from pipelines import choices
from pipelines.preprocess import LUMA, Preprocessing, decode_image, resize_and_center_crop, unit_images
from pipelines.sources import IGNORE  # masks are padded with it

# ---------------------------------------------------------------------------- seeds


def split_seed(seed: tf.Tensor, count: int) -> list[tf.Tensor]:
    """``count`` independent seeds from one."""
    return tf.unstack(tf.random.experimental.stateless_split(seed, count))


def _uniform(shape, seed, low=0.0, high=1.0):
    return tf.random.stateless_uniform(shape, seed, minval=low, maxval=high)


def _beta(shape, seed, alpha: float):
    """Beta(alpha, alpha) samples from two stateless gamma draws."""
    s1, s2 = split_seed(seed, 2)
    a = tf.random.stateless_gamma(shape, s1, alpha)
    b = tf.random.stateless_gamma(shape, s2, alpha)
    return a / (a + b)


# ------------------------------------------------------------------ per-image geometry


def pad_and_crop(image, seed, size: int, pad: int = 4):
    """Zero-pad by ``pad`` pixels on every side and take a random ``size`` x ``size`` crop (CIFAR)."""
    image = _resize_if_needed(image, size)
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    return tf.image.stateless_random_crop(padded, [size, size, tf.shape(image)[-1]], seed)


def batch_pad_and_crop(images, seed, pad: int = 4, flip_probability: float = 0.0):
    """``pad_and_crop`` for a batch of same-size images, a different offset per image, as two gathers.

    With ``flip_probability`` the column gather also mirrors the chosen images, so
    the flip costs no extra pass over the pixels.
    """
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    sy, sx, sf = split_seed(seed, 3)
    top = tf.random.stateless_uniform([batch, 1], sy, 0, 2 * pad + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([batch, 1], sx, 0, 2 * pad + 1, dtype=tf.int32)
    columns = tf.range(width)[tf.newaxis]
    if flip_probability:
        mirrored = _uniform([batch, 1], sf) < flip_probability
        columns = tf.where(mirrored, width - 1 - columns, columns)
    rows = tf.gather(padded, top + tf.range(height)[tf.newaxis], axis=1, batch_dims=1)
    return tf.gather(rows, left + columns, axis=2, batch_dims=1)


def flip_one(image, seed, probability: float = 0.5):
    """``flip`` for one image: mirror it left-right with ``probability`` (no copy when it stays)."""
    return tf.cond(_uniform([], seed) < probability, lambda: tf.reverse(image, axis=[1]), lambda: image)


def _resize_if_needed(image, size):
    """Images from a source of another size are first resized to ``size``."""
    shape = tf.shape(image)
    same = tf.logical_and(tf.equal(shape[0], size), tf.equal(shape[1], size))
    return tf.cond(same, lambda: tf.cast(image, tf.float32),
                   lambda: tf.image.resize(image, [size, size], antialias=True))


def crop_window(image_shape, seed, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """A random crop box ``(offset_y, offset_x, height, width)`` covering ``scale`` of the area at ``ratio``."""
    begin, box_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        image_shape, tf.zeros([1, 0, 4], tf.float32), seed, min_object_covered=0.0,
        aspect_ratio_range=ratio, area_range=scale, max_attempts=10, use_image_if_no_bounding_boxes=True)
    return begin[0], begin[1], box_size[0], box_size[1]


def random_resized_crop(image, seed, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """Inception-style crop: a random region of ``scale`` of the area and ``ratio`` aspect, resized to ``size``."""
    y, x, h, w = crop_window(tf.shape(image), seed, scale, ratio)
    crop = image[y:y + h, x:x + w, :]
    return tf.image.resize(crop, [size, size])


def decode_random_resized_crop(encoded, seed, size: int, channels: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """``random_resized_crop`` straight from encoded bytes; JPEGs decode only the crop window."""

    def jpeg():
        shape = tf.image.extract_jpeg_shape(encoded)
        y, x, h, w = crop_window(shape, seed, scale, ratio)
        crop = tf.image.decode_and_crop_jpeg(encoded, tf.stack([y, x, h, w]), channels=3)  # as decode_image
        return tf.image.resize(unit_images(crop, channels), [size, size])

    def other():
        return random_resized_crop(unit_images(decode_image(encoded), channels), seed, size, scale, ratio)

    return tf.cond(tf.io.is_jpeg(encoded), jpeg, other)


def resize_and_random_crop(image, seed, size: int, resize_to: int):
    """AlexNet: resize the shorter side to ``resize_to`` (256 for 224 crops), take a random ``size`` crop."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = resize_to / tf.reduce_min(shape)
    new = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), size)
    resized = tf.image.resize(image, new)
    return tf.image.stateless_random_crop(resized, [size, size, tf.shape(image)[-1]], seed)


def center_crop(image, size: int, crop_fraction: float = 1.0):
    """The evaluation geometry for one image (the shared ``resize_and_center_crop``)."""
    return resize_and_center_crop(image[tf.newaxis], size, crop_fraction)[0]


# ------------------------------------------------------------- joint geometry (masks)

def joint_flip(image, mask, seed, probability: float = 0.5):
    """``flip_one`` for an image ``[H, W, C]`` and its mask ``[H, W]``: both mirrored left-right, or neither."""
    return tf.cond(_uniform([], seed) < probability,
                   lambda: (tf.reverse(image, axis=[1]), tf.reverse(mask, axis=[1])), lambda: (image, mask))


def joint_center_crop(image, mask, size: int, crop_fraction: float = 1.0):
    """The evaluation geometry on both (``resize_and_center_crop``): bilinear image, nearest-neighbour mask."""
    image = resize_and_center_crop(image[tf.newaxis], size, crop_fraction)[0]
    mask = resize_and_center_crop(mask[tf.newaxis, ..., tf.newaxis], size, crop_fraction, method="nearest")
    return tf.clip_by_value(image, 0.0, 1.0), tf.cast(mask[0, ..., 0], tf.int32)


def joint_scale_crop(image, mask, seed, size: int, scale=(0.75, 1.25), crop_fraction: float = 1.0):
    """Scale jitter and a random ``size`` x ``size`` crop of an image and its mask, by one draw.

    Both are resized so the shorter side is ``size / crop_fraction`` times a factor drawn from
    ``scale`` (the evaluation geometry's resize at factor 1): the image bilinearly, the mask by
    nearest neighbour. Then one random window of ``size`` x ``size`` is cut from both; where the
    scaled image is smaller than the window it sits at a random place inside it, padded with 0
    in the image and ``IGNORE`` in the mask. Returns float32 ``[size, size, C]`` and int32 ``[size, size]``.
    """
    s_scale, s_y, s_x = split_seed(seed, 3)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    factor = size / crop_fraction / tf.reduce_min(shape) * _uniform([], s_scale, *scale)
    new = tf.maximum(tf.cast(tf.round(shape * factor), tf.int32), 1)
    image = tf.clip_by_value(tf.image.resize(image, new, antialias=True), 0.0, 1.0)
    mask = tf.image.resize(tf.cast(mask, tf.int32)[..., tf.newaxis], new, method="nearest")[..., 0]
    top, left = _window_start(new[0], size, s_y), _window_start(new[1], size, s_x)
    image = _window(image, top, left, size, 0.0)
    mask = _window(mask, top, left, size, IGNORE)
    return tf.ensure_shape(image, [size, size, None]), tf.ensure_shape(mask, [size, size])


def _window_start(length, size: int, seed):
    """A random start of a ``size`` window over ``length`` pixels; negative (padding first) when it is shorter."""
    low, high = tf.minimum(length - size, 0), tf.maximum(length - size, 0)
    return tf.random.stateless_uniform([], seed, low, high + 1, dtype=tf.int32)


def _window(x, top, left, size: int, fill):
    """``x[top:top + size, left:left + size]``, with ``fill`` where the window reaches outside ``x``."""
    shape = tf.shape(x)
    pads = [[tf.maximum(-top, 0), tf.maximum(top + size - shape[0], 0)],
            [tf.maximum(-left, 0), tf.maximum(left + size - shape[1], 0)]] + [[0, 0]] * (len(x.shape) - 2)
    padded = tf.pad(x, pads, constant_values=tf.cast(fill, x.dtype))
    top, left = tf.maximum(top, 0), tf.maximum(left, 0)
    return padded[top:top + size, left:left + size]


# ------------------------------------------------------------- joint geometry (boxes)
# Boxes are float32 [M, 4] (ymin, xmin, ymax, xmax) in pixels with class int32 [M]; class -1 pads.

MIN_BOX_SIDE = 2.0  # pixels: a box cut thinner than this by a crop is dropped
MIN_BOX_VISIBLE = 0.3  # a box keeps at least this share of its area inside a crop, or is dropped


def stretch_with_boxes(image, boxes, size: int):
    """The whole image resized to ``size`` x ``size`` (the detection evaluation and serving geometry) and its boxes."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    image = tf.clip_by_value(tf.image.resize(image, [size, size], antialias=True), 0.0, 1.0)
    factor = tf.cast(size, tf.float32) / shape
    return image, boxes * tf.concat([factor, factor], 0)


def flip_with_boxes(image, boxes, seed, probability: float = 0.5):
    """Mirror an image ``[H, W, C]`` and its boxes left-right together, or neither."""
    width = tf.cast(tf.shape(image)[1], tf.float32)
    mirrored = tf.stack([boxes[:, 0], width - boxes[:, 3], boxes[:, 2], width - boxes[:, 1]], axis=1)
    return tf.cond(_uniform([], seed) < probability, lambda: (tf.reverse(image, axis=[1]), mirrored),
                   lambda: (image, boxes))


def scale_crop_with_boxes(image, boxes, classes, seed, size: int, scale=(0.75, 1.25)):
    """Scale jitter and a random ``size`` x ``size`` window of a ``size`` x ``size`` image and its boxes.

    The image is resized by a factor drawn from ``scale`` and cut (or, when smaller, padded with 0)
    to the window, as ``joint_scale_crop`` does for masks. Boxes move with it and are clipped to the
    window; a box left thinner than ``MIN_BOX_SIDE`` pixels or with less than ``MIN_BOX_VISIBLE`` of
    its area inside is dropped (its class becomes -1).
    """
    s_scale, s_y, s_x = split_seed(seed, 3)
    before = tf.cast(tf.shape(image)[:2], tf.float32)
    new = tf.maximum(tf.cast(tf.round(before * _uniform([], s_scale, *scale)), tf.int32), 1)
    image = tf.clip_by_value(tf.image.resize(image, new, antialias=True), 0.0, 1.0)
    top, left = _window_start(new[0], size, s_y), _window_start(new[1], size, s_x)
    image = _window(image, top, left, size, 0.0)
    ratio = tf.cast(new, tf.float32) / before
    offset = tf.cast(tf.stack([top, left, top, left]), tf.float32)
    moved = boxes * tf.concat([ratio, ratio], 0) - offset
    boxes, classes = clip_boxes(moved, classes, size)
    return tf.ensure_shape(image, [size, size, None]), boxes, classes


def clip_boxes(boxes, classes, size: int):
    """Boxes clipped to a ``size`` x ``size`` image; those mostly or thinly left are dropped (class -1, box 0)."""
    clipped = tf.clip_by_value(boxes, 0.0, float(size))
    height, width = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    area = tf.maximum(boxes[:, 2] - boxes[:, 0], 0.0) * tf.maximum(boxes[:, 3] - boxes[:, 1], 0.0)
    keep = ((classes >= 0) & (height >= MIN_BOX_SIDE) & (width >= MIN_BOX_SIDE)
            & (height * width >= MIN_BOX_VISIBLE * area))
    return tf.where(keep[:, None], clipped, 0.0), tf.where(keep, classes, -1)


def geometry_with_boxes(image, boxes, classes, seed, recipe: Recipe, spec: Preprocessing):
    """``joint_geometry`` for detection: float [0, 1] ``[H, W, C]`` and its boxes -> ``size`` x ``size``, boxes moved.

    The image is first stretched to the model's size (the evaluation geometry); then, unless
    ``recipe.crop`` is ``"center"``, scale jitter ``recipe.mask_scale`` and a random window; then the flip.
    """
    check_joint_recipe(recipe)
    s_crop, s_flip = split_seed(seed, 2)
    image, boxes = stretch_with_boxes(image, boxes, spec.image_size)
    if recipe.crop != "center":
        image, boxes, classes = scale_crop_with_boxes(image, boxes, classes, s_crop, spec.image_size,
                                                      recipe.mask_scale)
    if recipe.flip:
        image, boxes = flip_with_boxes(image, boxes, s_flip)
        boxes = tf.where(classes[:, None] >= 0, boxes, 0.0)
    return image, boxes, classes


# ------------------------------------------------------------------------ batch ops


def flip(images, seed, probability: float = 0.5):
    """Mirror each image left-right with ``probability``."""
    coin = _uniform([tf.shape(images)[0], 1, 1, 1], seed) < probability
    return tf.where(coin, tf.reverse(images, axis=[2]), images)


# RGB <-> YIQ: hue is a rotation of the (I, Q) chroma plane, so a hue shift is one 3x3 matrix.
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)


def color_jitter(images, seed, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1):
    """Random brightness, contrast, saturation and hue per image, as one affine colour transform.

    Brightness adds a delta in [-b, b]; contrast scales around the image mean by a
    factor in [1 - c, 1 + c]; saturation scales the distance from the grey value by
    a factor in [1 - s, 1 + s]; hue rotates the chroma plane by up to ``hue`` of a
    turn (YIQ rotation). Saturation and hue are linear in RGB, so they fold into one
    per-image 3x3 matrix: one pass over the pixels instead of an HSV round trip.
    """
    batch = tf.shape(images)[0]
    sb, sc, ss, sh = split_seed(seed, 4)
    shape = [batch, 1, 1, 1]
    if brightness:
        images = images + _uniform(shape, sb, -brightness, brightness)
    if contrast:
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        images = (images - mean) * _uniform(shape, sc, 1 - contrast, 1 + contrast) + mean
    if images.shape[-1] == 3 and (saturation or hue):
        matrix = tf.eye(3, batch_shape=[batch])
        if saturation:
            factor = _uniform([batch, 1, 1], ss, 1 - saturation, 1 + saturation)
            grey = tf.tile(tf.constant(LUMA)[tf.newaxis, tf.newaxis, :], [batch, 3, 1])
            matrix = factor * matrix + (1 - factor) * grey
        if hue:
            angle = _uniform([batch], sh, -hue, hue) * (2 * math.pi)
            cos, sin, one, zero = tf.cos(angle), tf.sin(angle), tf.ones([batch]), tf.zeros([batch])
            rotation = tf.reshape(tf.stack([one, zero, zero, zero, cos, -sin, zero, sin, cos], axis=1), [batch, 3, 3])
            hue_rgb = tf.constant(_YIQ_TO_RGB) @ rotation @ tf.constant(_RGB_TO_YIQ)
            matrix = hue_rgb @ matrix
        images = tf.einsum("bhwc,bdc->bhwd", images, matrix)
    return tf.clip_by_value(images, 0.0, 1.0)


def rgb_principal_components(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and eigenvectors (columns) of the RGB covariance of ``images`` (uint8 or [0, 1] float)."""
    pixels = np.asarray(images, dtype=np.float64).reshape(-1, images.shape[-1])
    if images.dtype == np.uint8:
        pixels = pixels / 255.0
    if pixels.shape[-1] != 3:
        raise ValueError(f"PCA lighting needs RGB images, got {pixels.shape[-1]} channel(s)")
    values, vectors = np.linalg.eigh(np.cov(pixels, rowvar=False))
    order = np.argsort(values)[::-1]
    return values[order].astype(np.float32), vectors[:, order].astype(np.float32)


def pca_lighting(images, seed, eigenvalues, eigenvectors, std: float = 0.1):
    """AlexNet's colour augmentation: add ``eigenvectors @ (alpha * eigenvalues)``, alpha ~ N(0, std) per image.

    Krizhevsky et al. 2012, section 4.1: the components come from the RGB
    covariance of the training set; each image draws its own alpha once.
    """
    alpha = tf.random.stateless_normal([tf.shape(images)[0], 3], seed, stddev=std)
    shift = tf.linalg.matvec(tf.constant(eigenvectors, tf.float32), alpha * tf.constant(eigenvalues, tf.float32))
    return tf.clip_by_value(images + shift[:, tf.newaxis, tf.newaxis, :], 0.0, 1.0)


def affine(images, seed, rotation: float = 15.0, translation: float = 0.1, zoom: float = 0.1):
    """Random rotation (degrees), translation (fraction of the size) and zoom per image, zero fill."""
    batch = tf.shape(images)[0]
    size = tf.cast(tf.shape(images)[1:3], tf.float32)
    sr, st, sz = split_seed(seed, 3)
    angle = _uniform([batch], sr, -rotation, rotation) * (math.pi / 180)
    shift = _uniform([batch, 2], st, -translation, translation) * size
    scale = _uniform([batch], sz, 1 - zoom, 1 + zoom)
    return _transform(images, angle, shift, scale, tf.zeros([batch]), tf.zeros([batch]))


def _transform(images, angle, shift, scale, shear_x, shear_y):
    """Apply per-image rotation/scale/shear about the centre, then a shift (output -> input mapping)."""
    height, width = tf.cast(tf.shape(images)[1], tf.float32), tf.cast(tf.shape(images)[2], tf.float32)
    cy, cx = (height - 1) / 2, (width - 1) / 2
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    a0, a1 = cos + shear_x * sin, -sin + shear_x * cos
    b0, b1 = sin + shear_y * cos, cos - shear_y * sin
    a2 = cx - a0 * cx - a1 * cy - shift[:, 1]
    b2 = cy - b0 * cx - b1 * cy - shift[:, 0]
    zeros = tf.zeros_like(a0)
    matrix = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=matrix, output_shape=tf.shape(images)[1:3], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")


def _boxes(batch, height, width, seed, area, ratio=None):
    """Per-image boxes of ``area`` (fraction, ``[B]``) clipped to the image; returns a ``[B, H, W, 1]`` mask."""
    sr, sy, sx = split_seed(seed, 3)
    aspect = tf.exp(_uniform([batch], sr, math.log(ratio[0]), math.log(ratio[1]))) if ratio else tf.ones([batch])
    h = tf.sqrt(area * aspect) * tf.cast(height, tf.float32)
    w = tf.sqrt(area / aspect) * tf.cast(width, tf.float32)
    cy = _uniform([batch], sy) * tf.cast(height, tf.float32)
    cx = _uniform([batch], sx) * tf.cast(width, tf.float32)
    y0, y1 = tf.round(tf.maximum(cy - h / 2, 0.0)), tf.round(tf.minimum(cy + h / 2, tf.cast(height, tf.float32)))
    x0, x1 = tf.round(tf.maximum(cx - w / 2, 0.0)), tf.round(tf.minimum(cx + w / 2, tf.cast(width, tf.float32)))
    rows = tf.range(tf.cast(height, tf.float32))[tf.newaxis, :, tf.newaxis]
    cols = tf.range(tf.cast(width, tf.float32))[tf.newaxis, tf.newaxis, :]
    inside = ((rows >= y0[:, None, None]) & (rows < y1[:, None, None])
              & (cols >= x0[:, None, None]) & (cols < x1[:, None, None]))
    return tf.cast(inside, tf.float32)[..., tf.newaxis]


def random_erasing(images, seed, probability: float = 0.25, area=(0.02, 0.33), ratio=(0.3, 3.3)):
    """Zhong et al. 2020: with ``probability``, replace a random box of each image with uniform noise."""
    shape = tf.shape(images)
    sp, sa, sb, sn = split_seed(seed, 4)
    chosen = tf.cast(_uniform([shape[0]], sp) < probability, tf.float32)
    mask = _boxes(shape[0], shape[1], shape[2], sb, _uniform([shape[0]], sa, *area), ratio)
    mask = mask * chosen[:, None, None, None]
    return images * (1 - mask) + _uniform(shape, sn) * mask


def mixup(images, labels, seed, alpha: float = 0.2):
    """Zhang et al. 2018: blend each image with another from the batch; one-hot labels blend by the same weight."""
    s_lam, s_perm = split_seed(seed, 2)
    batch = tf.shape(images)[0]
    lam = _beta([batch], s_lam, alpha)
    partner = _partner(batch, s_perm)
    mixed = images * lam[:, None, None, None] + tf.gather(images, partner) * (1 - lam[:, None, None, None])
    return mixed, labels * lam[:, None] + tf.gather(labels, partner) * (1 - lam[:, None])


def cutmix(images, labels, seed, alpha: float = 1.0):
    """Yun et al. 2019: paste a box from another image; the label weight of the pasted image is the box's area.

    The area is measured after clipping the box to the image, so the label weights
    always equal the share of pixels each image contributes.
    """
    s_lam, s_box, s_perm = split_seed(seed, 3)
    shape = tf.shape(images)
    area = 1 - _beta([shape[0]], s_lam, alpha)
    mask = _boxes(shape[0], shape[1], shape[2], s_box, area)
    partner = _partner(shape[0], s_perm)
    pasted = tf.reduce_mean(mask, axis=[1, 2, 3])
    mixed = images * (1 - mask) + tf.gather(images, partner) * mask
    return mixed, labels * (1 - pasted[:, None]) + tf.gather(labels, partner) * pasted[:, None]


def _partner(batch, seed):
    """A random permutation of the batch (each image's mixing partner)."""
    return tf.argsort(_uniform([batch], seed))


# ---------------------------------------------------------------------- RandAugment

_MAX_LEVEL = 10.0


def _blend(a, b, factor):
    return tf.clip_by_value(b + (a - b) * factor, 0.0, 1.0)


def _grey(image):
    if image.shape[-1] == 3:
        grey = tf.reduce_sum(image * tf.constant(LUMA), axis=-1, keepdims=True)
        return tf.broadcast_to(grey, tf.shape(image))
    return image


def _autocontrast(image):
    low = tf.reduce_min(image, axis=[0, 1], keepdims=True)
    high = tf.reduce_max(image, axis=[0, 1], keepdims=True)
    return tf.where(high > low, (image - low) / tf.maximum(high - low, 1e-6), image)


def _sharpness(image, factor):
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    channels = tf.shape(image)[-1]
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
    smooth = tf.nn.depthwise_conv2d(image[tf.newaxis], kernel, [1, 1, 1, 1], "SAME")[0]
    return _blend(image, smooth, factor)


def _geometric(image, angle=0.0, shift=(0.0, 0.0), shear=(0.0, 0.0)):
    return _transform(image[tf.newaxis], tf.reshape(angle, [1]), tf.reshape(tf.stack(shift), [1, 2]),
                      tf.ones([1]), tf.reshape(shear[0], [1]), tf.reshape(shear[1], [1]))[0]


def _enhance(sign, m):
    """The PIL-style enhancement factor of a signed op at level ``m`` in [0, 1]: 1 +- 0.9 m (0.1 .. 1.9)."""
    return 1.0 + sign * 0.9 * m


# RandAugment's ops (Cubuk et al. 2020, table of operations), each ``op(image, sign, m)`` with ``m`` the
# magnitude as a fraction of the maximum level (10) and ``sign`` +-1 for the direction of the signed ops.
# Documented ranges at level m: rotate up to 30 m degrees; shear up to 0.3 m; translate up to 0.45 m of the
# size; colour, contrast, brightness and sharpness blend with factor 1 +- 0.9 m; solarize inverts pixels at
# or above 1 - m; posterize keeps 8 - int(4 m) bits.
RANDAUGMENT_OPS = {
    "identity": lambda image, sign, m: image,
    "autocontrast": lambda image, sign, m: _autocontrast(image),
    "rotate": lambda image, sign, m: _geometric(image, angle=sign * 30.0 * m * math.pi / 180),
    "solarize": lambda image, sign, m: tf.where(image < 1.0 - m, image, 1.0 - image),
    "color": lambda image, sign, m: _blend(image, _grey(image), _enhance(sign, m)),
    "posterize": lambda image, sign, m: tf.floor(image * 255.0 / 2 ** int(4 * m)) * 2 ** int(4 * m) / 255.0,
    "contrast": lambda image, sign, m: _blend(image, tf.reduce_mean(_grey(image)), _enhance(sign, m)),
    "brightness": lambda image, sign, m: _blend(image, tf.zeros_like(image), _enhance(sign, m)),
    "sharpness": lambda image, sign, m: _sharpness(image, _enhance(sign, m)),
    "shear_x": lambda image, sign, m: _geometric(image, shear=(sign * 0.3 * m, 0.0)),
    "shear_y": lambda image, sign, m: _geometric(image, shear=(0.0, sign * 0.3 * m)),
    "translate_x": lambda image, sign, m: _geometric(image, shift=(0.0, sign * 0.45 * m * _height(image))),
    "translate_y": lambda image, sign, m: _geometric(image, shift=(sign * 0.45 * m * _height(image), 0.0)),
}


def _height(image):
    return tf.cast(tf.shape(image)[0], tf.float32)


def randaugment(image, seed, num_ops: int = 2, magnitude: float = 9.0):
    """Apply ``num_ops`` ops drawn uniformly from the RandAugment list at ``magnitude`` (0-10) to one image."""
    if not 0 <= magnitude <= _MAX_LEVEL:
        raise ValueError(f"RandAugment magnitude must be in [0, {_MAX_LEVEL:g}], got {magnitude!r}")
    ops = list(RANDAUGMENT_OPS.values())
    m = magnitude / _MAX_LEVEL
    for seed_i in split_seed(seed, num_ops):
        s_op, s_sign = split_seed(seed_i, 2)
        index = tf.random.stateless_uniform([], s_op, 0, len(ops), dtype=tf.int32)
        sign = tf.where(_uniform([], s_sign) < 0.5, -1.0, 1.0)
        image = tf.switch_case(index, [lambda op=op: op(image, sign, m) for op in ops])
    return tf.clip_by_value(image, 0.0, 1.0)


# -------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class Recipe:
    """A training augmentation recipe: one per-image geometry, then batch ops in a fixed order.

    ``crop`` is ``"center"`` (no random geometry), ``"pad"`` (pad ``pad`` pixels at 32
    and random crop, scaled to the image size), ``"resize"`` (AlexNet: shorter side to
    ``size * 256 / 224``, random crop) or ``"resized_crop"`` (Inception, ``scale`` and
    ``ratio``). For masks (``joint_geometry``) every random crop is ``joint_scale_crop``
    with the scale jitter ``mask_scale``: the classification crops' area ranges are made
    for one object per photo and would cut most of a scene away.
    """

    crop: str = "center"
    pad: int = 4
    scale: tuple = (0.08, 1.0)
    ratio: tuple = (3 / 4, 4 / 3)
    flip: bool = False
    color: tuple | None = None  # brightness, contrast, saturation, hue
    pca_std: float = 0.0
    randaugment: tuple | None = None  # num_ops, magnitude
    erasing: float = 0.0
    mask_scale: tuple = (0.75, 1.25)

    def __post_init__(self):
        if self.crop not in CROPS:
            raise ValueError(f"crop must be one of {', '.join(CROPS)}, got {self.crop!r}")


CROPS = ("center", "pad", "resize", "resized_crop")

PRESETS = {
    "none": Recipe(),
    "cifar": Recipe(crop="pad", pad=4, flip=True),
    "alexnet": Recipe(crop="resize", flip=True, pca_std=0.1),
    "inception": Recipe(crop="resized_crop", flip=True, color=(0.4, 0.4, 0.4, 0.1)),
    "strong": Recipe(crop="resized_crop", scale=(0.25, 1.0), flip=True, randaugment=(2, 9.0), erasing=0.25),
}
assert tuple(PRESETS) == choices.AUGMENT_PRESETS

MIX_FUNCTIONS = {"mixup": mixup, "cutmix": cutmix}
MIX_DEFAULT_ALPHA = {"mixup": 0.2, "cutmix": 1.0}  # the papers' ImageNet settings
MIXES = choices.MIXES
assert set(MIX_FUNCTIONS) == set(MIXES) and set(MIX_DEFAULT_ALPHA) == set(MIXES)


def get_recipe(augment) -> Recipe:
    """A preset name, a ``Recipe``, or ``None`` (= ``"none"``)."""
    if augment is None:
        return PRESETS["none"]
    if isinstance(augment, Recipe):
        return augment
    if isinstance(augment, str) and augment in PRESETS:
        return PRESETS[augment]
    raise ValueError(f"augment must be a preset name ({', '.join(PRESETS)}) or a pipelines.augment.Recipe, "
                     f"got {augment!r}")


def batched_geometry(recipe: Recipe) -> bool:
    """True when the recipe's geometry runs vectorised on whole batches of same-size images (faster there)."""
    return recipe.crop in ("center", "pad") and not recipe.randaugment


def train_geometry(image, seed, recipe: Recipe, spec: Preprocessing):
    """Per-image random geometry, flip and RandAugment: float [0, 1] image -> ``[size, size, C]``.

    ``crop="center"`` is the evaluation geometry of ``spec`` itself.
    """
    size = spec.image_size
    s_crop, s_flip, s_ra = split_seed(seed, 3)
    if recipe.crop == "center":
        image = center_crop(image, size, spec.crop_fraction)
    elif recipe.crop == "pad":
        image = pad_and_crop(image, s_crop, size, _pad_pixels(recipe, size))
    elif recipe.crop == "resize":
        image = resize_and_random_crop(image, s_crop, size, round(size * 256 / 224))
    else:
        image = random_resized_crop(image, s_crop, size, recipe.scale, recipe.ratio)
    if recipe.flip:
        image = flip_one(image, s_flip)
    if recipe.randaugment:
        image = randaugment(image, s_ra, *recipe.randaugment)
    return tf.ensure_shape(image, [size, size, None])


def check_joint_recipe(recipe: Recipe) -> None:
    """Refuse what a recipe would do to an image without doing it to its mask (RandAugment's geometry, erasing)."""
    unsupported = [what for what, used in (("RandAugment", recipe.randaugment), ("random erasing", recipe.erasing))
                   if used]
    if unsupported:
        usable = ", ".join(name for name, preset in PRESETS.items() if not (preset.randaugment or preset.erasing))
        raise ValueError(f"segmentation (target='mask') cannot use {' or '.join(unsupported)}: the image would "
                         f"change without its mask. Presets that work: {usable}")


def joint_geometry(image, mask, seed, recipe: Recipe, spec: Preprocessing):
    """``train_geometry`` for an image and its mask: float [0, 1] ``[H, W, C]`` and ``[H, W]`` -> the pair at size.

    ``crop="center"`` is the evaluation geometry; every random crop is ``joint_scale_crop`` with
    ``recipe.mask_scale``; ``recipe.flip`` flips both alike.
    """
    check_joint_recipe(recipe)
    s_crop, s_flip = split_seed(seed, 2)
    if recipe.crop == "center":
        image, mask = joint_center_crop(image, mask, spec.image_size, spec.crop_fraction)
    else:
        image, mask = joint_scale_crop(image, mask, s_crop, spec.image_size, recipe.mask_scale, spec.crop_fraction)
    if recipe.flip:
        image, mask = joint_flip(image, mask, s_flip)
    return image, mask


def train_batch_geometry(images, seed, recipe: Recipe, spec: Preprocessing):
    """``train_geometry`` for recipes where ``batched_geometry`` holds, on a batch of same-size images."""
    size = spec.image_size
    s_crop, s_flip = split_seed(seed, 2)
    if recipe.crop == "pad":  # pad, crop and flip in one pair of gathers
        if images.shape[1] != size or images.shape[2] != size:
            images = tf.image.resize(images, [size, size], antialias=True)
        images = batch_pad_and_crop(images, s_crop, _pad_pixels(recipe, size), 0.5 if recipe.flip else 0.0)
    else:
        images = resize_and_center_crop(images, size, spec.crop_fraction)
        images = flip(images, s_flip) if recipe.flip else images
    return tf.ensure_shape(images, [None, size, size, None])


def _pad_pixels(recipe: Recipe, size: int) -> int:
    """``recipe.pad`` is given for 32-pixel images; scale it to ``size``."""
    return max(1, round(recipe.pad * size / 32))


def train_batch_ops(images, seed, recipe: Recipe, pca=None):
    """The recipe's photometric batch ops in order: colour, PCA lighting, erasing."""
    sc, sp, se = split_seed(seed, 3)
    if recipe.color:
        images = color_jitter(images, sc, *recipe.color)
    if recipe.pca_std:
        if pca is None:
            raise ValueError("PCA lighting needs the training set's RGB principal components (pca=(values, vectors))")
        images = pca_lighting(images, sp, pca[0], pca[1], recipe.pca_std)
    if recipe.erasing:
        images = random_erasing(images, se, recipe.erasing)
    return images


# ----------------------------------------------------------------- test-time (TTA)


def ten_crops(images, crop_size: int, flip: bool = True):
    """The four corner crops and the centre crop of each image, and with ``flip`` their mirror images.

    ``[10, B, s, s, C]`` (``[5, ...]`` without ``flip``).
    """
    height, width = images.shape[1], images.shape[2]
    if height is None or width is None:
        height, width = tf.shape(images)[1], tf.shape(images)[2]
    top, left = (height - crop_size) // 2, (width - crop_size) // 2
    corners = [(0, 0), (0, width - crop_size), (height - crop_size, 0), (height - crop_size, width - crop_size),
               (top, left)]
    crops = [images[:, y:y + crop_size, x:x + crop_size, :] for y, x in corners]
    return tf.stack(crops + ([tf.reverse(c, axis=[2]) for c in crops] if flip else []))


def ten_crop_predict(model, images, crop_size: int, batch_size: int = 64, flip: bool = True) -> np.ndarray:
    """AlexNet's test-time augmentation: average ``model``'s predictions over the ten crops.

    ``images`` are preprocessed model inputs larger than ``crop_size`` (e.g. 256 for
    224 crops, section 4.1 of Krizhevsky et al. 2012). ``flip=False`` leaves out the
    mirror images (five crops), for data that is not mirror-symmetric (digits, text).
    """
    images = tf.convert_to_tensor(images, tf.float32)
    if images.shape[1] < crop_size or images.shape[2] < crop_size:
        raise ValueError(f"ten-crop TTA needs images of at least {crop_size}x{crop_size}, got {images.shape[1:3]}")
    crops = ten_crops(images, crop_size, flip)
    views, count = int(crops.shape[0]), int(tf.shape(crops)[1])
    flat = tf.reshape(crops, [views * count, *crops.shape[2:]])  # view-major: rows v * count ... (v + 1) * count
    # predict_on_batch reuses one compiled predict function; predict() set up a new one per call (80 ms each).
    predictions = np.concatenate([np.asarray(model.predict_on_batch(flat[start:start + batch_size]))
                                  for start in range(0, views * count, batch_size)])
    return predictions.reshape(views, count, -1).mean(axis=0)
