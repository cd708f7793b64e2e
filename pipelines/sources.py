"""Data sources: where images and labels come from, before any preprocessing.

``load_source(spec, split, ...)`` returns a :class:`Source`: a ``tf.data.Dataset``
of ``(image, label)`` elements, where an image is either a decoded uint8
``[H, W, C]`` tensor or the encoded bytes of a file, plus the class names and the
number of examples. Specs: ``digits``, ``shapes``, ``scenes``, ``tfds:NAME``,
``folder:PATH``, ``tfrecord:GLOB``, or a ``(images, labels)`` pair of numpy arrays.

Sources with per-pixel labels (semantic segmentation) also give ``Source.masks``, a
dataset of uint8 class-index masks ``[H, W]`` in step with ``dataset`` (255 marks pixels
to ignore, the VOC convention), and ``Source.mask_class_names``, background first:
``shapes`` and ``scenes`` (several shapes per image); ``folder:PATH`` laid out as
``PATH/images/NAME.jpg`` beside ``PATH/masks/NAME.png``
(:func:`pipelines.mask_folder.segmentation_folder`);
``tfds:NAME`` data sets with a ``segmentation_mask`` feature, when asked with
``masks=True``.

Sources with object boxes (detection) also give ``Source.boxes``: ``scenes``, ``coco:ROOT``
(COCO's layout: ``ROOT/annotations/instances_<split>.json`` and the image folder, see
``pipelines.coco``), and ``tfds:NAME`` data sets with an ``objects`` feature holding ``bbox`` and
``label`` (``voc``, ``coco``) when asked with ``boxes=True``.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from pipelines import fs, shapes
from pipelines.choices import BAD_FILE_POLICIES, SPLITS
from pipelines.preprocess import decode_image, match_channels
from pipelines.run_dir import atomic_write

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")  # what TensorFlow's decode_image reads
# Image files TensorFlow cannot decode: named (an error, or listed as skipped), never silently left out.
UNSUPPORTED_EXTENSIONS = (".tif", ".tiff", ".heic", ".heif", ".avif", ".jp2", ".jxl", ".psd", ".ico", ".svg")
# A folder without train/validation/test subfolders is split by class, deterministically, in these shares.
FOLDER_SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
FEATURE_IMAGE = "image/encoded"
FEATURE_LABEL = "image/class/label"
FEATURE_TEXT = "image/class/text"
CLASS_NAMES_FILE = "class_names.txt"
SOURCE_KINDS = ("digits", "shapes", "scenes", "tfds:NAME", "folder:PATH", "coco:ROOT", "tfrecord:GLOB",
                "(images, labels) numpy arrays")
IGNORE = 255  # the mask value of pixels without a class (the VOC convention)
TFDS_MASK = "segmentation_mask"
DECODE_ERRORS = (tf.errors.InvalidArgumentError, tf.errors.UnknownError, tf.errors.DataLossError)


class DatasetNotPrepared(FileNotFoundError):
    """A TFDS data set is not in ``data_dir`` and downloading was not asked for."""


class BadImageFile(ValueError):
    """A file in a folder source cannot be decoded (raised with ``bad_files="error"``)."""


@dataclass
class Source:
    """Images and labels before preprocessing.

    ``encoded`` tells whether ``dataset`` yields encoded file bytes (decoded later,
    possibly only the crop window) or decoded uint8 images. ``masks`` is set for
    sources with per-pixel labels: uint8 ``[H, W]`` class indices (255 = ignore), one per
    element of ``dataset`` and in the same order, named by ``mask_class_names``
    (background first). ``boxes`` is set for sources with object boxes (detection): per
    element, float32 ``[M, 4]`` boxes ``(ymin, xmin, ymax, xmax)`` in pixels and int32 ``[M]``
    class indices into ``class_names``, padded with class -1 (to the source's largest count, or per
    element for TFDS). ``skipped`` lists files left out under ``bad_files="skip"``;
    ``files`` the files of this split, for folder sources.
    """

    name: str
    dataset: tf.data.Dataset
    class_names: list
    num_examples: int
    encoded: bool
    masks: tf.data.Dataset | None = None
    skipped: tuple = ()
    files: tuple = ()
    mask_class_names: tuple | None = None
    boxes: tf.data.Dataset | None = None


def load_source(spec, split: str = "train", *, data_dir: str | None = None, download: bool = False,
                bad_files: str = "error", class_names=None, split_fractions=FOLDER_SPLIT_FRACTIONS,
                split_seed: int = 0, masks: bool = False, boxes: bool = False) -> Source:
    """Resolve a source spec (see the module docstring) and one of its splits.

    ``masks=True`` asks a TFDS data set for its segmentation masks as well (a pass over the
    split's masks counts the classes); every other source with masks always gives them.
    ``boxes=True`` asks a TFDS data set for its objects' boxes, which then name the classes.
    """
    if isinstance(spec, (tuple, list)) and len(spec) == 2:
        return from_arrays(*spec, class_names=class_names)
    if not isinstance(spec, str):
        raise ValueError(f"source must be one of {', '.join(SOURCE_KINDS)}, got {type(spec).__name__}")
    kind, _, argument = spec.partition(":")
    if kind == "digits" and not argument:
        return digits(split)
    if kind == "shapes" and not argument:
        return shapes_source(split)
    if kind == "scenes" and not argument:
        return scenes_source(split)
    if kind == "tfds" and argument:
        if boxes:
            return tfds_objects_source(argument, split, data_dir=data_dir, download=download)
        return tfds_source(argument, split, data_dir=data_dir, download=download, masks=masks)
    if kind == "coco" and argument:
        check_split(split)
        return coco_source(argument, split)
    if kind == "folder" and argument:
        from pipelines import mask_folder

        split_root = os.path.join(argument, split) if has_split_dirs(argument) else None
        if mask_folder.is_segmentation_folder(split_root or argument):
            return mask_folder.segmentation_folder(argument, split, bad_files=bad_files, fractions=split_fractions,
                                                   seed=split_seed)
        if split_root:
            return folder(split_root, bad_files=bad_files)
        return folder(argument, bad_files=bad_files, split=split, fractions=split_fractions, seed=split_seed)
    if kind == "tfrecord" and argument:
        return tfrecords(argument.replace("{split}", split), class_names=class_names)
    raise ValueError(f"unknown source {spec!r}; valid sources: {', '.join(SOURCE_KINDS)}")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")


def from_arrays(images, labels, *, class_names=None, name: str = "arrays", masks=None,
                mask_class_names=None, instances=None) -> Source:
    """In-memory uint8 images ``[N, H, W, C]`` (or ``[N, H, W]``) and integer labels ``[N]``.

    ``masks``, uint8 ``[N, H, W]`` class indices (255 = ignore), are named by ``mask_class_names``,
    else ``"0"`` to ``"K-1"`` up to the largest value below 255. ``instances[i]`` lists image ``i``'s
    objects as ``(class, (ymin, xmin, ymax, xmax))`` in pixels (``shapes.make_scenes``' form).
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(f"images must be [N, height, width, channels] with 1, 3 or 4 channels, got {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 pixels in [0, 255], got {images.dtype}; convert with "
                         "np.clip(x * 255, 0, 255).astype(np.uint8) if they are floats in [0, 1]")
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be {len(images)} integers, one per image, got shape {labels.shape} "
                         f"and dtype {labels.dtype}")
    count = int(labels.max()) + 1 if len(labels) else 0
    class_names = list(class_names) if class_names is not None else [str(i) for i in range(count)]
    if count > len(class_names):
        raise ValueError(f"labels go up to {count - 1} but only {len(class_names)} class names were given")
    dataset = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int32)))
    mask_ds = None
    if masks is not None:
        masks = np.asarray(masks)
        if masks.shape != images.shape[:3] or masks.dtype != np.uint8:
            raise ValueError(f"masks must be uint8 [N, height, width] = {images.shape[:3]} like the images, got "
                             f"{masks.shape} {masks.dtype}")
        mask_ds = tf.data.Dataset.from_tensor_slices(masks)
        if mask_class_names is None:
            mask_class_names = numbered(int(masks[masks != IGNORE].max(initial=0)))
        mask_class_names = tuple(mask_class_names)
    box_ds = None
    if instances is not None:
        if len(instances) != len(images):
            raise ValueError(f"instances must list the objects of each of the {len(images)} images, got "
                             f"{len(instances)} lists")
        boxes, box_classes = pad_instances(instances, len(class_names), images.shape[1:3])
        box_ds = tf.data.Dataset.from_tensor_slices((boxes, box_classes))
    return Source(name, dataset, class_names, len(images), encoded=False, masks=mask_ds,
                  mask_class_names=mask_class_names, boxes=box_ds)


def pad_instances(instances, num_classes: int, image_shape=None) -> tuple[np.ndarray, np.ndarray]:
    """Per-image object lists -> boxes float32 ``[N, M, 4]`` and classes int32 ``[N, M]`` (padding: class -1).

    Refuses boxes that are empty, inverted or outside the image, and classes outside
    ``[0, num_classes)``, naming the image and the object.
    """
    most = max((len(objects) for objects in instances), default=0)
    boxes = np.zeros((len(instances), max(most, 1), 4), np.float32)
    classes = np.full((len(instances), max(most, 1)), -1, np.int32)
    for i, objects in enumerate(instances):
        for j, (label, box) in enumerate(objects):
            ymin, xmin, ymax, xmax = (float(v) for v in box)
            inside = image_shape is None or (ymin >= 0 and xmin >= 0 and ymax <= image_shape[0]
                                             and xmax <= image_shape[1])
            if not (ymax > ymin and xmax > xmin and inside):
                raise ValueError(f"image {i}, object {j}: box {tuple(box)} must be (ymin, xmin, ymax, xmax) pixels "
                                 f"with ymin < ymax and xmin < xmax inside the image {tuple(image_shape or ())}")
            if not 0 <= int(label) < num_classes:
                raise ValueError(f"image {i}, object {j}: class {label} is not in [0, {num_classes})")
            boxes[i, j], classes[i, j] = (ymin, xmin, ymax, xmax), int(label)
    return boxes, classes


def numbered(top: int) -> tuple:
    """Class names "0" .. str(top)."""
    return tuple(str(i) for i in range(top + 1))


def digits_indices(split: str) -> np.ndarray:
    """Indices into scikit-learn's 1,797 digits of one split: 70% train, 10% validation, 20% test,
    stratified by class with a fixed seed, so every run and every machine sees the same split."""
    check_split(split)
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    target = load_digits().target
    index = np.arange(len(target))
    rest, test = train_test_split(index, test_size=0.2, stratify=target, random_state=0)
    train, validation = train_test_split(rest, test_size=0.125, stratify=target[rest], random_state=0)
    return {"train": train, "validation": validation, "test": test}[split]


def digits_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 handwritten digits of one split (:func:`digits_indices`) as uint8."""
    from sklearn.datasets import load_digits

    data = load_digits()
    chosen = digits_indices(split)
    images = np.round(data.images[chosen] * (255.0 / 16.0)).astype(np.uint8)[..., np.newaxis]
    return images, data.target[chosen].astype(np.int32)


def digits(split: str) -> Source:
    images, labels = digits_arrays(split)
    return from_arrays(images, labels, class_names=[str(i) for i in range(10)], name="digits")


def shapes_source(split: str) -> Source:
    images, labels, masks = shapes.load_split(split)
    return from_arrays(images, labels, class_names=list(shapes.CLASS_NAMES), name="shapes", masks=masks,
                       mask_class_names=shapes.MASK_CLASS_NAMES)


def scenes_source(split: str) -> Source:
    """Several shapes per image (``shapes.load_scenes``); the label is the class covering the most pixels."""
    images, masks, instances = shapes.load_scenes(split)
    return from_arrays(images, shapes.scene_labels(masks), class_names=list(shapes.CLASS_NAMES), name="scenes",
                       masks=masks, mask_class_names=shapes.MASK_CLASS_NAMES, instances=instances)


def tfds_directory(data_dir: str | None) -> str:
    return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets"))


def tfds_source(name: str, split: str, *, data_dir: str | None, download: bool, masks: bool = False) -> Source:
    """A TensorFlow Datasets data set, read as (image, label) pairs; nothing is downloaded unless asked.

    With ``masks`` and a ``segmentation_mask`` feature (oxford_iiit_pet), ``Source.masks`` holds it with
    the channel squeezed and its values as stored (the pets' trimaps: 1 pet, 2 background, 3 border),
    named by the feature's class names if it has them, else "0" up to the largest value in the split.
    """
    directory = tfds_directory(data_dir)
    dataset, info = _tfds_load(name, split, directory, download, as_supervised=True, with_info=True)
    label = info.features["label"]
    dataset = dataset.map(lambda image, y: (image, tf.cast(y, tf.int32)))
    count = _split_count(info, split, dataset)
    mask_ds, mask_names = _tfds_masks(name, split, directory, info) if masks else (None, None)
    return Source(f"tfds:{name}", dataset, list(label.names), count, encoded=False, masks=mask_ds,
                  mask_class_names=mask_names)


def tfds_objects_source(name: str, split: str, *, data_dir: str | None, download: bool) -> Source:
    """A TFDS detection data set (``voc``, ``coco``): images and ``objects`` boxes, named by ``objects/label``.

    Boxes come in TFDS' ``BBoxFeature`` form (``ymin, xmin, ymax, xmax`` in [0, 1]) and are scaled to
    the image's pixels; objects marked ``is_crowd`` (COCO) or ``is_difficult`` (VOC) are left out of the
    targets, as detectors' training recipes do. Each image's label is its first object's class. The
    boxes' pass reads the images' sizes from their headers without decoding them.
    """
    import tensorflow_datasets as tfds

    from pipelines.image_header import image_dimensions

    directory = tfds_directory(data_dir)
    info = _tfds_builder(name, directory).info
    features = info.features
    objects = features["objects"] if "objects" in features.keys() else None
    if objects is None or not {"bbox", "label"} <= set(getattr(objects, "keys", lambda: ())()):
        raise ValueError(f"tfds:{name} has no object boxes (an 'objects' feature with 'bbox' and 'label'); "
                         "detection takes voc, coco or another data set that has them")
    dataset = _tfds_load(name, split, directory, download)
    undecoded = _tfds_load(name, split, directory, download, decoders={"image": tfds.decode.SkipDecoding()})
    names = list(objects["label"].names)

    def targets(example):
        found, image = example["objects"], example["image"]
        keep = tf.ones_like(found["label"], tf.bool)
        for flag in ("is_crowd", "is_difficult"):
            if flag in found:
                keep &= ~tf.cast(found[flag], tf.bool)
        size = image_dimensions(image) if image.dtype == tf.string else tf.shape(image)[:2]
        shape = tf.cast(size, tf.float32)
        boxes = tf.boolean_mask(tf.cast(found["bbox"], tf.float32), keep) * tf.tile(shape, [2])
        return boxes, tf.cast(tf.boolean_mask(found["label"], keep), tf.int32)

    def pair(example):
        labels = tf.cast(example["objects"]["label"], tf.int32)
        return example["image"], tf.cond(tf.size(labels) > 0, lambda: labels[0], lambda: tf.constant(-1))

    count = _split_count(info, split, dataset)
    return Source(f"tfds:{name}", dataset.map(pair), names, count, encoded=False, boxes=undecoded.map(targets))


def _tfds_builder(name: str, directory: str):
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(name, data_dir=directory)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(f"TFDS has no data set named {name!r}; see `tfds.list_builders()` for the names") from None


def _tfds_load(name: str, split: str, directory: str, download: bool, **options):
    """``tfds.load`` in the files' order, with clear errors: no such data set, not prepared, no such split."""
    import tensorflow_datasets as tfds

    try:
        return tfds.load(name, split=split, data_dir=directory, download=download, shuffle_files=False, **options)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(f"TFDS has no data set named {name!r}; see `tfds.list_builders()` for the names") from None
    except AssertionError as error:
        if "could not find data" not in str(error):
            raise
        raise DatasetNotPrepared(
            f"TFDS data set {name!r} is not prepared in {directory}. Prepare it once with "
            f"`tfds build {name} --data_dir {directory}` (or pass download=True), then run again") from None
    except ValueError as error:
        if "split" not in str(error).lower():
            raise
        raise ValueError(f"{name} has no split {split!r}; its splits: {', '.join(info_splits(name, directory))}") \
            from None


def _split_count(info, split: str, dataset) -> int:
    try:
        return int(info.splits[split].num_examples)
    except KeyError:  # split metadata missing (TFDS mock data): count the examples
        return int(dataset.reduce(0, lambda n, _: n + 1))


def coco_source(root: str, split: str) -> Source:
    """``coco:ROOT``: images of COCO's layout as encoded files, with their boxes (``pipelines.coco``)."""
    from pipelines import coco

    path, image_dir = coco.instances_file(root, split)
    arrays = coco.instances_arrays(coco.read_instances(path), path)
    files = [os.path.join(image_dir, name) for name in arrays["files"]]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(f"{path} lists {len(missing)} images that are not in {image_dir}, for example "
                                f"{missing[0]}; copy them there or remove them from the JSON")
    first = arrays["classes"][:, 0]  # each image's label: its first object's class (-1 for none)
    dataset = tf.data.Dataset.from_tensor_slices((files, first)).map(
        lambda file, label: (tf.io.read_file(file), label))
    boxes = tf.data.Dataset.from_tensor_slices((arrays["boxes"], arrays["classes"]))
    return Source(f"coco:{root}", dataset, arrays["class_names"], len(files), encoded=True, boxes=boxes,
                  files=tuple(files))


def _tfds_masks(name: str, split: str, directory: str, info):
    """The split's segmentation masks ``[H, W]`` in the data set's order (only that feature decoded), and names."""
    import tensorflow_datasets as tfds

    if TFDS_MASK not in info.features:
        return None, None
    dataset = tfds.load(name, split=split, data_dir=directory, download=False, shuffle_files=False,
                        decoders=tfds.decode.PartialDecoding({TFDS_MASK: True}))
    feature = info.features[TFDS_MASK]
    channel = len(feature.shape) == 3  # an Image feature [H, W, 1]; a plain tensor may be [H, W]
    masks = dataset.map(lambda example: example[TFDS_MASK][..., 0] if channel else example[TFDS_MASK])
    names = getattr(feature, "names", None)
    if not names:
        top = masks.map(lambda mask: tf.reduce_max(tf.where(mask == IGNORE, 0, tf.cast(mask, tf.int32))))
        names = numbered(int(top.reduce(tf.constant(0), tf.maximum)))
    return masks, tuple(names)


def info_splits(name: str, data_dir: str) -> list:
    import tensorflow_datasets as tfds

    return sorted(tfds.builder(name, data_dir=data_dir).info.splits)


def has_split_dirs(root: str) -> bool:
    return all(fs.isdir(os.path.join(root, s)) for s in ("train", "test"))


def folder(root: str, *, bad_files: str = "error", workers: int = 8, split: str | None = None,
           fractions=FOLDER_SPLIT_FRACTIONS, seed: int = 0) -> Source:
    """One subdirectory per class (sorted names) of JPEG, PNG, BMP, GIF or WebP files.

    ``load_source`` picks ``root/<split>`` when ``root`` has ``train/`` and ``test/`` subdirectories.
    Otherwise ``split`` takes its share of every class (``fractions`` of train, validation and test,
    by :func:`split_indices`), so no file is in two splits; ``split=None`` takes every file. Every
    file is decoded once up front: with ``bad_files="error"`` an undecodable or truncated file, or an
    image format TensorFlow cannot read (TIFF, HEIC...), raises :class:`BadImageFile` naming it; with
    ``"skip"`` it is left out, logged, and listed in ``Source.skipped``.
    """
    if bad_files not in BAD_FILE_POLICIES:
        raise ValueError(f"bad_files must be one of {', '.join(BAD_FILE_POLICIES)}, got {bad_files!r}")
    if split is not None:
        check_split(split)
    if not fs.isdir(root):
        raise FileNotFoundError(f"folder source {root!r} does not exist or is not a directory")
    class_names = [d for d in fs.listdir(root) if fs.isdir(os.path.join(root, d))]
    if not class_names:
        raise ValueError(f"folder source {root!r} has no class subdirectories; expected ROOT/CLASS_NAME/IMAGE files")
    paths, labels, unsupported = [], [], []
    for label, name in enumerate(class_names):
        for dirpath, _, files in sorted(fs.walk(os.path.join(root, name))):
            for file in sorted(files):
                if file.lower().endswith(IMAGE_EXTENSIONS):
                    paths.append(os.path.join(dirpath, file))
                    labels.append(label)
                elif file.lower().endswith(UNSUPPORTED_EXTENSIONS):
                    unsupported.append((os.path.join(dirpath, file), "a format TensorFlow cannot decode; convert "
                                        "it to PNG or JPEG (e.g. with Pillow)"))
    if not paths:
        raise ValueError(f"folder source {root!r} has no image files ({', '.join(IMAGE_EXTENSIONS)})")
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        problems = list(pool.map(_decode_problem, paths))
    bad = unsupported + [(p, problem) for p, problem in zip(paths, problems) if problem]
    if bad and bad_files == "error":
        listing = "; ".join(f"{p}: {problem}" for p, problem in bad[:5])
        raise BadImageFile(f"{len(bad)} file(s) in {root} cannot be decoded: {listing}. Fix or remove them, "
                           "or pass bad_files='skip' (config: data.bad_files=skip) to leave them out")
    if bad:
        log.warning("skipped %d file(s) in %s: %s", len(bad), root, ", ".join(p for p, _ in bad))
    keep = [i for i, problem in enumerate(problems) if not problem]
    if split is not None:
        chosen = set(split_indices(np.asarray(labels)[keep], fractions, seed)[split].tolist())
        if split == "train":
            log.info("%s has no train/validation/test subfolders: split its %d files by class in shares %s "
                     "(seed %d)", root, len(keep), "/".join(f"{f:g}" for f in fractions), seed)
        keep = [index for position, index in enumerate(keep) if position in chosen]
    paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
    dataset = tf.data.Dataset.from_tensor_slices((paths, np.asarray(labels, np.int32)))
    dataset = dataset.map(lambda path, y: (tf.io.read_file(path), y), num_parallel_calls=tf.data.AUTOTUNE)
    return Source(f"folder:{root}", dataset, class_names, len(paths), encoded=True,
                  skipped=tuple(p for p, _ in bad), files=tuple(paths))


def split_indices(labels, fractions=FOLDER_SPLIT_FRACTIONS, seed: int = 0) -> dict:
    """Indices of each split: every class shuffled with ``seed`` and cut in ``fractions`` (train,
    validation, test), so the splits are disjoint, stratified, and the same on every run and machine.

    Each split gets at least one example of a class that has at least three.
    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6 or fractions[0] == 0:
        raise ValueError(f"split fractions must be three shares (train, validation, test) >= 0 summing to 1 "
                         f"with train > 0, e.g. (0.8, 0.1, 0.1); got {fractions}")
    labels = np.asarray(labels)
    parts = {name: [] for name in SPLITS}
    rng = np.random.default_rng(seed)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = len(members)
        validation = round(fractions[1] * count)
        test = round(fractions[2] * count)
        if count >= 3:
            validation, test = max(validation, 1 if fractions[1] else 0), max(test, 1 if fractions[2] else 0)
        train = count - validation - test
        parts["train"].append(members[:train])
        parts["validation"].append(members[train:train + validation])
        parts["test"].append(members[train + validation:])
    return {name: np.sort(np.concatenate(chunks)) if chunks else np.array([], int) for name, chunks in parts.items()}


def _decode_problem(path: str) -> str | None:
    """None when TensorFlow decodes the file completely, else the decoder's complaint."""
    try:
        decode_image(tf.io.read_file(path))
        return None
    except DECODE_ERRORS as error:
        return error.message.splitlines()[0][:200]


def tfrecords(pattern: str, *, class_names=None) -> Source:
    """Sharded ``tf.Example`` records with ``image/encoded`` and ``image/class/label``, read with interleave.

    Class names come from ``class_names``, else a ``class_names.txt`` beside the
    shards (as ``write_tfrecords`` leaves), else the label numbers.
    """
    files = fs.glob(pattern)  # gs://bucket/shards-* too
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {pattern!r}")
    if class_names is None:
        names_file = os.path.join(os.path.dirname(files[0]), CLASS_NAMES_FILE)
        if fs.exists(names_file):
            class_names = [line for line in fs.read_text(names_file).splitlines() if line.strip()]
    count = sum(1 for _ in tf.data.TFRecordDataset(files))
    description = {FEATURE_IMAGE: tf.io.FixedLenFeature([], tf.string),
                   FEATURE_LABEL: tf.io.FixedLenFeature([], tf.int64)}

    def parse(record):
        example = tf.io.parse_single_example(record, description)
        return example[FEATURE_IMAGE], tf.cast(example[FEATURE_LABEL], tf.int32)

    dataset = tf.data.Dataset.from_tensor_slices(files).interleave(
        tf.data.TFRecordDataset, cycle_length=min(len(files), 8), num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True)
    dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    if class_names is None:
        top = max(int(y) for _, y in dataset)
        class_names = [str(i) for i in range(top + 1)]
    return Source(f"tfrecord:{pattern}", dataset, list(class_names), count, encoded=True)


def write_tfrecords(source: Source, directory: str, split: str, *, shards: int = 4) -> list[str]:
    """Write any source to ``directory/{split}-0000i-of-0000n.tfrecord`` shards plus ``class_names.txt``.

    Decoded images are stored as PNG (lossless); encoded files pass through as they are.
    """
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    fs.makedirs(directory)
    paths = [os.path.join(directory, f"{split}-{i:05d}-of-{shards:05d}.tfrecord") for i in range(shards)]
    writers = [tf.io.TFRecordWriter(p) for p in paths]
    try:
        for index, (image, label) in enumerate(source.dataset):
            encoded = image.numpy() if source.encoded else tf.io.encode_png(image).numpy()
            label = int(label)
            feature = {
                FEATURE_IMAGE: _bytes_feature(encoded),
                FEATURE_LABEL: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                FEATURE_TEXT: _bytes_feature(source.class_names[label].encode()),
            }
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writers[index % shards].write(example.SerializeToString())
    finally:
        for writer in writers:
            writer.close()
    atomic_write(os.path.join(directory, CLASS_NAMES_FILE), "".join(f"{name}\n" for name in source.class_names))
    return paths


def _bytes_feature(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def sample_images(source: Source, count: int = 512, size: int = 64) -> np.ndarray:
    """Up to ``count`` images of the source, decoded and resized to ``size``, as uint8 (for PCA statistics)."""

    def prepare(image, _):
        if source.encoded:
            image = decode_image(image)
        return tf.cast(tf.image.resize(match_channels(image, 3), [size, size]), tf.uint8)

    batch = source.dataset.take(count).map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(count)
    return next(iter(batch)).numpy()
