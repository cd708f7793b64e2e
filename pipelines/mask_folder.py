"""The segmentation folder layout: images in ``images/``, class-index PNG masks in ``masks/``.

``PATH/images/NAME.jpg`` (any format TensorFlow decodes) pairs with ``PATH/masks/NAME.png``, a
single-channel 8-bit PNG of class indices where 255 marks pixels to ignore (the VOC convention;
palette PNGs such as VOC's own read as their indices). ``load_source("folder:PATH")`` picks this
layout over the class-subfolder one when both ``images/`` and ``masks/`` are there.
"""

from __future__ import annotations

import concurrent.futures
import io
import logging
import os

import numpy as np
import tensorflow as tf

from pipelines import fs
from pipelines.choices import BAD_FILE_POLICIES
from pipelines.preprocess import decode_image
from pipelines.sources import (CLASS_NAMES_FILE, DECODE_ERRORS, FOLDER_SPLIT_FRACTIONS, IGNORE, IMAGE_EXTENSIONS,
                               UNSUPPORTED_EXTENSIONS, BadImageFile, Source, check_split, has_split_dirs, numbered,
                               split_indices)

log = logging.getLogger(__name__)

IMAGES_DIR, MASKS_DIR = "images", "masks"
MASK_MODES = ("L", "P", "1")  # PIL modes of single-channel 8-bit PNGs: grey, palette (VOC's own files), bilevel


def is_segmentation_folder(root: str) -> bool:
    """True when ``root`` has both ``images/`` and ``masks/`` folders (the segmentation layout)."""
    return all(fs.isdir(os.path.join(root, d)) for d in (IMAGES_DIR, MASKS_DIR))


def segmentation_folder(root: str, split: str = "train", *, bad_files: str = "error", workers: int = 8,
                        fractions=FOLDER_SPLIT_FRACTIONS, seed: int = 0) -> Source:
    """Images in ``root/images/`` and their class-index masks ``root/masks/<same name>.png``.

    With ``root/train/`` and ``root/test/`` (and ``validation/``) each holding ``images/`` and
    ``masks/``, the split is that folder; otherwise ``split`` takes its ``fractions`` share of the
    files (:func:`split_indices`, ``seed``). A mask is a single-channel 8-bit PNG (grey, or a palette
    PNG like VOC's, read as its indices) of the image's size; 255 marks pixels to ignore. Class names
    come from ``root/class_names.txt`` (one a line, index 0, the background, first), else "0" up to
    the largest mask value below 255 in the split. Every pair is checked up front: an image without
    a mask, a mask of another size than its image, a mask with colour channels or an undecodable
    file raises :class:`BadImageFile` naming the file, or with ``bad_files="skip"`` is left out and
    listed in ``Source.skipped``. The label of each element is the class other than 0 that covers
    the most of its mask (0 when there is none).
    """
    if bad_files not in BAD_FILE_POLICIES:
        raise ValueError(f"bad_files must be one of {', '.join(BAD_FILE_POLICIES)}, got {bad_files!r}")
    check_split(split)
    fixed = has_split_dirs(root)
    directory = os.path.join(root, split) if fixed else root
    if not is_segmentation_folder(directory):
        raise FileNotFoundError(f"segmentation folder {directory!r} needs both {IMAGES_DIR}/ and {MASKS_DIR}/")
    images_dir, masks_dir = os.path.join(directory, IMAGES_DIR), os.path.join(directory, MASKS_DIR)
    paths, bad = [], []
    for file in fs.listdir(images_dir):
        path = os.path.join(images_dir, file)
        if file.lower().endswith(IMAGE_EXTENSIONS):
            paths.append(path)
        elif file.lower().endswith(UNSUPPORTED_EXTENSIONS):
            bad.append((path, "a format TensorFlow cannot decode; convert it to PNG or JPEG (e.g. with Pillow)"))
    if not paths:
        raise ValueError(f"segmentation folder {images_dir!r} has no image files ({', '.join(IMAGE_EXTENSIONS)})")
    mask_paths = [os.path.join(masks_dir, os.path.splitext(os.path.basename(p))[0] + ".png") for p in paths]
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        checks = list(pool.map(_check_pair, paths, mask_paths))
    bad += [(path, problem) for path, (problem, _, _) in zip(paths, checks) if problem]
    if bad and bad_files == "error":
        listing = "; ".join(f"{p}: {problem}" for p, problem in bad[:5])
        raise BadImageFile(f"{len(bad)} image(s) in {directory} cannot be used: {listing}. Fix or remove them, "
                           "or pass bad_files='skip' (config: data.bad_files=skip) to leave them out")
    if bad:
        log.warning("skipped %d file(s) in %s: %s", len(bad), directory, ", ".join(p for p, _ in bad))
    keep = [i for i, (problem, _, _) in enumerate(checks) if not problem]
    if not fixed:
        chosen = set(split_indices(np.zeros(len(keep), int), fractions, seed)[split].tolist())
        if split == "train":
            log.info("%s has no train/validation/test subfolders: split its %d image-mask pairs in shares %s "
                     "(seed %d)", root, len(keep), "/".join(f"{f:g}" for f in fractions), seed)
        keep = [index for position, index in enumerate(keep) if position in chosen]
    tops = [checks[i][1] for i in keep]
    class_names = _mask_class_names(root, directory, tops, [mask_paths[i] for i in keep])
    labels = np.asarray([checks[i][2] for i in keep], np.int32)
    paths, mask_paths = [paths[i] for i in keep], [mask_paths[i] for i in keep]
    dataset = tf.data.Dataset.from_tensor_slices((paths, labels))
    dataset = dataset.map(lambda path, y: (tf.io.read_file(path), y), num_parallel_calls=tf.data.AUTOTUNE)
    masks = tf.data.Dataset.from_tensor_slices(mask_paths).map(_mask_file, num_parallel_calls=tf.data.AUTOTUNE)
    return Source(f"folder:{root}", dataset, list(class_names), len(paths), encoded=True, masks=masks,
                  skipped=tuple(p for p, _ in bad), files=tuple(paths), mask_class_names=class_names)


def _check_pair(image_path: str, mask_path: str) -> tuple:
    """``(problem, largest mask value below 255, label)``; ``problem`` None for a usable pair."""
    if not fs.exists(mask_path):
        return f"has no mask (expected {mask_path})", 0, 0
    try:
        height, width = decode_image(tf.io.read_file(image_path)).shape[:2]
    except DECODE_ERRORS as error:
        return error.message.splitlines()[0][:200], 0, 0
    try:
        mask = read_mask(mask_path)
    except ValueError as error:
        return str(error), 0, 0
    if mask.shape != (height, width):
        return f"its mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} pixels, the image {width}x{height}", 0, 0
    counts = np.bincount(mask.ravel(), minlength=256)
    classes = counts[1:IGNORE]
    label = int(classes.argmax()) + 1 if classes.any() else 0
    return None, int(np.flatnonzero(counts[:IGNORE]).max(initial=0)), label


def read_mask(path: str) -> np.ndarray:
    """A single-channel 8-bit PNG as its uint8 values ``[H, W]`` (a palette PNG gives its indices)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(fs.read_bytes(path))) as image:
            mode = image.mode
            if mode not in MASK_MODES:
                bands = len(image.getbands())
                kind = f"{bands} channels" if bands > 1 else "more than 8 bits"
                raise ValueError(f"mask {path} has {kind} (PIL mode {mode}); a mask must be a single-channel "
                                 "8-bit PNG of class indices (grey, or a palette PNG like VOC's)")
            return np.asarray(image, np.uint8)
    except (OSError, UnidentifiedImageError) as error:
        raise ValueError(f"mask {path} cannot be read: {error}") from None


def _mask_file(path):
    mask = tf.numpy_function(lambda p: read_mask(p.decode()), [path], tf.uint8, stateful=False)
    mask.set_shape([None, None])
    return mask


def _mask_class_names(root: str, directory: str, tops, mask_paths) -> tuple:
    """Names from class_names.txt (in ``directory`` or ``root``), checked against the masks, else numbers."""
    top = max(tops, default=0)
    for folder_path in (directory, root):
        names_file = os.path.join(folder_path, CLASS_NAMES_FILE)
        if fs.exists(names_file):
            names = tuple(line for line in fs.read_text(names_file).splitlines() if line.strip())
            if top >= len(names):
                worst = mask_paths[int(np.argmax(tops))]
                raise ValueError(f"mask {worst} has class {top} but {names_file} names {len(names)} classes "
                                 f"(0 to {len(names) - 1}; 255 is ignore)")
            return names
    return numbered(top)
