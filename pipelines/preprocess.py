"""Evaluation preprocessing: the one piece of code training, evaluation and serving share.

``Preprocessing`` describes it as data (it travels into exported models as JSON);
``preprocess_images`` applies it to a batch in TensorFlow: scale to [0, 1], match the
channel count, resize so the shorter side is ``image_size / crop_fraction``, centre
crop ``image_size`` and normalise with the per-channel mean and std.
``preprocess_encoded`` is the same for one encoded file, decoded by ``decode_image``.

Who calls what: the evaluation pipeline (``pipelines.data``) calls
``preprocess_images`` on batches of decoded images and ``preprocess_encoded`` on
files; the exported serving graph (``serving.export``) calls the same two functions
on what clients send. Training augmentations start from ``unit_images`` (the first two
steps) and end with ``normalize``. Every file is decoded to RGB first and converted to
the model's channel count by ``match_channels`` on [0, 1] floats, so a grey model sees
the same luminance whether the file was grey or RGB, in every path.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import tensorflow as tf


@dataclass(frozen=True)
class Preprocessing:
    """How raw uint8 images become model inputs.

    ``mean`` and ``std`` apply to pixels scaled to [0, 1], one value per channel
    (or one for all). ``crop_fraction`` is the share of the resized image the
    centre crop keeps (0.875 is the classic 224-of-256); 1.0 resizes straight to
    ``image_size``. ``channel_order="bgr"`` reverses RGB before normalising (then
    ``mean`` and ``std`` are in BGR order), for networks trained on BGR pixels such
    as keras.applications' "caffe" checkpoints.
    """

    image_size: int
    channels: int = 3
    crop_fraction: float = 1.0
    mean: tuple = field(default=(0.5,))
    std: tuple = field(default=(0.5,))
    channel_order: str = "rgb"

    def __post_init__(self):
        check_image_size(self.image_size)
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {self.channels!r}")
        if not 0 < self.crop_fraction <= 1:
            raise ValueError(f"crop_fraction must be in (0, 1], got {self.crop_fraction!r}")
        for key in ("mean", "std"):
            values = tuple(float(v) for v in getattr(self, key))
            if len(values) == 3 and self.channels == 1:
                raise ValueError(f"{key} {values} has one value per RGB channel but the images are grey "
                                 "(channels 1); set data.channels=3 (pretrained weights expect RGB) or give one value")
            if len(values) not in (1, self.channels):
                raise ValueError(f"{key} needs 1 or {self.channels} values (one per channel), got {values}")
            object.__setattr__(self, key, values)
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be > 0, got {self.std}")
        if self.channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {', '.join(CHANNEL_ORDERS)}, got {self.channel_order!r}")
        if self.channel_order == "bgr" and self.channels != 3:
            raise ValueError("channel_order 'bgr' needs channels=3")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Preprocessing":
        return cls(**json.loads(text))


CHANNEL_ORDERS = ("rgb", "bgr")


def check_image_size(image_size) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer number of pixels, got {image_size!r}")
    return image_size


# ITU-R BT.601 luma weights: RGB -> grey here, and the grey of RandAugment's colour and contrast ops.
LUMA = (0.299, 0.587, 0.114)


def match_channels(images: tf.Tensor, channels: int) -> tf.Tensor:
    """Grey to RGB by replication, RGB to grey by luminance (``LUMA``), RGBA to RGB by dropping alpha."""
    have = images.shape[-1]
    if have == channels:
        return images
    if have == 4:
        images = images[..., :3]
        have = 3
    if have == 1 and channels == 3:
        return tf.repeat(images, 3, axis=-1)
    if have == 3 and channels == 1:
        grey = tf.reduce_sum(tf.cast(images, tf.float32) * tf.constant(LUMA), axis=-1, keepdims=True)
        return tf.cast(tf.round(grey) if images.dtype.is_integer else grey, images.dtype)
    if have == channels:
        return images
    raise ValueError(f"cannot convert images with {have} channels to {channels}")


def to_unit_range(images: tf.Tensor, *, read_from: tf.Tensor | None = None) -> tf.Tensor:
    """uint8 [0, 255] to float32 [0, 1].

    Float images are taken as [0, 1] unless a value exceeds 1, in which case the
    batch is read as [0, 255] pixels, so clients may send either convention.
    ``read_from`` is the batch that convention is read from when ``images`` is already
    a resized copy of it (the resize may lower the largest value below 1).
    """
    source = images if read_from is None else read_from
    if source.dtype == tf.uint8:
        return tf.cast(images, tf.float32) / 255.0
    images = tf.cast(images, tf.float32)
    return tf.cond(tf.reduce_max(source) > 1.0, lambda: images / 255.0, lambda: images)


def normalize(images: tf.Tensor, spec: Preprocessing) -> tf.Tensor:
    """[0, 1] float RGB images to model inputs: (x - mean) / std per channel, after RGB -> BGR if asked."""
    images = tf.cast(images, tf.float32)
    if spec.channel_order == "bgr":
        images = images[..., ::-1]
    return (images - tf.constant(spec.mean, tf.float32)) / tf.constant(spec.std, tf.float32)


def resize_and_center_crop(images: tf.Tensor, size: int, crop_fraction: float = 1.0, *,
                           method: str = "bilinear") -> tf.Tensor:
    """Resize a batch (any height and width) so the shorter side is size / crop_fraction, crop the centre.

    Bilinear with antialiasing for images; ``method="nearest"`` for label masks. The result is
    float32; uint8 images are read as they are (the resize op takes them), never as a full-size
    float copy, which is 4x their memory.
    """
    shape = tf.shape(images)
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    target = tf.cast(size, tf.float32) / crop_fraction
    scale = target / tf.minimum(height, width)
    new_h = tf.maximum(size, tf.cast(tf.round(height * scale), tf.int32))
    new_w = tf.maximum(size, tf.cast(tf.round(width * scale), tf.int32))
    if method != "bilinear" or images.dtype not in (tf.uint8, tf.float32):
        images = tf.cast(images, tf.float32)
    resized = resize(images, new_h, new_w, method=method)
    top = (new_h - size) // 2
    left = (new_w - size) // 2
    return tf.ensure_shape(resized[:, top:top + size, left:left + size, :], [None, size, size, None])


def resize(images: tf.Tensor, height, width, *, method: str = "bilinear") -> tf.Tensor:
    """``tf.image.resize`` of a batch (antialiased when bilinear; float32, or the input's dtype for nearest),
    skipped when the size is already ``height`` x ``width``: the resize at scale 1 returns its input exactly,
    but costs a pass over it (about 0.1 ms of a 32x32 ResNet-18's 2.3 ms at batch 1)."""
    def resized():
        return tf.image.resize(images, tf.stack([height, width]), method=method, antialias=method == "bilinear")

    if method not in ("bilinear", "nearest") or images.shape.rank != 4:
        return resized()
    shape = tf.shape(images)
    same = tf.logical_and(tf.equal(shape[1], height), tf.equal(shape[2], width))
    dtype = images.dtype if method == "nearest" else tf.float32
    out = tf.cond(same, lambda: tf.cast(images, dtype), resized)
    out.set_shape([images.shape[0], height if isinstance(height, int) else None,
                   width if isinstance(width, int) else None, images.shape[3]])
    return out


def unit_images(images: tf.Tensor, channels: int) -> tf.Tensor:
    """uint8 (or float) images with 1, 3 or 4 channels -> float32 [0, 1] with ``channels`` channels."""
    return match_channels(to_unit_range(images), channels)


def _model_inputs(raw: tf.Tensor, resized: tf.Tensor, spec: Preprocessing) -> tf.Tensor:
    """Unit range, channels, clip and normalisation of ``resized``, a resized copy of the raw pixels ``raw``.

    Every step after the resize is per pixel (the luminance a weighted sum of channels, the scale a
    constant), so resizing first gives the same inputs while holding a large image only once, in
    its own dtype: a 4096x4096 uint8 image costs its 50 MB, not 50 MB per float step.
    """
    unit = match_channels(to_unit_range(resized, read_from=raw), spec.channels)
    return normalize(tf.clip_by_value(unit, 0.0, 1.0), spec)


def preprocess_images(images: tf.Tensor, spec: Preprocessing) -> tf.Tensor:
    """A batch of uint8 (or float) images ``[batch, H, W, C]`` at any size -> normalised model inputs."""
    return _model_inputs(images, resize_and_center_crop(images, spec.image_size, spec.crop_fraction), spec)


def stretched_inputs(images: tf.Tensor, spec: Preprocessing) -> tf.Tensor:
    """uint8 (or float) images (one ``[H, W, C]`` or a batch) -> normalised inputs at ``image_size`` square.

    The whole image is resized to the training size (no crop), so every input pixel has a place in
    the model's output map (segmentation, detection); square images get the evaluation resize.
    """
    size = spec.image_size
    if images.dtype not in (tf.uint8, tf.float32):
        images = tf.cast(images, tf.float32)
    if images.shape.rank == 3:
        return _model_inputs(images, resize(images[tf.newaxis], size, size)[0], spec)
    return _model_inputs(images, resize(images, size, size), spec)


def preprocess_encoded(encoded: tf.Tensor, spec: Preprocessing, *, max_pixels: int | None = None) -> tf.Tensor:
    """One encoded file (scalar string) -> normalised ``[image_size, image_size, channels]`` model input.

    ``max_pixels`` refuses larger images before decoding (INVALID_ARGUMENT). A JPEG much larger than
    the model needs is decoded at 1/2, 1/4 or 1/8 scale by the decoder itself, keeping at least twice
    the pixels the resize keeps, so a large photo costs a fraction of its full-size memory.
    """
    min_side = math.ceil(spec.image_size / spec.crop_fraction)
    return preprocess_images(decode_image(encoded, max_pixels=max_pixels, min_side=min_side)[tf.newaxis], spec)[0]


DECODED_CHANNELS = 3  # files always decode to RGB; match_channels then gives the model's channel count
JPEG_SCALES = (1, 2, 4, 8)  # the DCT scalings libjpeg decodes directly


def decode_image(encoded: tf.Tensor, *, max_pixels: int | None = None, min_side: int | None = None) -> tf.Tensor:
    """Decode one JPEG, PNG, GIF (first frame), BMP or WebP string to uint8 RGB ``[H, W, 3]`` (grey replicated).

    ``max_pixels``: fail with INVALID_ARGUMENT, before decoding, when the header declares more pixels.
    ``min_side``: decode JPEGs at the smallest DCT scale whose shorter side stays >= 2 * min_side.
    """
    checks = []
    if max_pixels is not None or min_side is not None:
        from pipelines.image_header import check_pixels, image_dimensions, image_format

        dims = check_pixels(encoded, max_pixels) if max_pixels is not None else image_dimensions(encoded)
        checks.append(dims)
    if min_side is not None:
        shorter = tf.reduce_min(dims)
        halvings = tf.reduce_sum(tf.cast([shorter >= 2 * min_side * scale for scale in JPEG_SCALES[1:]], tf.int32))
        halvings = tf.where(tf.equal(image_format(encoded), "jpeg"), halvings, 0)
        branches = [lambda: _decode_any(encoded)] + [
            (lambda scale=scale: tf.io.decode_jpeg(encoded, channels=DECODED_CHANNELS, ratio=scale))
            for scale in JPEG_SCALES[1:]]
        image = tf.switch_case(halvings, branches)
    else:
        with tf.control_dependencies(checks):
            image = _decode_any(encoded)
    image.set_shape([None, None, DECODED_CHANNELS])
    return image


def _decode_any(encoded: tf.Tensor) -> tf.Tensor:
    return tf.io.decode_image(encoded, channels=DECODED_CHANNELS, expand_animations=False, dtype=tf.uint8)
