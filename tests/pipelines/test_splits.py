"""Honest splits: no example is in two splits, for every source; folders without split subfolders are split
by class, deterministically; every file is decoded or named; the run directory records the files."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image

from pipelines import shapes
from pipelines.config import ConfigError, from_dict
from pipelines.data import DataSpec, make_dataset
from pipelines.run_dir import RunDir
from pipelines.sources import BadImageFile, digits_indices, folder, load_source, split_indices

SPLITS = ("train", "validation", "test")


def write_image(path, seed, fmt="PNG", size=(12, 10)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)


@pytest.fixture
def flat_folder(tmp_path):
    """Two classes of 10 and 7 images, no train/validation/test subfolders (PNG, JPEG and WebP)."""
    root = tmp_path / "flat"
    formats = [("png", "PNG"), ("jpg", "JPEG"), ("webp", "WEBP")]
    for label, count in (("cat", 10), ("dog", 7)):
        for i in range(count):
            extension, fmt = formats[i % 3]
            write_image(str(root / label / f"{i:02d}.{extension}"), seed=100 * len(label) + i, fmt=fmt)
    return str(root)


def test_folder_without_split_subfolders_gives_disjoint_stratified_deterministic_splits(flat_folder):
    files = {split: set(load_source(f"folder:{flat_folder}", split).files) for split in SPLITS}
    assert not (files["train"] & files["validation"]) and not (files["train"] & files["test"])
    assert not (files["validation"] & files["test"])
    assert sum(len(f) for f in files.values()) == 17  # every file in exactly one split
    for split in SPLITS:  # stratified: both classes everywhere (each has >= 3 files)
        assert {os.path.basename(os.path.dirname(p)) for p in files[split]} == {"cat", "dog"}
    again = {split: set(load_source(f"folder:{flat_folder}", split).files) for split in SPLITS}
    assert again == files
    other = set(load_source(f"folder:{flat_folder}", "train", split_seed=1).files)
    assert other != files["train"] and len(other) == len(files["train"])


def test_split_indices_shares_and_errors():
    labels = np.repeat(np.arange(4), 50)
    parts = split_indices(labels, (0.7, 0.2, 0.1), seed=3)
    assert [len(parts[s]) for s in SPLITS] == [140, 40, 20]
    assert len(np.unique(np.concatenate(list(parts.values())))) == 200
    with pytest.raises(ValueError, match="summing to 1"):
        split_indices(labels, (0.5, 0.2, 0.1))


def test_digits_splits_are_disjoint_by_index_and_shapes_by_content():
    indices = [set(digits_indices(split).tolist()) for split in SPLITS]
    assert sum(map(len, indices)) == 1797 and len(set().union(*indices)) == 1797
    digests = [{hashlib.sha1(image.tobytes()).hexdigest() for image in shapes.load_split(split, size=32)[0]}
               for split in SPLITS]
    assert not (digests[0] & digests[1]) and not (digests[0] & digests[2]) and not (digests[1] & digests[2])


def test_unsupported_formats_are_named_and_webp_decodes(flat_folder):
    tiff = os.path.join(flat_folder, "dog", "scan.tiff")
    write_image(tiff, seed=7, fmt="TIFF")
    with pytest.raises(BadImageFile, match=r"scan\.tiff: a format TensorFlow cannot decode.*data.bad_files=skip"):
        folder(flat_folder)
    source = folder(flat_folder, bad_files="skip")
    assert source.skipped == (tiff,) and source.num_examples == 17
    assert sum(path.endswith(".webp") for path in source.files) == 5


def test_grey_runs_read_every_format(flat_folder):
    spec = DataSpec.create(f"folder:{flat_folder}", image_size=8, batch_size=4, channels=1)
    write_image(os.path.join(flat_folder, "cat", "bitmap.bmp"), seed=9, fmt="BMP")
    dataset, info = make_dataset(spec, "train")
    count = sum(int(images.shape[0]) for images, _ in dataset)
    assert count == info.num_examples and next(iter(dataset))[0].shape[-1] == 1


def test_the_run_directory_records_the_files_and_refuses_a_changed_folder(flat_folder, tmp_path):
    spec = DataSpec.create(f"folder:{flat_folder}", image_size=8, batch_size=4)
    run = RunDir(str(tmp_path / "run"))
    infos = [make_dataset(spec, split)[1] for split in SPLITS]
    run.record_files(*infos)
    recorded = json.loads(open(run.file(RunDir.DATA_FILES)).read())
    assert {split: len(recorded[split]["files"]) for split in SPLITS} == {s: i.num_examples for s, i in
                                                                           zip(SPLITS, infos)}
    run.record_files(make_dataset(spec, "test")[1])  # the same files again: fine
    write_image(os.path.join(flat_folder, "cat", "99.png"), seed=99)
    changed = [make_dataset(spec, split)[1] for split in SPLITS]
    with pytest.raises(ValueError, match="folder changed since the run started"):
        run.record_files(*changed)


def test_split_fractions_is_a_checked_config_key():
    config = from_dict({"data": {"split_fractions": [0.6, 0.2, 0.2], "split_seed": 4}})
    assert DataSpec.from_config(config.data).split_fractions == (0.6, 0.2, 0.2)
    with pytest.raises(ConfigError, match="split_fractions must be three shares"):
        from_dict({"data": {"split_fractions": [0.6, 0.6]}})
