"""The super-resolution photographs (pipelines.photos): the split, the colour space, the resizing and the batches."""

from __future__ import annotations

import hashlib
import importlib.util
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kcnn import quality
from kcnn.superres import bicubic
from pipelines import photos
from pipelines.choices import SPLITS


def _digest(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image).tobytes() + str(image.shape).encode()).hexdigest()


def test_no_photograph_is_in_two_splits():
    seen = {}
    for split in SPLITS:
        images, names = photos.load_photos(split), photos.photo_names(split)
        assert len(images) == len(names) >= (2 if split == "test" else 1)
        for name, image in zip(names, images):
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3, name
            assert min(image.shape[:2]) >= 300, name
            digest = _digest(image)
            assert digest not in seen, f"{name} ({split}) is also {seen.get(digest)}"
            seen[digest] = f"{name} ({split})"
    assert photos.photo_names("test") == ("china", "flower")


def _thumbnail(image):
    grey = quality.rgb_to_y(image)
    small = np.asarray(Image.fromarray(grey.astype(np.float32), mode="F").resize((8, 8), Image.Resampling.BOX))
    return (small - small.mean()) / small.std()


def test_no_near_duplicate_crosses_splits():
    """Not only equal bytes: no pair from different splits has correlated 8x8 thumbnails (a stereo twin would:
    0.93 for motorcycle left and right, against at most 0.59 between the photographs used)."""
    thumbs = [(split, name, _thumbnail(image)) for split in SPLITS
              for name, image in zip(photos.photo_names(split), photos.load_photos(split))]
    for i, (split_a, name_a, a) in enumerate(thumbs):
        for split_b, name_b, b in thumbs[i + 1:]:
            if split_a != split_b:
                assert np.mean(a * b) < 0.8, (name_a, name_b)
    left, right = (photos._photo(photos.SKIMAGE, f"motorcycle_{side}.png") for side in ("left", "right"))
    assert np.mean(_thumbnail(left) * _thumbnail(right)) > 0.8  # the check does catch the pair left out


def test_scikit_image_photographs_are_files_of_the_installed_package():
    folder = os.path.join(list(importlib.util.find_spec("skimage").submodule_search_locations)[0], "data")
    for split in SPLITS:
        for _, package, filename in photos.PHOTO_SPLITS[split]:
            assert package == photos.SKLEARN or os.path.isfile(os.path.join(folder, filename)), filename


def test_ycbcr_is_kcnn_quality_bt601_and_round_trips():
    rgb = np.random.default_rng(0).integers(0, 256, (2, 9, 7, 3), dtype=np.uint8)
    ycbcr = photos.rgb_to_ycbcr(rgb / 255.0).numpy()
    np.testing.assert_allclose(ycbcr[..., 0] * 255.0, quality.rgb_to_y(rgb), atol=1e-3)
    assert ycbcr.min() >= 16 / 255 - 1e-6 and ycbcr.max() <= 240 / 255 + 1e-6
    back = photos.ycbcr_to_rgb(ycbcr).numpy()
    assert np.abs(back - rgb / 255.0).max() < 1 / 255
    assert np.all(np.round(back * 255) == rgb)
    np.testing.assert_allclose(photos.rgb_to_ycbcr([[1.0, 1.0, 1.0]]).numpy(), [[235 / 255, 128 / 255, 128 / 255]],
                               atol=1e-6)


def test_bicubic_downscale_is_pillows_antialiased_bicubic_and_upscale_is_kcnns_bicubic():
    """Pillow's BICUBIC (Keys' cubic, widened when shrinking, as MATLAB's imresize) is an independent implementation."""
    y = photos.modcrop(photos._luma("test")[1][100:220, 200:331, 0], 3)
    small = photos.bicubic_downscale(y[np.newaxis, ..., np.newaxis], 3).numpy()[0, ..., 0]
    assert small.shape == (40, 43)
    pillow = np.asarray(Image.fromarray(y, mode="F").resize((43, 40), Image.Resampling.BICUBIC))
    np.testing.assert_allclose(small, np.clip(pillow, 0, 1), atol=1e-5)
    low = small[np.newaxis, ..., np.newaxis]
    np.testing.assert_allclose(photos.bicubic_upscale(low, 3).numpy(), np.clip(bicubic(3)(low), 0, 1), atol=1e-6)
    assert photos.bicubic_upscale(np.zeros((5, 4, 2), np.float32), 2).shape == (10, 8, 2)  # any channels, no batch


def _batches(count=2, **kwargs):
    options = dict(scale=3, patch_size=24, batch_size=4, seed=5, patches_per_epoch=8)
    dataset, info = photos.sr_dataset("train", **{**options, **kwargs})
    return [tuple(t.numpy() for t in pair) for pair in dataset.take(count)], info


def test_training_batches_are_patches_and_their_bicubic_downscalings():
    batches, info = _batches()
    assert (info.count, info.batches, info.scale, info.patch_size, info.training) == (8, 2, 3, 24, True)
    assert info.names == photos.photo_names("train")
    for low, high in batches:
        assert low.shape == (4, 8, 8, 1) and high.shape == (4, 24, 24, 1)
        assert low.dtype == high.dtype == np.float32
        assert 16 / 255 - 1e-6 <= high.min() and high.max() <= 235 / 255 + 1e-6  # BT.601 luma
        assert 0.0 <= low.min() and low.max() <= 1.0
        np.testing.assert_allclose(low, photos.bicubic_downscale(high, 3).numpy(), atol=1e-6)
        assert len({_digest(patch) for patch in high}) == 4


def test_the_same_seed_gives_the_same_batches_and_each_epoch_new_ones():
    first, _ = _batches()
    again, _ = _batches()
    other, _ = _batches(seed=6)
    for (low_a, high_a), (low_b, high_b) in zip(first, again):
        np.testing.assert_array_equal(high_a, high_b)
        np.testing.assert_array_equal(low_a, low_b)
    assert not np.array_equal(first[0][1], other[0][1])
    dataset, _ = photos.sr_dataset("train", scale=2, patch_size=8, batch_size=2, seed=1, patches_per_epoch=2)
    epochs = [next(iter(dataset))[1].numpy() for _ in range(2)]
    assert not np.array_equal(*epochs)


def test_patches_are_contiguous_crops_flipped_both_ways_from_every_photograph():
    """Photographs whose pixels encode (photo, row, column) show where each patch came from."""
    lumas = [np.add.outer(1000 * np.arange(h), np.arange(w)).astype(np.float32)[..., None] + 100000 * k
             for k, (h, w) in enumerate([(30, 40), (20, 20)])]
    sample = photos._patch_sampler(lumas, 6)
    photos_seen, flips_seen = set(), set()
    for index in range(200):
        patch = sample(tf.constant([index, 7], tf.int64)).numpy()[..., 0].astype(np.int64)
        k, rows, columns = patch // 100000, patch % 100000 // 1000, patch % 1000
        assert np.all(k == k[0, 0])
        height, width = lumas[k[0, 0]].shape[:2]
        steps = (np.diff(rows[:, 0])[0], np.diff(columns[0])[0])
        assert set(np.diff(rows, axis=0).ravel()) == {steps[0]} and set(np.diff(columns, axis=1).ravel()) == {steps[1]}
        assert np.all(np.diff(rows, axis=1) == 0) and np.all(np.diff(columns, axis=0) == 0)
        assert rows.min() >= 0 and rows.max() < height and columns.min() >= 0 and columns.max() < width
        photos_seen.add(int(k[0, 0]))
        flips_seen.add(steps)
    assert photos_seen == {0, 1}
    assert flips_seen == {(1, 1), (1, -1), (-1, 1), (-1, -1)}


def test_evaluation_yields_each_photograph_whole_cropped_to_the_scale():
    dataset, info = photos.sr_dataset("validation", scale=4, patch_size=48, batch_size=16)
    assert (info.names, info.count, info.training) == (("chelsea", "coffee"), 2, False)
    pairs = [tuple(t.numpy() for t in pair) for pair in dataset]
    assert len(pairs) == 2
    for (low, high), image in zip(pairs, photos.load_photos("validation")):
        height, width = image.shape[0] // 4 * 4, image.shape[1] // 4 * 4
        assert high.shape == (1, height, width, 1) and low.shape == (1, height // 4, width // 4, 1)
        expected = photos.rgb_to_ycbcr(image[:height, :width] / 255.0).numpy()[..., :1]
        np.testing.assert_allclose(high[0], expected, atol=1e-6)
        np.testing.assert_allclose(low, photos.bicubic_downscale(high, 4).numpy(), atol=1e-6)


def test_bicubic_scores_on_the_test_photographs_are_sensible():
    """Y in [0, 255], border 3: well above a flat image's PSNR, SSIM between 0.5 and 1."""
    dataset, _ = photos.sr_dataset("test", scale=3, patch_size=24, batch_size=1)
    for low, high in dataset:
        upscaled = photos.bicubic_upscale(low, 3).numpy()[0, ..., 0] * 255.0
        truth = high.numpy()[0, ..., 0] * 255.0
        value = quality.psnr(truth, upscaled, border=3)
        assert 20.0 < value < 40.0
        assert value > quality.psnr(truth, np.full_like(truth, truth.mean()), border=3) + 5.0
        assert 0.5 < quality.ssim(truth, upscaled, border=3) < 1.0


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="patch_size must be a positive multiple of the scale 3"):
        photos.sr_dataset("train", scale=3, patch_size=32, batch_size=4)
    with pytest.raises(ValueError, match="larger than the smallest train photograph's side"):
        photos.sr_dataset("train", scale=3, patch_size=600, batch_size=4)
    with pytest.raises(ValueError, match="split must be one of train, validation, test"):
        photos.load_photos("tests")
    with pytest.raises(ValueError, match="scale must be an integer >= 2"):
        photos.sr_dataset("train", scale=1, patch_size=24, batch_size=4)
    with pytest.raises(ValueError, match=r"patches_per_epoch must be an integer >= batch_size \(4\)"):
        photos.sr_dataset("train", scale=3, patch_size=24, batch_size=4, patches_per_epoch=2)
