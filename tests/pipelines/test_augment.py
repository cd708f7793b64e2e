"""Augmentations alone and in presets: shapes, ranges, label behaviour, determinism, TTA."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipelines import augment as aug
from pipelines.data import load_dataset

SEED = tf.constant([3, 7], tf.int32)


def batch_of(images):
    return tf.constant(np.asarray(images, np.float32))


def gradient_images(batch=4, size=16, channels=3):
    """Images whose every pixel differs, so geometry changes are visible."""
    ramp = np.linspace(0, 1, size * size * channels, dtype=np.float32).reshape(size, size, channels)
    return batch_of([np.roll(ramp, i, axis=0) for i in range(batch)])


@pytest.mark.parametrize("preset", list(aug.PRESETS))
def test_every_preset_gives_the_right_shape_dtype_range_and_keeps_labels(preset):
    dataset, _ = load_dataset("shapes", "validation", image_size=24, batch_size=12, augment=preset, seed=5,
                              shuffle=False)
    images, labels = next(iter(dataset))
    assert images.shape == (12, 24, 24, 3) and images.dtype == tf.float32
    assert float(tf.reduce_min(images)) >= -1.0 and float(tf.reduce_max(images)) <= 1.0
    # No shuffle: labels arrive in source order, untouched by flips and crops.
    from pipelines.shapes import load_split
    np.testing.assert_array_equal(labels.numpy(), load_split("validation")[1][:12])


def test_same_seed_same_batches_other_seed_other_batches_and_epochs_differ():
    def batches(seed):
        dataset, _ = load_dataset("digits", image_size=16, batch_size=32, augment="strong", seed=seed)
        return [b[0].numpy() for b in dataset.take(2)], dataset

    first, dataset = batches(11)
    second, _ = batches(11)
    other, _ = batches(12)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])
    epoch2 = next(iter(dataset))[0].numpy()  # a new iteration reshuffles and redraws
    assert not np.array_equal(first[0], epoch2)


def test_evaluation_pipeline_is_deterministic_and_equals_the_shared_preprocessing():
    from pipelines.preprocess import preprocess_images
    from pipelines.sources import digits_arrays

    runs = [next(iter(load_dataset("digits", "test", image_size=20, batch_size=16)[0]))[0].numpy() for _ in range(2)]
    np.testing.assert_array_equal(*runs)
    _, info = load_dataset("digits", "test", image_size=20, batch_size=16)
    direct = preprocess_images(tf.constant(digits_arrays("test")[0][:16]), info.preprocessing).numpy()
    np.testing.assert_array_equal(runs[0], direct)


def test_flip_mirrors_and_keeps_pixels():
    images = gradient_images()
    flipped = aug.flip(images, SEED, probability=1.0).numpy()
    np.testing.assert_array_equal(flipped, images.numpy()[:, :, ::-1, :])
    np.testing.assert_array_equal(aug.flip(images, SEED, probability=0.0).numpy(), images.numpy())


def test_mixup_weights_sum_to_one_and_match_the_image_blend():
    images = batch_of(np.arange(6)[:, None, None, None] * np.ones((6, 4, 4, 3)) / 10)
    labels = tf.one_hot(tf.range(6), 6)
    mixed, soft = aug.mixup(images, labels, SEED, alpha=0.4)
    np.testing.assert_allclose(soft.numpy().sum(axis=1), 1.0, rtol=1e-6)
    # Each image is lam * own + (1 - lam) * partner: its constant value is the label-weighted mean.
    expected = soft.numpy() @ (np.arange(6) / 10)
    np.testing.assert_allclose(mixed.numpy()[:, 0, 0, 0], expected, rtol=1e-5)


def test_cutmix_label_weight_equals_the_pasted_area():
    images = batch_of(np.arange(8)[:, None, None, None] * np.ones((8, 32, 32, 3)))
    labels = tf.one_hot(tf.range(8), 8)
    mixed, soft = aug.cutmix(images, labels, SEED, alpha=1.0)
    soft = soft.numpy()
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-6)
    for i in range(8):
        own_share = np.mean(mixed.numpy()[i, ..., 0] == i)
        if soft[i, i] < 1.0:  # this image received a patch from another
            np.testing.assert_allclose(soft[i, i], own_share, atol=1e-6)
            partner = int(np.argmax(np.where(np.arange(8) == i, -1, soft[i])))
            np.testing.assert_allclose(soft[i, partner], np.mean(mixed.numpy()[i, ..., 0] == partner), atol=1e-6)


def test_pca_lighting_changes_colour_not_geometry():
    rng = np.random.default_rng(0)
    pixels = rng.random((50, 8, 8, 3)).astype(np.float32) * np.array([1.0, 0.5, 0.2], np.float32)
    values, vectors = aug.rgb_principal_components(pixels)
    np.testing.assert_allclose(vectors.T @ vectors, np.eye(3), atol=1e-5)  # orthonormal components
    assert values[0] >= values[1] >= values[2] > 0
    images = batch_of(0.25 + 0.5 * rng.random((4, 8, 8, 3)))
    lit = aug.pca_lighting(images, SEED, values, vectors, std=0.5).numpy()
    shift = lit - images.numpy()
    # One RGB offset per image, the same at every pixel: colour moves, structure does not.
    np.testing.assert_allclose(shift, np.broadcast_to(shift[:, :1, :1, :], shift.shape), atol=1e-6)
    assert np.abs(shift).max() > 1e-4


def test_color_jitter_affine_erasing_and_randaugment_stay_in_range():
    images = gradient_images(batch=4, size=16)
    for out in (aug.color_jitter(images, SEED), aug.affine(images, SEED, 30, 0.2, 0.2),
                aug.random_erasing(images, SEED, probability=1.0)):
        assert out.shape == images.shape
        assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 1.0
        assert not np.allclose(out.numpy(), images.numpy())
    with pytest.raises(ValueError, match=r"magnitude must be in \[0, 10\]"):
        aug.randaugment(images[0], SEED, magnitude=11)


def randaugment_image(size=15):
    """An RGB image in [0.1, 0.9] whose pixels all differ, odd-sized so the centre is a pixel."""
    ramp = np.linspace(0.1, 0.9, size * size, dtype=np.float32).reshape(size, size)
    return np.ascontiguousarray(np.stack([ramp, 1.0 - ramp, np.roll(ramp, 5, axis=1)], axis=-1))  # colourful


@pytest.mark.parametrize("sign", [-1.0, 1.0])
def test_each_randaugment_photometric_op_changes_the_image_by_its_documented_formula(sign):
    x = randaugment_image()
    m = 0.9  # magnitude 9 of 10
    factor = 1 + sign * 0.9 * m
    grey = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    expected = {
        "identity": x,
        "solarize": np.where(x < 1 - m, x, 1 - x),
        "posterize": np.floor(x * 255 / 8) * 8 / 255,  # 8 - int(4 * 0.9) = 5 bits kept
        "brightness": np.clip(x * factor, 0, 1),
        "color": np.clip(grey + (x - grey) * factor, 0, 1),
        "contrast": np.clip(grey.mean() + (x - grey.mean()) * factor, 0, 1),
        "autocontrast": (x - x.min(axis=(0, 1))) / (x.max(axis=(0, 1)) - x.min(axis=(0, 1))),
    }
    for name, want in expected.items():
        got = aug.RANDAUGMENT_OPS[name](tf.constant(x), tf.constant(sign), m).numpy()
        np.testing.assert_allclose(got, want, atol=2e-6, err_msg=name)
        if name != "identity":
            assert np.abs(got - x).max() > 0.02, f"{name} did not change the image"
    sharp = aug.RANDAUGMENT_OPS["sharpness"](tf.constant(x), tf.constant(sign), m).numpy()
    assert 0.0 <= sharp.min() and sharp.max() <= 1.0 and np.abs(sharp - x).max() > 1e-3


def test_each_randaugment_geometric_op_moves_pixels_by_its_documented_amount():
    x = randaugment_image(size=20)
    one = tf.constant(1.0)
    # Translation at full magnitude is 0.45 of the size: 9 pixels of 20, content moving right / down.
    shifted = aug.RANDAUGMENT_OPS["translate_x"](tf.constant(x), one, 1.0).numpy()
    np.testing.assert_allclose(shifted[:, 9:], x[:, :-9], atol=1e-6)
    np.testing.assert_array_equal(shifted[:, :9], 0.0)
    down = aug.RANDAUGMENT_OPS["translate_y"](tf.constant(x), -one, 1.0).numpy()
    np.testing.assert_allclose(down[:-9], x[9:], atol=1e-6)
    odd = randaugment_image(size=15)
    centre = 7
    # Rotation and shear about the centre: the centre pixel (rotate) or centre row/column (shear) stay put.
    rotated = aug.RANDAUGMENT_OPS["rotate"](tf.constant(odd), one, 0.9).numpy()  # 27 degrees
    np.testing.assert_allclose(rotated[centre, centre], odd[centre, centre], atol=1e-5)
    assert np.array_equal(rotated[0, 0], [0, 0, 0])  # a corner leaves the frame at 27 degrees
    sheared = aug.RANDAUGMENT_OPS["shear_x"](tf.constant(odd), one, 0.9).numpy()
    np.testing.assert_allclose(sheared[centre], odd[centre], atol=1e-5)
    # 0.27 shear moves row 0 by 0.27 * 7 = 1.89 pixels: it differs from the original there.
    assert np.abs(sheared[0] - odd[0]).max() > 0.01
    sheared_y = aug.RANDAUGMENT_OPS["shear_y"](tf.constant(odd), one, 0.9).numpy()
    np.testing.assert_allclose(sheared_y[:, centre], odd[:, centre], atol=1e-5)
    # At magnitude 0 every op with a magnitude is the identity (solarize inverts nothing below 1, factors are 1).
    for name, op in aug.RANDAUGMENT_OPS.items():
        if name not in ("autocontrast", "posterize"):  # no magnitude; posterize at 0 rounds to 8-bit pixels
            np.testing.assert_allclose(op(tf.constant(odd), one, 0.0).numpy(), odd, atol=1e-5, err_msg=name)


def test_pad_and_crop_and_random_resized_crop_shapes():
    image = gradient_images(batch=1, size=32)[0]
    crop = aug.pad_and_crop(image, SEED, 32, pad=4).numpy()
    assert crop.shape == (32, 32, 3)
    # The crop is the image shifted by at most 4 pixels, zero-filled where it left the frame.
    padded = np.pad(image.numpy(), [(4, 4), (4, 4), (0, 0)])
    assert any(np.array_equal(crop, padded[y:y + 32, x:x + 32]) for y in range(9) for x in range(9))
    assert aug.random_resized_crop(image, SEED, 20).shape == (20, 20, 3)


def test_jpeg_bytes_decode_only_the_crop_window():
    image = tf.cast(gradient_images(batch=1, size=64)[0] * 255, tf.uint8)
    crop = aug.decode_random_resized_crop(tf.io.encode_jpeg(image), SEED, 24, 3)
    assert crop.shape == (24, 24, 3)
    png = aug.decode_random_resized_crop(tf.io.encode_png(image), SEED, 24, 3)
    np.testing.assert_allclose(crop.numpy(), png.numpy(), atol=0.08)  # same window; JPEG is lossy


def test_ten_crop_tta_averages_the_ten_views():
    images = gradient_images(batch=2, size=12)
    crops = aug.ten_crops(images, 8).numpy()
    assert crops.shape == (10, 2, 8, 8, 3)
    np.testing.assert_array_equal(crops[0], images.numpy()[:, :8, :8])
    np.testing.assert_array_equal(crops[4], images.numpy()[:, 2:10, 2:10])
    np.testing.assert_array_equal(crops[9], crops[4][:, :, ::-1])
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))
    np.testing.assert_allclose(aug.ten_crop_predict(model, images, 8), crops.mean(axis=(0, 2, 3)), rtol=1e-5)
    with pytest.raises(ValueError, match="at least 16x16"):
        aug.ten_crop_predict(model, images, 16)
    five = aug.ten_crops(images, 8, flip=False).numpy()
    np.testing.assert_array_equal(five, crops[:5])
    np.testing.assert_allclose(aug.ten_crop_predict(model, images, 8, flip=False), crops[:5].mean(axis=(0, 2, 3)),
                               rtol=1e-5)


@pytest.mark.parametrize("flip_probability", [0.0, 1.0])
def test_batched_pad_crop_and_flip_take_a_shifted_window_per_image(flip_probability):
    images = gradient_images(batch=6, size=16)
    out = aug.batch_pad_and_crop(images, SEED, pad=2, flip_probability=flip_probability).numpy()
    padded = np.pad(images.numpy(), [(0, 0), (2, 2), (2, 2), (0, 0)])
    offsets = set()
    for i in range(6):
        windows = {(y, x): padded[i, y:y + 16, x:x + 16] for y in range(5) for x in range(5)}
        if flip_probability:
            windows = {k: w[:, ::-1] for k, w in windows.items()}
        matches = [k for k, w in windows.items() if np.array_equal(out[i], w)]
        assert matches, f"image {i} is not a (mirrored) window of its padded self"
        offsets.add(matches[0])
    assert len(offsets) > 1  # each image draws its own offset


def test_augment_preview_writes_a_png(tmp_path):
    from kcnn import cli

    out = tmp_path / "grid.png"
    assert cli.main(["augment-preview", "shapes", "--preset", "cifar", "--mix", "mixup", "--rows", "2",
                     "--versions", "2", "--image-size", "32", "--out", str(out)]) == 0
    from PIL import Image

    with Image.open(out) as picture:
        assert picture.format == "PNG" and picture.size[0] > 300
