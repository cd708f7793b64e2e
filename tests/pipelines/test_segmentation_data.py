"""Segmentation data: the scenes generator, the folder and TFDS mask sources, joint augmentation, make_dataset."""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipelines import augment as aug
from pipelines import shapes
from pipelines.data import DataSpec, load_dataset, make_dataset
from pipelines.mask_folder import segmentation_folder
from pipelines.preprocess import Preprocessing
from pipelines.sources import BadImageFile, load_source

SEED = tf.constant([5, 11], tf.int32)
# Colour-coded data: class k is painted PALETTE[k], so a mask can be read back from the image's colours.
PALETTE = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [220, 220, 60]], np.uint8)
PAD_COLOUR = np.zeros(3, np.uint8)  # what joint_scale_crop pads images with (mask: 255)


def coded_pair(seed=0, height=32, width=40, block=8):
    """A random block mask (classes 0-3, asymmetric) and the image painting each class its palette colour."""
    rng = np.random.default_rng(seed)
    mask = np.kron(rng.integers(0, 4, (height // block, width // block)), np.ones((block, block), int))
    return PALETTE[mask], mask.astype(np.uint8)


def colour_classes(image01):
    """Per pixel, the palette entry (255 for the padding's black) nearest to a [0, 1] image's colour."""
    colours = np.concatenate([PALETTE, PAD_COLOUR[None]]).astype(np.float32) / 255.0
    nearest = np.argmin(((image01[..., None, :] - colours) ** 2).sum(-1), axis=-1)
    return np.where(nearest == len(PALETTE), 255, nearest)


def interior(mask, margin=1):
    """Pixels whose (2 margin + 1)-square neighbourhood holds one mask value (bilinear blends stay off them)."""
    padded = np.pad(mask, margin, mode="edge")
    same = np.ones(mask.shape, bool)
    for dy in range(2 * margin + 1):
        for dx in range(2 * margin + 1):
            same &= padded[dy:dy + mask.shape[0], dx:dx + mask.shape[1]] == mask
    return same


def assert_image_matches_mask(image01, mask):
    """The image's colours say the mask's classes away from edges: both were moved by the same transform."""
    inside = interior(mask) & (mask != 255)
    assert inside.mean() > 0.1
    agreement = np.mean(colour_classes(image01)[inside] == mask[inside])
    assert agreement > 0.99, agreement


# ------------------------------------------------------------------------------------------- scenes


def test_scenes_are_deterministic_with_one_to_four_objects_and_tight_boxes_of_the_visible_pixels():
    images, masks, instances = shapes.make_scenes(50, seed=3)
    assert images.shape == (50, 64, 64, 3) and images.dtype == np.uint8
    assert masks.shape == (50, 64, 64) and masks.dtype == np.uint8
    again = shapes.make_scenes(50, seed=3)
    np.testing.assert_array_equal(images, again[0])
    np.testing.assert_array_equal(masks, again[1])
    assert instances == again[2]
    assert not np.array_equal(shapes.make_scenes(5, seed=4)[0], images[:5])
    assert {len(objects) for objects in instances} == {1, 2, 3, 4}
    for mask, objects in zip(masks, instances):
        covered = np.zeros(mask.shape, bool)
        for label, (ymin, xmin, ymax, xmax) in objects:
            assert label in (0, 1, 2) and 0 <= ymin < ymax <= 64 and 0 <= xmin < xmax <= 64
            box = mask[ymin:ymax, xmin:xmax] == label + 1
            # Tight: the object's class reaches every side of its box.
            assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any()
            covered[ymin:ymax, xmin:xmax] |= box
        # Every shape pixel lies in a box of its own class; the rest is background.
        np.testing.assert_array_equal(covered, mask > 0)


def test_scene_splits_are_fixed_disjoint_fast_and_hold_every_class():
    start = time.perf_counter()
    train = shapes.load_scenes("train")
    assert time.perf_counter() - start < 2.0  # about 0.4 s; the budget is 1 s on a quiet core
    validation, test = shapes.load_scenes("validation"), shapes.load_scenes("test")
    assert [len(split[0]) for split in (train, validation, test)] == [600, 120, 120]
    digests = [{image.tobytes() for image in split[0]} for split in (train, validation, test)]
    assert not (digests[0] & digests[1] or digests[0] & digests[2] or digests[1] & digests[2])
    share = np.bincount(train[1].ravel(), minlength=4) / train[1].size
    assert 0.7 < share[0] < 0.9 and all(share[1:] > 0.04)  # background about 80%, each shape 5-8%
    counts = np.array([len(objects) for objects in train[2]])
    assert 2.2 < counts.mean() < 2.8
    with pytest.raises(ValueError, match="split must be one of"):
        shapes.load_scenes("dev")


def test_scenes_source_labels_are_the_class_covering_most_pixels_and_masks_have_names():
    source = load_source("scenes", "validation")
    masks = shapes.load_scenes("validation")[1]
    labels = np.concatenate([y.numpy()[None] for _, y in source.dataset])
    for label, mask in zip(labels, masks):
        area = [np.sum(mask == value) for value in (1, 2, 3)]
        assert area[label] == max(area)
    assert source.class_names == ["circle", "square", "triangle"]
    assert source.mask_class_names == ("background", "circle", "square", "triangle")
    assert load_source("shapes", "test").mask_class_names == ("background", "circle", "square", "triangle")


def test_mask_pipeline_images_are_the_label_pipelines_and_masks_int32_with_mask_class_names():
    dataset, info = load_dataset("scenes", "test", image_size=48, batch_size=6, target="mask")
    images, masks = next(iter(dataset))
    label_images, _ = next(iter(load_dataset("scenes", "test", image_size=48, batch_size=6)[0]))
    np.testing.assert_array_equal(images.numpy(), label_images.numpy())
    assert images.shape == (6, 48, 48, 3) and images.dtype == tf.float32
    assert masks.shape == (6, 48, 48) and masks.dtype == tf.int32
    # Nearest-neighbour resizing: exactly the mask resized by nearest, no blended classes at the edges.
    expected = tf.image.resize(shapes.load_scenes("test")[1][:6, ..., None], [48, 48], method="nearest")[..., 0]
    np.testing.assert_array_equal(masks.numpy(), expected.numpy())
    assert info.class_names == ("background", "circle", "square", "triangle") and info.num_examples == 120


# ------------------------------------------------------------------------------------ joint ops


def test_joint_flip_flips_both_or_neither():
    image, mask = coded_pair()
    flips = 0
    for seed in range(8):
        out_image, out_mask = aug.joint_flip(tf.constant(image / 255.0, tf.float32), tf.constant(mask),
                                             tf.constant([seed, 1]))
        out_image, out_mask = out_image.numpy(), out_mask.numpy()
        assert_image_matches_mask(out_image, out_mask)
        flips += not np.array_equal(out_mask, mask)
        assert np.array_equal(out_mask, mask) or np.array_equal(out_mask, mask[:, ::-1])
    assert 0 < flips < 8


@pytest.mark.parametrize("scale", [(0.5, 0.7), (0.8, 1.2), (1.3, 1.6)])
def test_joint_scale_crop_moves_image_and_mask_alike_and_pads_with_ignore(scale):
    image, mask = coded_pair(seed=1, height=48, width=64, block=16)
    image01 = tf.constant(image / 255.0, tf.float32)
    for seed in range(4):
        out_image, out_mask = aug.joint_scale_crop(image01, tf.constant(mask), tf.constant([seed, 2]), 24, scale)
        out_image, out_mask = out_image.numpy(), out_mask.numpy()
        assert out_image.shape == (24, 24, 3) and out_mask.shape == (24, 24) and out_mask.dtype == np.int32
        assert set(np.unique(out_mask)) <= {0, 1, 2, 3, 255}
        assert_image_matches_mask(out_image, out_mask)
        padded = out_mask == 255
        if scale[1] < 1:  # at most 48 * 24 / 48 * 0.7 < 24 rows: padding, black in the image
            assert padded.any() and np.all(out_image[padded] == 0)
        if scale[0] > 1:
            assert not padded.any()
    again = aug.joint_scale_crop(image01, tf.constant(mask), tf.constant([0, 2]), 24, scale)
    first = aug.joint_scale_crop(image01, tf.constant(mask), tf.constant([0, 2]), 24, scale)
    np.testing.assert_array_equal(again[1].numpy(), first[1].numpy())
    np.testing.assert_array_equal(again[0].numpy(), first[0].numpy())


def test_the_check_catches_a_mask_left_behind():
    """The consistency check can fail: a flipped image over its unflipped mask disagrees."""
    image, mask = coded_pair()
    with pytest.raises(AssertionError):
        assert_image_matches_mask(image[:, ::-1] / 255.0, mask)


def test_joint_recipes_refuse_what_would_leave_the_mask_behind():
    with pytest.raises(ValueError, match="RandAugment or random erasing.*Presets that work: none, cifar, alexnet, inception"):
        DataSpec.create("scenes", image_size=32, batch_size=4, augment="strong", target="mask")
    with pytest.raises(ValueError, match="mix \\(cutmix\\).*target='mask'"):
        DataSpec.create("scenes", image_size=32, batch_size=4, augment="cifar", mix="cutmix", target="mask")
    spec = DataSpec.create("scenes", image_size=32, batch_size=4, augment="cifar", mix="mixup")
    with pytest.raises(ValueError, match="mix \\(mixup\\)"):
        dataclasses.replace(spec, target="mask")  # as a task sets its target
    with pytest.raises(ValueError, match="per-pixel labels"):
        load_dataset("digits", "test", image_size=8, batch_size=4, target="mask")


# ------------------------------------------------------------------------------- folder layout


def write_pair(root, stem, image, mask, image_ext=".png"):
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, "masks"), exist_ok=True)
    Image.fromarray(image).save(os.path.join(root, "images", stem + image_ext))
    if mask is not None:
        mask = mask if isinstance(mask, Image.Image) else Image.fromarray(mask)
        mask.save(os.path.join(root, "masks", stem + ".png"))


@pytest.fixture
def coded_folder(tmp_path):
    """20 colour-coded pairs in one folder (no split subfolders); image 3's mask marks its top rows ignore (255)."""
    for index in range(20):
        image, mask = coded_pair(seed=index)
        if index == 3:
            mask[:4] = 255
        write_pair(tmp_path, f"pic{index:02d}", image, mask)
    return tmp_path


def test_flat_segmentation_folder_splits_files_disjointly_and_names_classes_by_number(coded_folder):
    splits = ("train", "validation", "test")
    files = {split: set(load_source(f"folder:{coded_folder}", split).files) for split in splits}
    assert [len(files[s]) for s in splits] == [16, 2, 2]
    assert len(set.union(*files.values())) == 20
    source = load_source(f"folder:{coded_folder}", "train")
    assert source.mask_class_names == ("0", "1", "2", "3") and source.encoded
    dataset, info = load_dataset(f"folder:{coded_folder}", "train", image_size=32, batch_size=20, target="mask")
    images, masks = next(iter(dataset))
    assert info.class_names == ("0", "1", "2", "3") and info.num_examples == 16
    assert images.shape == (16, 32, 32, 3) and masks.shape == (16, 32, 32)
    # Ignore (255) stays 255 through the evaluation geometry (32x40 -> the centre 32x32).
    split = next(s for s, names in files.items() if str(coded_folder / "images" / "pic03.png") in names)
    dataset, info = load_dataset(f"folder:{coded_folder}", split, image_size=32, batch_size=20, target="mask")
    masks = next(iter(dataset))[1].numpy()[list(info.files).index(str(coded_folder / "images" / "pic03.png"))]
    np.testing.assert_array_equal(masks[:4], 255)
    assert 255 not in masks[4:]


def test_folder_training_pipeline_moves_masks_with_images_and_colour_stays_off_masks(coded_folder):
    def batch(recipe, seed=4):
        spec = DataSpec(f"folder:{coded_folder}", Preprocessing(24), batch_size=8, recipe=recipe, seed=seed,
                        target="mask")
        images, masks = next(iter(make_dataset(spec, "train")[0]))
        return images.numpy() * 0.5 + 0.5, masks.numpy()  # undo mean 0.5, std 0.5

    geometry = dataclasses.replace(aug.PRESETS["cifar"], mask_scale=(0.6, 1.4))
    images, masks = batch(geometry)
    assert images.shape == (8, 24, 24, 3) and masks.dtype == np.int32
    assert set(np.unique(masks)) <= {0, 1, 2, 3, 255} and (masks == 255).any()
    for image, mask in zip(images, masks):
        assert_image_matches_mask(image, mask)
    same_images, same_masks = batch(geometry)
    np.testing.assert_array_equal(images, same_images)
    np.testing.assert_array_equal(masks, same_masks)
    assert not np.array_equal(batch(geometry, seed=5)[1], masks)
    # Colour jitter changes the images alone: the same seed gives the same masks as without it.
    coloured_images, coloured_masks = batch(dataclasses.replace(geometry, color=(0.4, 0.4, 0.4, 0.1)))
    np.testing.assert_array_equal(coloured_masks, masks)
    assert np.abs(coloured_images - images).max() > 0.1


def test_split_folders_class_names_file_and_palette_masks(tmp_path):
    for split, count in (("train", 3), ("validation", 1), ("test", 1)):
        for index in range(count):
            image, mask = coded_pair(seed=index)
            palette_mask = Image.fromarray(mask).convert("P")  # a palette PNG, as VOC's masks are
            palette_mask.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0] * (252 * 3))
            write_pair(tmp_path / split, f"{split}{index}", image, palette_mask, image_ext=".jpg")
    (tmp_path / "class_names.txt").write_text("background\nred\ngreen\nblue\n")
    source = load_source(f"folder:{tmp_path}", "validation")
    assert source.num_examples == 1 and source.mask_class_names == ("background", "red", "green", "blue")
    mask = next(iter(source.masks)).numpy()
    np.testing.assert_array_equal(mask, coded_pair(seed=0)[1])  # the palette indices, not the colours
    (tmp_path / "class_names.txt").write_text("background\nred\n")
    with pytest.raises(ValueError, match=r"train0\.png has class 3 but .*class_names\.txt names 2 classes"):
        load_source(f"folder:{tmp_path}", "train")


@pytest.mark.parametrize("problem, message", [
    ("missing", r"pic01\.png: has no mask \(expected .*masks/pic01\.png\)"),
    ("size", r"its mask .*masks/pic01\.png is 20x16 pixels, the image 40x32"),
    ("rgb", r"mask .*masks/pic01\.png has 3 channels \(PIL mode RGB\)"),
])
def test_folder_errors_name_the_file_and_skip_leaves_it_out(tmp_path, problem, message):
    for index in range(3):
        image, mask = coded_pair(seed=index)
        if index == 1:
            mask = {"missing": None, "size": mask[::2, ::2], "rgb": PALETTE[mask]}[problem]
        write_pair(tmp_path, f"pic{index:02d}", image, mask)
    with pytest.raises(BadImageFile, match=message):
        load_source(f"folder:{tmp_path}", "train")
    source = segmentation_folder(str(tmp_path), "train", bad_files="skip", fractions=(1.0, 0.0, 0.0))
    assert source.num_examples == 2 and [os.path.basename(p) for p in source.skipped] == ["pic01.png"]


def test_class_subfolders_still_make_a_classification_folder(tmp_path):
    for name in ("cats", "dogs"):
        os.makedirs(tmp_path / name)
        for index in range(3):
            Image.fromarray(coded_pair(seed=index)[0]).save(tmp_path / name / f"{index}.png")
    source = load_source(f"folder:{tmp_path}", "train")
    assert source.class_names == ["cats", "dogs"] and source.masks is None


# ------------------------------------------------------------------------------------------ TFDS


def mock_pets(self, split, decoders=None, read_config=None, shuffle_files=False):
    """oxford_iiit_pet-like examples: images with same-size trimaps (1 pet, 2 background, 3 border)."""

    def examples():
        rng = np.random.default_rng(0)
        for index in range(5):
            height, width = 20 + index, 30 - index
            yield {"image": rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "label": index,
                   "segmentation_mask": rng.integers(1, 4, (height, width, 1), dtype=np.uint8)}

    return tf.data.Dataset.from_generator(examples, output_signature={
        "image": tf.TensorSpec([None, None, 3], tf.uint8), "label": tf.TensorSpec([], tf.int64),
        "segmentation_mask": tf.TensorSpec([None, None, 1], tf.uint8)})


def test_tfds_segmentation_mask_is_the_target_with_its_values_kept(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(as_dataset_fn=mock_pets):
        dataset, info = load_dataset("tfds:oxford_iiit_pet", "train", image_size=16, batch_size=5, target="mask",
                                     data_dir=str(tmp_path))
        images, masks = next(iter(dataset))
        assert images.shape == (5, 16, 16, 3) and masks.shape == (5, 16, 16) and masks.dtype == tf.int32
        assert set(np.unique(masks.numpy())) == {1, 2, 3}  # no mapping invented: the trimap values as stored
        assert info.class_names == ("0", "1", "2", "3") and info.num_examples == 5
        _, masks = next(iter(load_dataset("tfds:oxford_iiit_pet", "train", image_size=16, batch_size=5, seed=0,
                                          augment="inception", target="mask", data_dir=str(tmp_path))[0]))
        assert set(np.unique(masks.numpy())) <= {1, 2, 3, 255}
        _, info = load_dataset("tfds:oxford_iiit_pet", "train", image_size=16, batch_size=5, data_dir=str(tmp_path))
        assert info.class_names[0] == "Abyssinian" and len(info.class_names) == 37  # labels as before


def test_tfds_masks_of_another_size_than_their_images_fail_clearly(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=2):  # TFDS's own random examples: sizes drawn independently
        dataset, _ = load_dataset("tfds:oxford_iiit_pet", "train", image_size=16, batch_size=2, target="mask",
                                  data_dir=str(tmp_path))
        with pytest.raises(tf.errors.InvalidArgumentError, match="an image and its mask differ in size"):
            next(iter(dataset))
        with pytest.raises(ValueError, match="tfds:mnist has none"):
            load_dataset("tfds:mnist", "train", image_size=16, batch_size=2, target="mask", data_dir=str(tmp_path))
