"""A run directory on a non-local TensorFlow filesystem (``ram://``, as ``gs://`` goes through the same tf.io.gfile).

TensorFlow's Cloud Storage filesystem cannot be pointed at an emulator here: its endpoints are compiled in
(``https://www.googleapis.com/storage/v1/`` in libtensorflow_framework, no override variable), so ``ram://``,
TensorFlow's in-memory filesystem, stands for every filesystem reached through ``tf.io.gfile``.
"""

from __future__ import annotations

import io
import zipfile

import pytest
import tensorflow as tf

from kcnn.files import STAGED_TAG
from pipelines import fs
from pipelines.evaluate import evaluate
from pipelines.run_dir import RunDir
from pipelines.train import train
from tiny_run import tiny


def listing(top):
    return {f"{directory[len(top):]}/{name}".lstrip("/") for directory, _, files in tf.io.gfile.walk(top)
            for name in files}


@pytest.fixture(scope="module")
def remote_run():
    """The tiny run, trained into ram://, with what each atomic replace saw at the moment before its rename."""
    top = "ram://kcnn-tests/remote-run"
    seen = []
    real = fs.crash_point

    def snapshot(point):  # the instant a kill would hit: the new content waits, whole, under its staged name
        if point.startswith("replace:"):
            name = point[len("replace:"):]
            staged = tf.io.gfile.glob(f"{top}/.*{STAGED_TAG}*") + tf.io.gfile.glob(f"{top}/*/.*{STAGED_TAG}*")
            whole = [zipfile.ZipFile(io.BytesIO(fs.read_bytes(path))).testzip() is None
                     for path in staged if path.endswith(".keras")]
            seen.append((name, staged, whole, sorted(listing(top))))
        real(point)

    fs.crash_point = snapshot
    try:
        metrics = train(tiny(), top, verbose=False)
    finally:
        fs.crash_point = real
    return top, metrics, seen


def test_a_run_on_a_non_local_filesystem_writes_every_file_there(remote_run):
    top, metrics, _ = remote_run
    files = listing(top)
    for name in (*RunDir.FINISHED, "config.yaml", "history.csv", "metrics.json", "run_info.json", "best.keras",
                 "report.html", "plots/curves.png", "checkpoints/checkpoint", "checkpoints/ckpt-2.index"):
        assert name in files, name
    assert any(name.startswith("logs/train/events.out.tfevents") for name in files)
    assert not [name for name in files if STAGED_TAG in name]
    # What it wrote reads back: kcnn evaluate on the remote run gives training's own test figure.
    assert evaluate(top)["top1_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-9)


def test_no_file_on_the_non_local_filesystem_is_ever_visible_half_written(remote_run):
    top, _, seen = remote_run
    names = {name for name, *_ in seen}
    assert {"model.keras", "best.keras", "history.csv", "metrics.json", "report.html"} <= names
    for name, staged, whole, visible in seen:
        assert len(staged) == 1 and f"/.{name.rsplit('.', 1)[0]}-{STAGED_TAG}" in staged[0], (name, staged)
        assert all(whole), name
        if name == "model.keras":
            assert "model.keras" not in visible  # the final model appears only by its rename


def test_a_second_run_of_the_same_command_resumes_instead_of_starting_over(remote_run):
    top, metrics, _ = remote_run
    history = fs.read_text(f"{top}/history.csv")
    again = train(tiny(), top, verbose=False)
    assert fs.read_text(f"{top}/history.csv") == history  # no epoch trained again
    assert [s["start_epoch"] for s in RunDir(top).run_info()["sessions"]] == [0, 2]
    assert again["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-9)


def test_an_export_to_a_non_local_base_path_shows_saved_model_pb_only_once_the_version_is_whole(remote_run):
    """TF Serving loads a version by its saved_model.pb: every other file must be in place before it appears."""
    from serving import export as exporting

    top, _, _ = remote_run
    base = "ram://kcnn-tests/models/tiny"
    copies = []
    real = exporting.crash_point

    def snapshot(point):
        if point == "export_copy":
            copies.append(sorted(listing(f"{base}/1")) if tf.io.gfile.exists(f"{base}/1") else [])
        real(point)

    exporting.crash_point = snapshot
    try:
        result = exporting.export_run(top, base)
    finally:
        exporting.crash_point = real
    assert result.version == 1 and result.path == f"{base}/1"
    files = listing(f"{base}/1")
    assert {"saved_model.pb", "variables/variables.index", "assets.extra/tf_serving_warmup_requests"} <= files
    assert len(copies) == len(files) and all("saved_model.pb" not in seen for seen in copies)
    assert copies[-1] == sorted(files - {"saved_model.pb"})  # everything else was there before it
    assert {"serving_default", "predict_image_bytes"} <= set(exporting.signature_defs(result.path))
    with pytest.raises(ValueError, match=r"^--overwrite cannot replace a version atomically on ram://; export a "
                                         r"new version \(leave --version unset\)"):
        exporting.export_run(top, base, version=1, overwrite=True)
    # A version a killed export left without saved_model.pb is removed and written again by the same command.
    tf.io.gfile.remove(f"{base}/1/saved_model.pb")
    again = exporting.export_run(top, base)
    assert again.version == 1 and "saved_model.pb" in listing(f"{base}/1")


def test_tfrecord_globs_class_folders_and_segmentation_folders_read_from_a_non_local_filesystem():
    import numpy as np

    from pipelines.sources import load_source, write_tfrecords

    top = "ram://kcnn-tests/data"
    digits = load_source("digits", "test")
    write_tfrecords(digits, f"{top}/records", "test", shards=2)
    records = load_source(f"tfrecord:{top}/records/test-*.tfrecord", "test")
    assert (records.num_examples, records.class_names) == (digits.num_examples, digits.class_names)
    picture = tf.io.encode_png(np.full((8, 8, 3), 200, np.uint8)).numpy()
    mask = tf.io.encode_png(np.ones((8, 8, 1), np.uint8)).numpy()
    for split in ("train", "test"):  # split folders: ROOT/train/, ROOT/test/
        for name in ("cat", "dog"):
            for i in range(2):
                fs.atomic_write(f"{top}/pets/{split}/{name}/{i}.png", picture)
        for i in range(3):
            fs.atomic_write(f"{top}/scenes/{split}/images/{i}.png", picture)
            fs.atomic_write(f"{top}/scenes/{split}/masks/{i}.png", mask)
    folder = load_source(f"folder:{top}/pets", "test")
    assert (folder.num_examples, folder.class_names) == (4, ["cat", "dog"])
    scenes = load_source(f"folder:{top}/scenes", "test")
    assert scenes.num_examples == 3
