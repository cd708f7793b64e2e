"""Every source: shapes, dtypes, value ranges, class names, splits, and the errors a user can act on."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipelines import sources
from pipelines.data import load_dataset


def first_batch(dataset):
    if isinstance(dataset, tuple):  # (dataset, info)
        dataset = dataset[0]
    images, labels = next(iter(dataset))
    return images.numpy(), labels.numpy()


def test_digits_is_scikit_learns_bundled_set_with_a_fixed_stratified_split():
    splits = {s: sources.digits_arrays(s) for s in sources.SPLITS}
    # load_digits has 1,797 images of 8x8 pixels with values 0..16 (scikit-learn's documentation).
    assert sum(len(labels) for _, labels in splits.values()) == 1797
    assert {s: len(labels) for s, (_, labels) in splits.items()} == {"train": 1257, "validation": 180, "test": 360}
    images, labels = splits["train"]
    assert images.shape[1:] == (8, 8, 1) and images.dtype == np.uint8 and images.max() == 255
    # Stratified: every class's share of the test split is within one image of its share overall.
    counts = np.bincount(splits["test"][1], minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37
    again, _ = sources.digits_arrays("train")
    np.testing.assert_array_equal(again, images)


@pytest.mark.parametrize("channels", [1, 3])
def test_digits_pipeline_shapes_dtypes_and_range(channels):
    dataset, info = load_dataset("digits", "test", image_size=16, batch_size=8, channels=channels)
    images, labels = first_batch(dataset)
    assert images.shape == (8, 16, 16, channels) and images.dtype == np.float32
    assert -1.0 <= images.min() and images.max() <= 1.0  # mean 0.5, std 0.5 maps [0, 1] to [-1, 1]
    assert labels.dtype == np.int32 and set(labels) <= set(range(10))
    assert info.class_names == tuple(str(i) for i in range(10))
    assert info.num_examples == 360
    assert info.preprocessing.image_size == 16 and info.preprocessing.channels == channels


def test_shapes_source_labels_and_masks_agree():
    images, labels, masks = sources.shapes.load_split("validation")
    assert images.shape == (120, 64, 64, 3) and images.dtype == np.uint8
    # Each mask marks exactly one shape, with the value label + 1, over background 0.
    for label, mask in zip(labels, masks):
        assert set(np.unique(mask)) == {0, label + 1}
    again = sources.shapes.load_split("validation")[0]
    np.testing.assert_array_equal(images, again)
    assert not np.array_equal(sources.shapes.load_split("test")[0][:5], images[:5])
    dataset, _ = load_dataset("shapes", "validation", image_size=32, batch_size=4, target="mask")
    batch, mask_batch = first_batch(dataset)
    assert batch.shape == (4, 32, 32, 3) and mask_batch.shape == (4, 32, 32) and mask_batch.dtype == np.int32
    # Nearest-neighbour resizing keeps masks to their two values: no blended, wrong classes at the edges.
    for label, mask in zip(labels[:4], mask_batch):
        assert set(np.unique(mask)) == {0, label + 1}


def test_numpy_arrays_source_and_its_checks():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 12, 12, 3), dtype=np.uint8)
    labels = np.arange(10) % 2
    dataset, info = load_dataset((images, labels), image_size=12, batch_size=10, class_names=["cat", "dog"])
    batch, got = first_batch(dataset)
    np.testing.assert_array_equal(got, labels)
    np.testing.assert_allclose(batch, images / 255.0 / 0.5 - 1.0, atol=1e-5)  # 12 -> 12 is the identity
    assert info.class_names == ("cat", "dog")
    with pytest.raises(ValueError, match="images must be uint8"):
        sources.from_arrays(images.astype(np.float32), labels)
    with pytest.raises(ValueError, match="labels must be 10 integers"):
        sources.from_arrays(images, labels[:5])


def write_image(path, array, fmt):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "flowers"
    for cls, fmts in (("rose", ("JPEG", "PNG", "BMP")), ("tulip", ("GIF", "PNG", "JPEG"))):
        for i, fmt in enumerate(fmts):
            write_image(str(root / cls / f"{i}.{fmt.lower()}"), rng.integers(0, 256, (20, 24, 3), dtype=np.uint8),
                        fmt)
    return root


def test_folder_source_reads_every_format_with_sorted_class_names(image_folder):
    # A flat folder is split by class (issue 12); shares (1, 0, 0) put every file in the training split.
    dataset, info = load_dataset(f"folder:{image_folder}", image_size=16, batch_size=6, split_fractions=(1.0, 0, 0))
    images, labels = first_batch(dataset)
    assert images.shape == (6, 16, 16, 3)
    assert info.class_names == ("rose", "tulip")
    assert sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1]


def test_folder_source_corrupt_and_truncated_files_under_both_policies(image_folder):
    (image_folder / "rose" / "corrupt.jpg").write_bytes(b"not an image at all")
    good = (image_folder / "tulip" / "2.jpeg").read_bytes()
    (image_folder / "tulip" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    with pytest.raises(sources.BadImageFile) as error:
        load_dataset(f"folder:{image_folder}", image_size=16, batch_size=4)
    message = str(error.value)
    assert "2 file(s)" in message and "corrupt.jpg" in message and "truncated.jpg" in message
    assert "bad_files='skip'" in message
    dataset, info = load_dataset(f"folder:{image_folder}", image_size=16, batch_size=8, bad_files="skip",
                                 split_fractions=(1.0, 0, 0))
    assert sorted(os.path.basename(p) for p in info.skipped) == ["corrupt.jpg", "truncated.jpg"]
    assert info.num_examples == 6
    assert first_batch(dataset)[0].shape == (6, 16, 16, 3)


def test_tfrecord_writer_and_reader_round_trip(tmp_path):
    source = sources.digits("validation")
    paths = sources.write_tfrecords(source, str(tmp_path), "validation", shards=3)
    assert [os.path.basename(p) for p in paths] == [f"validation-0000{i}-of-00003.tfrecord" for i in range(3)]
    dataset, info = load_dataset(f"tfrecord:{tmp_path}/validation-*.tfrecord", image_size=8, batch_size=180,
                                 channels=1, shuffle=False)
    assert info.class_names == tuple(str(i) for i in range(10))
    assert info.num_examples == 180
    images, labels = first_batch(dataset)
    original, original_labels = sources.digits_arrays("validation")
    # Shards are read interleaved; PNG is lossless, so each record equals one original (image, label).
    want = {(int(y), original[i].tobytes()) for i, y in enumerate(original_labels)}
    got = {(int(y), np.round((images[i] * 0.5 + 0.5) * 255).astype(np.uint8).tobytes()) for i, y in enumerate(labels)}
    assert got == want


def test_tfds_source_with_tfds_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        dataset, info = load_dataset("tfds:mnist", "train", image_size=20, batch_size=4, data_dir=str(tmp_path),
                                     augment="cifar", seed=0)
        images, labels = first_batch(dataset)
    assert images.shape == (4, 20, 20, 3)
    assert info.class_names == tuple(str(i) for i in range(10))
    assert labels.dtype == np.int32


def test_missing_tfds_data_names_the_directory_and_the_command(tmp_path):
    with pytest.raises(sources.DatasetNotPrepared) as error:
        load_dataset("tfds:mnist", image_size=28, batch_size=2, data_dir=str(tmp_path))
    assert str(error.value) == (
        f"TFDS data set 'mnist' is not prepared in {tmp_path}. Prepare it once with "
        f"`tfds build mnist --data_dir {tmp_path}` (or pass download=True), then run again")


@pytest.mark.parametrize("kwargs, message", [
    ({"source": "imagenet"}, "unknown source 'imagenet'; valid sources: digits, shapes, scenes, tfds:NAME"),
    ({"image_size": 0}, "image_size must be a positive integer number of pixels, got 0"),
    ({"batch_size": -1}, "batch_size must be a positive integer, got -1"),
    ({"augment": "autoaugment"}, "augment must be a preset name (none, cifar, alexnet, inception, strong)"),
    ({"split": "dev"}, "split must be one of train, validation, test, got 'dev'"),
    ({"mix": "mosaic", "augment": "none"}, "mix must be one of mixup, cutmix or None, got 'mosaic'"),
    ({"mix": "mixup"}, "mix (MixUp/CutMix) applies to training pipelines only"),
    ({"bad_files": "ignore", "source": "folder:/"}, "bad_files must be one of error, skip, got 'ignore'"),
])
def test_bad_arguments_name_the_parameter_and_the_choices(kwargs, message):
    arguments = {"source": "digits", "image_size": 8, "batch_size": 2, **kwargs}
    with pytest.raises(ValueError) as error:
        load_dataset(arguments.pop("source"), arguments.pop("split", "train"), **arguments)
    assert message in str(error.value)


def test_pca_lighting_needs_rgb():
    with pytest.raises(ValueError, match="needs channels=3"):
        load_dataset("digits", image_size=8, batch_size=2, augment="alexnet", channels=1)


def test_decode_image_gives_rgb_for_every_format_and_replicates_grey(image_folder):
    from pipelines.preprocess import decode_image

    for path in sorted(image_folder.glob("*/*")):
        decoded = decode_image(tf.io.read_file(str(path))).numpy()
        want = np.asarray(Image.open(path).convert("RGB"))
        assert decoded.shape == want.shape and decoded.dtype == np.uint8
        if path.suffix != ".jpeg" and path.suffix != ".jpg":  # lossless formats: exact pixels
            np.testing.assert_array_equal(decoded, want)
    grey = np.random.default_rng(2).integers(0, 256, (5, 7), dtype=np.uint8)
    decoded = decode_image(tf.io.encode_png(grey[..., None])).numpy()
    np.testing.assert_array_equal(decoded, np.repeat(grey[..., None], 3, axis=-1))


def test_make_dataset_takes_a_spec_and_says_how_to_build_one():
    from pipelines.data import make_dataset

    with pytest.raises(TypeError, match=r"make_dataset takes a DataSpec, got str; build one with DataSpec.create"):
        make_dataset("digits", "train")
