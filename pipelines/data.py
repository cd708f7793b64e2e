"""``make_dataset``: a source, a split and a recipe -> a batched, prefetched ``tf.data.Dataset``.

Training pipelines (``augment`` given) shuffle, apply the recipe's per-image
geometry in parallel, batch, then apply the batch ops vectorised over the batch and
normalise; with ``mix`` they also turn labels into mixed one-hot vectors.
Evaluation pipelines (``augment=None``) apply no randomness: the shared resize,
centre crop and normalisation of :mod:`pipelines.preprocess`.

Randomness is stateless and seeded per element and per batch from ``seed``, so the
same seed gives the same batches on every run; ``deterministic=False`` lets the
parallel map return elements out of order for speed.
"""

from __future__ import annotations

import secrets

import tensorflow as tf

from pipelines import augment as aug
from pipelines.preprocess import Preprocessing, check_image_size, match_channels, normalize, resize_and_center_crop
from pipelines.sources import Source, load_source, sample_images

AUTOTUNE = tf.data.AUTOTUNE


def make_dataset(source, split: str = "train", *, image_size: int, batch_size: int, augment=None,
                 seed: int | None = None, channels: int = 3, crop_fraction: float = 1.0, mean=(0.5,), std=(0.5,),
                 mix: str | None = None, mix_alpha: float | None = None, shuffle: bool | None = None,
                 shuffle_buffer: int = 10_000, deterministic: bool = True, cache: bool = False,
                 drop_remainder: bool | None = None, repeat: bool = False, pca=None, target: str = "label",
                 data_dir: str | None = None, download: bool = False, bad_files: str = "error",
                 class_names=None) -> tf.data.Dataset:
    """A ``tf.data.Dataset`` of ``(images, labels)`` batches from ``source`` (see ``pipelines.sources``).

    ``augment`` is a preset name (``none``, ``cifar``, ``alexnet``, ``inception``,
    ``strong``) or a :class:`pipelines.augment.Recipe`; ``None`` gives the
    evaluation pipeline. ``mix`` is ``"mixup"`` or ``"cutmix"`` (training only);
    labels then become float one-hot vectors. ``target="mask"`` (shapes only) gives
    per-pixel labels for segmentation, with evaluation geometry.

    The returned dataset carries ``class_names``, ``num_examples``,
    ``preprocessing`` (the :class:`Preprocessing` serving must apply) and
    ``skipped`` (files left out under ``bad_files="skip"``) as attributes.
    """
    check_image_size(image_size)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    recipe = aug.get_recipe(augment) if augment is not None else None
    training = recipe is not None
    if mix is not None and mix not in aug.MIXES:
        raise ValueError(f"mix must be one of {', '.join(aug.MIXES)} or None, got {mix!r}")
    if mix and not training:
        raise ValueError("mix (MixUp/CutMix) applies to training pipelines only; pass augment=PRESET as well")
    if target not in ("label", "mask"):
        raise ValueError(f"target must be 'label' or 'mask', got {target!r}")
    spec = Preprocessing(image_size, channels, crop_fraction, tuple(mean), tuple(std))
    src = load_source(source, split, data_dir=data_dir, download=download, bad_files=bad_files,
                      class_names=class_names)
    seed = secrets.randbits(31) if seed is None else int(seed)
    shuffle = training if shuffle is None else shuffle
    dataset = _mask_pairs(src, recipe) if target == "mask" else src.dataset
    dataset = dataset.cache() if cache else dataset
    if shuffle:
        dataset = dataset.shuffle(min(shuffle_buffer, max(src.num_examples, 1)), seed=seed,
                                  reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    # Same-size decoded images whose geometry vectorises skip the per-image map: whole batches are cheaper.
    image_shape = src.dataset.element_spec[0].shape
    per_batch = (target == "label" and not src.encoded and image_shape.is_fully_defined()
                 and (recipe is None or aug.batched_geometry(recipe)))
    if not per_batch:
        dataset = _with_seeds(dataset, seed)
        dataset = dataset.map(_element_map(src, spec, recipe, target), num_parallel_calls=AUTOTUNE,
                              deterministic=deterministic)
    dataset = dataset.batch(batch_size, drop_remainder=training if drop_remainder is None else drop_remainder,
                            num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    dataset = _with_seeds(dataset, seed + 1)
    batch_map = _batch_map(spec, recipe, _pca(recipe, pca, src, channels), mix, mix_alpha,
                           len(src.class_names), target, per_batch)
    dataset = dataset.map(batch_map, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    dataset = dataset.prefetch(AUTOTUNE)
    dataset.class_names = list(src.class_names)
    dataset.num_examples = src.num_examples
    dataset.preprocessing = spec
    dataset.skipped = src.skipped
    dataset.source = src.name
    return dataset


def _mask_pairs(src: Source, recipe):
    """(image, mask) pairs for segmentation."""
    if src.masks is None:
        raise ValueError(f"target='mask' needs a source with per-pixel labels (shapes); {src.name} has none")
    if recipe is not None and recipe != aug.PRESETS["none"]:
        raise ValueError("segmentation pipelines (target='mask') support augment=None or 'none' only")
    return tf.data.Dataset.zip((src.dataset.map(lambda image, label: image), src.masks))


def _with_seeds(dataset, seed: int):
    """Pair each element with its own ``[2]`` seed from a seeded random stream (new draws every epoch)."""
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip((dataset, seeds))


def _element_map(src: Source, spec: Preprocessing, recipe, target: str):
    """One element -> float32 ``[size, size, C]`` in [0, 1] (and its label or mask)."""
    size = spec.image_size
    direct_crop = recipe is not None and recipe.crop == "resized_crop" and src.encoded and not recipe.randaugment

    def to_unit(image):
        if src.encoded:
            image = tf.io.decode_image(image, channels=spec.channels, expand_animations=False, dtype=tf.uint8)
            image.set_shape([None, None, spec.channels])
        return _unit(image, spec)

    def apply(element, seed):
        image, label = element
        if target == "mask":
            unit = to_unit(image)
            image = resize_and_center_crop(unit[tf.newaxis], size, spec.crop_fraction)[0]
            mask = resize_and_center_crop(label[tf.newaxis, ..., tf.newaxis], size, spec.crop_fraction,
                                          method="nearest")
            return image, tf.cast(mask[0, ..., 0], tf.int32)
        seed = tf.cast(seed, tf.int32)
        if direct_crop:
            s_crop, s_flip = aug.split_seed(seed, 2)
            image = aug.decode_random_resized_crop(image, s_crop, size, spec.channels, recipe.scale, recipe.ratio)
            image = aug.flip_one(image, s_flip) if recipe.flip else image
        elif recipe is None:
            image = aug.center_crop(to_unit(image), size, spec.crop_fraction)
        else:
            image = aug.train_geometry(to_unit(image), seed, recipe, spec)
        return tf.ensure_shape(image, [size, size, spec.channels]), label

    return apply


def _pca(recipe, pca, src: Source, channels: int):
    """The training set's RGB principal components when the recipe uses PCA lighting."""
    if recipe is None or not recipe.pca_std:
        return None
    if channels != 3:
        raise ValueError("PCA lighting (the alexnet preset) needs channels=3")
    return pca if pca is not None else aug.rgb_principal_components(sample_images(src))


def _unit(images, spec: Preprocessing):
    """uint8 pixels with any channel count -> float32 [0, 1] with the spec's channels."""
    return match_channels(tf.cast(images, tf.float32) / 255.0, spec.channels)


def _batch_map(spec: Preprocessing, recipe, pca, mix, mix_alpha, num_classes: int, target: str, geometry: bool):
    """Batch stage: geometry too when ``geometry`` (same-size sources), then batch ops, normalisation, mixing."""

    def apply(batch, seed):
        images, labels = batch
        seed = tf.cast(seed, tf.int32)
        s_geometry, s_ops, s_mix = aug.split_seed(seed, 3)
        if geometry:
            images = _unit(images, spec)
            if recipe is None:
                images = resize_and_center_crop(images, spec.image_size, spec.crop_fraction)
            else:
                images = aug.train_batch_geometry(images, s_geometry, recipe, spec)
        if recipe is not None and target == "label":
            images = aug.train_batch_ops(images, s_ops, recipe, pca)
        images = normalize(images, spec)
        if mix:
            one_hot = tf.one_hot(labels, num_classes)
            alpha = mix_alpha if mix_alpha is not None else (0.2 if mix == "mixup" else 1.0)
            images, labels = (aug.mixup if mix == "mixup" else aug.cutmix)(images, one_hot, s_mix, alpha)
        return images, labels

    return apply
