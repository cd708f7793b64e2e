"""``make_dataset(spec, split)``: a :class:`DataSpec` and a split -> a batched ``tf.data.Dataset`` and its info.

A :class:`DataSpec` says everything about the data once: the source, the split
names, the :class:`~pipelines.preprocess.Preprocessing` (image size, channels, crop,
mean and std), the training augmentation ``Recipe`` and mix, and the loader options.
Build it from a config's ``data`` section with :meth:`DataSpec.from_config` or with
keywords through :meth:`DataSpec.create`; :func:`load_dataset` is the one-line form.

The training split of a spec with a recipe gives the training pipeline: shuffle,
the recipe's per-image geometry in parallel, batch, the batch ops vectorised over the
batch, normalisation, and with ``mix`` mixed one-hot labels. Every other split gives
the evaluation pipeline, which applies no randomness and is, by construction, the
serving graph's preprocessing: batches of decoded images go through
``preprocess_images`` and encoded files through ``preprocess_encoded``, the very
functions ``serving.export`` puts in the exported model.

``target="boxes"`` (detection) yields ``{"boxes": float32 [B, max_boxes, 4], "classes": int32
[B, max_boxes]}``: each image's boxes ``(ymin, xmin, ymax, xmax)`` in the model input's pixels,
padded with class -1. Every split stretches the whole image to ``S`` x ``S`` (what the exported
detector does, so no object is cropped away); training adds the recipe's flip and a scale jitter
and random window that move, clip and drop the boxes with the image (``augment.geometry_with_boxes``).

``target="mask"`` (semantic segmentation) yields int32 class-index masks ``[B, S, S]``
beside the images (255 = ignore, kept as it is): the evaluation pipeline resizes and crops
them as the images, by nearest neighbour; the training pipeline moves image and mask
together (``augment.joint_geometry``: the recipe's flip and a scale jitter and random crop,
padded with 255) and applies the recipe's colour ops to the image alone.

Randomness is stateless and seeded per element and per batch from ``seed``, so the
same seed gives the same batches on every run; ``deterministic=False`` lets the
parallel map return elements out of order for speed.
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from pipelines import augment as aug
from pipelines.preprocess import (Preprocessing, decode_image, normalize, preprocess_encoded, preprocess_images,
                                  resize_and_center_crop, unit_images)
from pipelines.choices import BAD_FILE_POLICIES, SPLITS, TARGETS
from pipelines.sources import FOLDER_SPLIT_FRACTIONS, Source, load_source, sample_images

AUTOTUNE = tf.data.AUTOTUNE


@dataclass(frozen=True)
class DataSpec:
    """What to load and how to turn it into model inputs, for every split.

    ``source`` is a source spec string (``digits``, ``shapes``, ``scenes``, ``tfds:NAME``,
    ``folder:PATH``, ``tfrecord:GLOB``) or an ``(images, labels)`` pair of arrays.
    ``recipe`` (a :class:`pipelines.augment.Recipe`) applies to ``train_split`` only;
    ``None`` makes every split an evaluation pipeline. ``mix`` is ``"mixup"`` or
    ``"cutmix"`` (training split, needs a recipe). ``target="mask"`` gives per-pixel
    labels (sources with masks: scenes, shapes, a segmentation folder, TFDS data sets
    with a ``segmentation_mask``); it takes no mix, RandAugment or erasing.
    """

    source: Any
    preprocessing: Preprocessing
    batch_size: int
    recipe: aug.Recipe | None = None
    mix: str | None = None
    mix_alpha: float | None = None
    train_split: str = "train"
    validation_split: str = "validation"
    test_split: str = "test"
    seed: int | None = None
    shuffle_buffer: int = 10_000
    deterministic: bool = True
    cache: bool = False
    data_dir: str | None = None
    download: bool = False
    bad_files: str = "error"
    split_fractions: tuple = FOLDER_SPLIT_FRACTIONS
    split_seed: int = 0
    class_names: tuple | None = None
    target: str = "label"
    pca: tuple | None = None
    max_boxes: int = 100

    def __post_init__(self):
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.mix is not None and self.mix not in aug.MIXES:
            raise ValueError(f"mix must be one of {', '.join(aug.MIXES)} or None, got {self.mix!r}")
        if self.mix and self.recipe is None:
            raise ValueError("mix (MixUp/CutMix) applies to training pipelines only; give an augmentation "
                             "preset as well (augment=PRESET)")
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if self.target == "mask" and self.mix:
            raise ValueError(f"mix ({self.mix}) blends whole images and their labels; segmentation masks "
                             "(target='mask') have no such mix here: set mix to None")
        if self.target == "mask" and self.recipe is not None:
            aug.check_joint_recipe(self.recipe)
        if self.target == "boxes":
            if self.mix:
                raise ValueError(f"mix ({self.mix}) blends whole images; detection boxes (target='boxes') have no "
                                 "such mix here: set mix to None")
            if self.recipe is not None:
                aug.check_joint_recipe(self.recipe)
            if isinstance(self.max_boxes, bool) or not isinstance(self.max_boxes, int) or self.max_boxes < 1:
                raise ValueError(f"max_boxes must be a positive integer, got {self.max_boxes!r}")
        if self.bad_files not in BAD_FILE_POLICIES:
            raise ValueError(f"bad_files must be one of {', '.join(BAD_FILE_POLICIES)}, got {self.bad_files!r}")
        if self.recipe is not None and self.recipe.pca_std and self.preprocessing.channels != 3:
            raise ValueError("PCA lighting (the alexnet preset) needs channels=3")

    @classmethod
    def create(cls, source, *, image_size: int, batch_size: int, augment=None, channels: int = 3,
               crop_fraction: float = 1.0, mean=(0.5,), std=(0.5,), channel_order: str = "rgb",
               **options) -> "DataSpec":
        """A spec from keywords: ``augment`` is a preset name or a ``Recipe``; ``options`` are the other fields."""
        preprocessing = Preprocessing(image_size, channels, crop_fraction, tuple(mean), tuple(std), channel_order)
        recipe = aug.get_recipe(augment) if augment is not None else None
        if options.get("class_names") is not None:
            options["class_names"] = tuple(options["class_names"])
        return cls(source, preprocessing, batch_size, recipe, **options)

    @classmethod
    def from_config(cls, data, *, model=None, seed: int | None = None,
                    preprocessing: Preprocessing | None = None) -> "DataSpec":
        """The spec a config's ``data`` section (:class:`pipelines.config.DataConfig`) describes.

        ``data.mean``, ``data.std`` and ``data.crop_fraction`` left null take the values of the
        pretrained weights the ``model`` section starts from (``model.weights``: a checkpoint's
        own preprocessing, or the preprocessing a previous run recorded), else 0.5, 0.5 and 1.0.
        ``preprocessing``, a run's recorded one, replaces all that for evaluating a finished run.
        """
        from pipelines.finetune import pretrained_normalization

        pretrained = pretrained_normalization(model) if model is not None and preprocessing is None else {}
        normalization = {key: pretrained.get(key, default) if getattr(data, key) is None else getattr(data, key)
                         for key, default in (("mean", (0.5,)), ("std", (0.5,)), ("crop_fraction", 1.0))}
        spec = cls.create(
            data.source, image_size=data.image_size, batch_size=data.batch_size, augment=data.augment,
            channels=data.channels, channel_order=pretrained.get("channel_order", "rgb"), **normalization, mix=data.mix,
            mix_alpha=data.mix_alpha, train_split=data.train_split, validation_split=data.validation_split,
            test_split=data.test_split, seed=seed, cache=data.cache, data_dir=data.data_dir,
            download=data.download, bad_files=data.bad_files, split_fractions=tuple(data.split_fractions),
            split_seed=data.split_seed)
        return spec if preprocessing is None else dataclasses.replace(spec, preprocessing=preprocessing)

    def evaluation(self, **changes) -> "DataSpec":
        """The same spec without augmentation or mixing (every split an evaluation pipeline)."""
        return dataclasses.replace(self, recipe=None, mix=None, **changes)

    def with_image_size(self, image_size: int) -> "DataSpec":
        """The same spec producing ``image_size`` inputs (ten-crop TTA's larger view)."""
        return dataclasses.replace(self, preprocessing=dataclasses.replace(self.preprocessing, image_size=image_size))


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset holds: class names, example count, the preprocessing serving must apply, skipped files."""

    source: str
    split: str
    class_names: tuple
    num_examples: int
    preprocessing: Preprocessing
    skipped: tuple = ()
    training: bool = False
    files: tuple = ()


def make_dataset(spec: DataSpec, split: str = "train", *, repeat: bool = False, shuffle: bool | None = None,
                 drop_remainder: bool | None = None) -> tuple[tf.data.Dataset, DatasetInfo]:
    """``(dataset, info)``: batches of ``(images, labels)`` of ``split`` as ``spec`` says.

    Training pipelines (``split == spec.train_split`` with a recipe) shuffle and drop
    the last partial batch unless told otherwise; evaluation pipelines do neither.
    ``repeat`` makes the dataset endless.
    """
    if not isinstance(spec, DataSpec):
        raise TypeError(f"make_dataset takes a DataSpec, got {type(spec).__name__}; build one with "
                        "DataSpec.create(source, image_size=..., batch_size=...) or use load_dataset(...)")
    pre = spec.preprocessing
    training = spec.recipe is not None and split == spec.train_split
    recipe = spec.recipe if training else None
    masks = spec.target == "mask"
    boxes = spec.target == "boxes"
    src = load_source(spec.source, split, data_dir=spec.data_dir, download=spec.download, bad_files=spec.bad_files,
                      split_fractions=spec.split_fractions, split_seed=spec.split_seed,
                      class_names=spec.class_names, masks=masks, boxes=boxes)
    seed = secrets.randbits(31) if spec.seed is None else int(spec.seed)
    dataset = _mask_pairs(src) if masks else _box_pairs(src) if boxes else src.dataset
    dataset = dataset.cache() if spec.cache else dataset
    if training if shuffle is None else shuffle:
        dataset = dataset.shuffle(min(spec.shuffle_buffer, max(src.num_examples, 1)), seed=seed,
                                  reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    # Same-size decoded images whose geometry vectorises skip the per-image map: whole batches are cheaper.
    image_shape = src.dataset.element_spec[0].shape
    per_batch = (not masks and not boxes and not src.encoded and image_shape.is_fully_defined()
                 and (recipe is None or aug.batched_geometry(recipe)))
    if not per_batch:
        if boxes:
            element = _box_element(src, pre, recipe, spec.max_boxes)
            dataset = _with_seeds(dataset, seed) if recipe is not None else dataset
        elif recipe is None:
            element = _evaluation_element(src, pre, spec.target)
        else:
            dataset = _with_seeds(dataset, seed)
            element = _training_mask_element(src, pre, recipe) if masks else _training_element(src, pre, recipe)
        dataset = dataset.map(element, num_parallel_calls=AUTOTUNE, deterministic=spec.deterministic)
    dataset = dataset.batch(batch_size=spec.batch_size,
                            drop_remainder=training if drop_remainder is None else drop_remainder,
                            num_parallel_calls=AUTOTUNE, deterministic=spec.deterministic)
    if recipe is None:
        if per_batch:
            dataset = dataset.map(lambda images, labels: (preprocess_images(images, pre), labels),
                                  num_parallel_calls=AUTOTUNE, deterministic=spec.deterministic)
    else:
        pca = _pca(recipe, spec.pca, src)
        batch_map = _training_batch(pre, recipe, pca, spec.mix, spec.mix_alpha, len(src.class_names), per_batch)
        # masks pass through the batch stage: its ops change the colour of the images alone
        dataset = _with_seeds(dataset, seed + 1).map(batch_map, num_parallel_calls=AUTOTUNE,
                                                     deterministic=spec.deterministic)
    class_names = src.mask_class_names if masks else src.class_names
    info = DatasetInfo(src.name, split, tuple(class_names), src.num_examples, pre, tuple(src.skipped), training,
                       tuple(src.files))
    return dataset.prefetch(AUTOTUNE), info


def load_dataset(source, split: str = "train", *, image_size: int, batch_size: int, augment=None,
                 repeat: bool = False, shuffle: bool | None = None, drop_remainder: bool | None = None,
                 **options) -> tuple[tf.data.Dataset, DatasetInfo]:
    """The one-line form: ``DataSpec.create(source, ...)`` then ``make_dataset``.

    With ``augment`` given, ``split`` is the one augmented (the spec's training split).
    """
    if augment is not None:
        options.setdefault("train_split", split)
    spec = DataSpec.create(source, image_size=image_size, batch_size=batch_size, augment=augment, **options)
    return make_dataset(spec, split, repeat=repeat, shuffle=shuffle, drop_remainder=drop_remainder)


def _mask_pairs(src: Source):
    """(image, mask) pairs for segmentation."""
    if src.masks is None:
        raise ValueError(f"target='mask' needs a source with per-pixel labels (scenes, shapes, folder:PATH with "
                         f"images/ and masks/, a TFDS data set with a segmentation_mask); {src.name} has none")
    return tf.data.Dataset.zip((src.dataset.map(lambda image, label: image), src.masks))


def _box_pairs(src: Source):
    """(image, (boxes, classes)) pairs for detection."""
    if src.boxes is None:
        raise ValueError(f"target='boxes' needs a source with object boxes (scenes, coco:ROOT, a TFDS data set "
                         f"with objects such as tfds:voc, or arrays with instances: pipelines.sources.from_arrays); "
                         f"{src.name} has none")
    return tf.data.Dataset.zip((src.dataset.map(lambda image, label: image), src.boxes))


def _box_element(src: Source, pre: Preprocessing, recipe, max_boxes: int):
    """One (image, (boxes, classes)), with its seed when training -> ``[S, S, C]`` and ``{"boxes", "classes"}``.

    Without a recipe (evaluation) the image is only stretched to the model's size, its boxes with it.
    Boxes beyond ``max_boxes`` are dropped (in the source's order).
    """
    size, channels = pre.image_size, pre.channels

    def apply(*element):
        (image, (boxes, classes)), seed = element if recipe is not None else (element, None)
        image = unit_images(decode_image(image) if src.encoded else image, channels)
        boxes, classes = tf.cast(boxes, tf.float32), tf.cast(classes, tf.int32)
        if recipe is None:
            image, boxes = aug.stretch_with_boxes(image, boxes, size)
        else:
            image, boxes, classes = aug.geometry_with_boxes(image, boxes, classes, tf.cast(seed, tf.int32), recipe,
                                                            pre)
        image = tf.ensure_shape(image, [size, size, channels])
        if recipe is None:  # the training batch stage normalises after its colour ops
            image = normalize(image, pre)
        return image, pad_boxes(boxes, classes, max_boxes)

    return apply


def pad_boxes(boxes, classes, max_boxes: int) -> dict:
    """Boxes ``[M, 4]`` and classes ``[M]`` -> exactly ``max_boxes`` of each, valid ones first, padding class -1."""
    order = tf.argsort(tf.cast(classes < 0, tf.int32), stable=True)  # valid boxes first, in their order
    boxes, classes = tf.gather(boxes, order)[:max_boxes], tf.gather(classes, order)[:max_boxes]
    extra = max_boxes - tf.shape(classes)[0]
    return {"boxes": tf.ensure_shape(tf.pad(boxes, [[0, extra], [0, 0]]), [max_boxes, 4]),
            "classes": tf.ensure_shape(tf.pad(classes, [[0, extra]], constant_values=-1), [max_boxes])}


def _with_seeds(dataset, seed: int):
    """Pair each element with its own ``[2]`` seed from a seeded random stream (new draws every epoch)."""
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip((dataset, seeds))


def _evaluation_element(src: Source, pre: Preprocessing, target: str):
    """One element -> normalised model input: the serving graph's own ``preprocess_encoded``/``preprocess_images``."""

    def apply(image, label):
        if target == "mask":
            if not src.encoded:
                image = _same_size(image, label)
            mask = resize_and_center_crop(label[tf.newaxis, ..., tf.newaxis], pre.image_size, pre.crop_fraction,
                                          method="nearest")
            label = tf.cast(mask[0, ..., 0], tf.int32)
        if src.encoded:
            return preprocess_encoded(image, pre), label
        return preprocess_images(image[tf.newaxis], pre)[0], label

    return apply


def _training_element(src: Source, pre: Preprocessing, recipe):
    """One (element, seed) -> float32 ``[size, size, C]`` in [0, 1] after the recipe's per-image geometry."""
    size, channels = pre.image_size, pre.channels
    direct_crop = recipe.crop == "resized_crop" and src.encoded and not recipe.randaugment

    def apply(element, seed):
        image, label = element
        seed = tf.cast(seed, tf.int32)
        if direct_crop:  # JPEGs decode only the crop window
            s_crop, s_flip = aug.split_seed(seed, 2)
            image = aug.decode_random_resized_crop(image, s_crop, size, channels, recipe.scale, recipe.ratio)
            image = aug.flip_one(image, s_flip) if recipe.flip else image
        else:
            image = aug.train_geometry(unit_images(decode_image(image) if src.encoded else image, channels),
                                       seed, recipe, pre)
        return tf.ensure_shape(image, [size, size, channels]), label

    return apply


def _training_mask_element(src: Source, pre: Preprocessing, recipe):
    """One ((image, mask), seed) -> float32 ``[size, size, C]`` in [0, 1] and int32 ``[size, size]``, moved together."""
    size, channels = pre.image_size, pre.channels

    def apply(element, seed):
        image, mask = element
        image = _same_size(unit_images(decode_image(image) if src.encoded else image, channels), mask)
        image, mask = aug.joint_geometry(image, mask, tf.cast(seed, tf.int32), recipe, pre)
        return tf.ensure_shape(image, [size, size, channels]), tf.ensure_shape(mask, [size, size])

    return apply


def _same_size(image, mask):
    """``image``, once checked to have its mask's height and width (a clear error instead of a misaligned pair)."""
    check = tf.debugging.assert_equal(tf.shape(image)[:2], tf.shape(mask)[:2],
                                      message="an image and its mask differ in size")
    with tf.control_dependencies([check]):
        return tf.identity(image)


def _pca(recipe, pca, src: Source):
    """The training set's RGB principal components when the recipe uses PCA lighting."""
    if not recipe.pca_std:
        return None
    return pca if pca is not None else aug.rgb_principal_components(sample_images(src))


def _training_batch(pre: Preprocessing, recipe, pca, mix, mix_alpha, num_classes: int, geometry: bool):
    """Batch stage: geometry too when ``geometry`` (same-size sources), then batch ops, normalisation, mixing."""

    def apply(batch, seed):
        images, labels = batch
        seed = tf.cast(seed, tf.int32)
        s_geometry, s_ops, s_mix = aug.split_seed(seed, 3)
        if geometry:
            images = aug.train_batch_geometry(unit_images(images, pre.channels), s_geometry, recipe, pre)
        images = normalize(aug.train_batch_ops(images, s_ops, recipe, pca), pre)
        if mix:
            one_hot = tf.one_hot(labels, num_classes)
            alpha = mix_alpha if mix_alpha is not None else aug.MIX_DEFAULT_ALPHA[mix]
            images, labels = aug.MIX_FUNCTIONS[mix](images, one_hot, s_mix, alpha)
        return images, labels

    return apply


__all__ = ["DataSpec", "DatasetInfo", "SPLITS", "load_dataset", "make_dataset"]
