"""Damaged run directories (issue 29, item 5): each case resumes or stops with one line naming the file.

Damaged newest checkpoint: skipped for the one before it. Lost state file: rebuilt from the checkpoint
files. No checkpoint reads back: stop, never start over on top of the finished epochs. Damaged
best.keras or model.keras, an export onto a full disk, and training onto one (the same command then resumes):
one line each, no traceback.
"""

from __future__ import annotations

import csv
import errno
import logging
import os

import pytest
import tensorflow as tf
from tiny_run import tiny

from kcnn.cli import main
from pipelines.checkpoints import restore_newest
from pipelines.run_dir import RunDir
from pipelines.train import train

DATA = "ckpt-{}.data-00000-of-00001"


def history(run_dir):
    with open(os.path.join(run_dir, "history.csv"), newline="") as handle:
        return list(csv.DictReader(handle))


def truncate(path, size=16):
    with open(path, "r+b") as handle:
        handle.truncate(size)


def zero(path):
    size = os.path.getsize(path)
    with open(path, "wb") as handle:
        handle.write(bytes(size))


def warnings_of(caplog, logger="pipelines.checkpoints"):
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno >= logging.WARNING]


@pytest.mark.parametrize("damage, line", [
    (lambda c: truncate(os.path.join(c, DATA.format(2))), "ckpt-2.data-00000-of-00001 is damaged (Read less bytes "
                                                          "than requested)"),
    (lambda c: zero(os.path.join(c, "ckpt-2.index")), "ckpt-2.index is damaged (not an sstable (bad magic number))"),
], ids=["truncated data", "zeroed index"])
def test_a_damaged_newest_checkpoint_is_skipped_for_the_one_before_it(tiny_run, caplog, capsys, damage, line):
    run_dir, _ = tiny_run  # two epochs: ckpt-1 and ckpt-2
    checkpoints = os.path.join(run_dir, "checkpoints")
    before = history(run_dir)
    damage(checkpoints)
    metrics = train(tiny(), run_dir)
    assert warnings_of(caplog) == [f"skipped checkpoint {checkpoints}/ckpt-2: {line}"]
    assert f"resuming {run_dir} after epoch 1 of 2" in capsys.readouterr().out
    after = history(run_dir)
    assert after[0] == before[0] and [row["epoch"] for row in after] == ["1", "2"]  # epoch 1 kept, 2 trained again
    assert metrics["epochs_completed"] == 2


def test_a_lost_state_file_is_rebuilt_from_the_checkpoint_files(tiny_run, caplog, capsys):
    run_dir, _ = tiny_run
    checkpoints = os.path.join(run_dir, "checkpoints")
    before = history(run_dir)
    os.remove(os.path.join(checkpoints, "checkpoint"))
    train(tiny(), run_dir)
    assert warnings_of(caplog) == [f"{checkpoints}/checkpoint was missing; rebuilt it from ckpt-1, ckpt-2"]
    assert f"resuming {run_dir} after epoch 2 of 2" in capsys.readouterr().out  # not epoch 1 over again
    assert history(run_dir) == before
    state = tf.train.get_checkpoint_state(checkpoints)
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == ["ckpt-1", "ckpt-2"]
    assert os.path.basename(state.model_checkpoint_path) == "ckpt-2"


def test_no_checkpoint_that_reads_back_stops_in_one_line_and_changes_nothing(tiny_run, capsys):
    run_dir, _ = tiny_run
    checkpoints = os.path.join(run_dir, "checkpoints")
    truncate(os.path.join(checkpoints, "ckpt-2.index"))
    truncate(os.path.join(checkpoints, DATA.format(1)))
    before = history(run_dir), sorted(os.listdir(checkpoints))
    assert main(["train", os.path.join(run_dir, "config.yaml"), "--run-dir", run_dir]) == 2
    assert capsys.readouterr().err == (
        f"kcnn train: error: none of the checkpoints in {checkpoints} reads back (ckpt-2: ckpt-2.index is damaged "
        "(file is too short to be an sstable); ckpt-1: ckpt-1.data-00000-of-00001 is damaged (Read less bytes than "
        f"requested)), so {run_dir} cannot resume, and starting over would overwrite its finished epochs. Restore "
        f"the checkpoint files from a copy, or move {run_dir} aside (or pass another --run-dir) to start a new run\n")
    assert (history(run_dir), sorted(os.listdir(checkpoints))) == before


def test_a_checkpoint_without_a_newer_part_resumes_and_one_without_a_required_part_does_not(tmp_path, caplog):
    """A checkpoint written before the run's tf.train.Checkpoint gained ``step`` (preemption) still resumes."""
    directory = str(tmp_path)
    weights, epoch = tf.Variable([1.0, 2.0]), tf.Variable(3, dtype=tf.int64)
    tf.train.Checkpoint(model=weights, epoch=epoch).write(os.path.join(directory, "ckpt-3"))  # the older layout
    model, restored_epoch = tf.Variable([0.0, 0.0]), tf.Variable(0, dtype=tf.int64)
    step = tf.Variable(0, dtype=tf.int64)  # added since (pipelines/preemption.py)
    now = tf.train.Checkpoint(model=model, epoch=restored_epoch, step=step)
    assert restore_newest(now, directory, required=("model",), repair=False) == os.path.join(directory, "ckpt-3")
    assert model.numpy().tolist() == [1.0, 2.0] and int(restored_epoch.numpy()) == 3 and int(step.numpy()) == 0
    tf.train.Checkpoint(epoch=epoch).write(os.path.join(directory, "ckpt-4"))  # no model: not this run's
    assert restore_newest(now, directory, required=("model",), repair=False) == os.path.join(directory, "ckpt-3")
    assert warnings_of(caplog) == [f"skipped checkpoint {directory}/ckpt-4: it holds no model: it is not a "
                                   "checkpoint of this run"]


def test_the_rebuilt_state_file_lets_the_manager_delete_old_checkpoints(tmp_path):
    directory = str(tmp_path)
    counter = tf.Variable(0, dtype=tf.int64)
    checkpoint = tf.train.Checkpoint(epoch=counter)
    manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=5)
    for number in (1, 2, 3):
        counter.assign(number)
        manager.save(checkpoint_number=number)
    os.remove(os.path.join(directory, "checkpoint"))
    assert restore_newest(checkpoint, directory) == os.path.join(directory, "ckpt-3")
    manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=2)
    manager.save(checkpoint_number=4)
    assert sorted(name for name in os.listdir(directory) if name.endswith(".index")) == ["ckpt-3.index",
                                                                                          "ckpt-4.index"]


def test_a_damaged_best_keras_is_set_aside_and_the_run_finishes_with_its_last_weights(tiny_run, caplog):
    run_dir, _ = tiny_run
    best = os.path.join(run_dir, "best.keras")
    truncate(best, 1000)
    metrics = train(tiny(), run_dir, verbose=False)
    assert warnings_of(caplog) == [
        f"{best} is damaged (not a complete .keras zip archive: File is not a zip file); moved it to "
        f"{best}.damaged: the run ends with its last epoch's weights unless a later epoch beats the best "
        "validation figure so far"]
    assert os.path.exists(f"{best}.damaged") and metrics["epochs_completed"] == 2
    RunDir(run_dir).load_model()


def test_a_damaged_model_keras_is_one_line_with_the_command_that_writes_it_again(tiny_run, capsys):
    run_dir, _ = tiny_run
    model = os.path.join(run_dir, "model.keras")
    zero(model)
    assert main(["evaluate", run_dir]) == 2
    config = os.path.join(run_dir, "config.yaml")
    assert capsys.readouterr().err == (
        f"kcnn evaluate: error: {model} is damaged (not a complete .keras zip archive: File is not a zip file); "
        f"write it again with `kcnn train {config} --run-dir {run_dir}` (the run's checkpoints are in "
        f"{run_dir}/checkpoints)\n")
    assert main(["summary", "--model", model]) == 2
    assert capsys.readouterr().err == (f"kcnn summary: error: {model} is damaged (not a complete .keras zip "
                                       "archive: File is not a zip file)\n")
    assert main(["train", config, "--run-dir", run_dir]) == 0  # the command the line gives: it finishes again
    assert RunDir(run_dir).load_model().output_shape == (None, 10)


def _full_disk(kind, monkeypatch):
    """Make the SavedModel write fail as a full disk does, after leaving part of the version behind."""
    import serving.export as export

    def write(endpoints, model, path):
        with open(os.path.join(path, "saved_model.pb"), "wb") as handle:
            handle.write(b"part of it")
        if kind == "tensorflow":  # what TensorFlow's own writers raise (SaveV2, saved_model.pb)
            raise tf.errors.ResourceExhaustedError(None, None, f"{path}/saved_model.pb.tmp1; No space left on device")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.path.join(path, "saved_model.pb"))

    monkeypatch.setattr(export, "_write_saved_model", write)


@pytest.mark.parametrize("kind", ["tensorflow", "python"])
def test_an_export_onto_a_full_disk_is_one_line_and_leaves_no_partial_version(tiny_run, tmp_path, capsys,
                                                                              monkeypatch, kind):
    run_dir, _ = tiny_run
    base = str(tmp_path / "models" / "digits")
    _full_disk(kind, monkeypatch)
    assert main(["export", run_dir, "--base-path", base, "--no-fold-bn"]) == 2
    assert capsys.readouterr().err == (
        f"kcnn export: error: cannot export {base}/1: No space left on device in {base}; the partial version was "
        "removed, nothing was published. Free space there (or pass another --base-path) and export again\n")
    assert os.listdir(base) == []


def test_an_export_to_a_remote_base_path_onto_a_full_store_is_one_line(tiny_run, capsys, monkeypatch):
    run_dir, _ = tiny_run
    base = "ram://kcnn-tests/full-store/digits"

    def copy(source, target, overwrite=False):
        raise tf.errors.ResourceExhaustedError(None, None, f"{target}; No space left on device")

    monkeypatch.setattr(tf.io.gfile, "copy", copy)
    assert main(["export", run_dir, "--base-path", base, "--no-fold-bn"]) == 2
    assert capsys.readouterr().err == (
        f"kcnn export: error: cannot export {base}/1: No space left on device in {base}; the next export removes what "
        "was copied, nothing was published. Free space there (or pass another --base-path) and export again\n")


def _fill_the_disk_at_epoch_2(kind, monkeypatch, checkpoints):
    """Epoch 2's write fails as a full disk fails it (the messages as a 1.6 MB tmpfs gave them)."""
    if kind == "checkpoint":  # TensorFlow's SaveV2, part way into its staged files
        save = tf.train.CheckpointManager.save
        part = f"{checkpoints}/ckpt-2_temp/part-00000-of-00001.data-00000-of-00001.tempstate1991446214257652741"
        node = "{{function_node __wrapped__SaveV2_dtypes_27_device_/job:localhost/replica:0/task:0/device:CPU:0}}"

        def full(self, checkpoint_number=None, **kwargs):
            if checkpoint_number == 2:
                raise tf.errors.ResourceExhaustedError(None, None,
                                                       f"{node} {part}; No space left on device [Op:SaveV2]")
            return save(self, checkpoint_number=checkpoint_number, **kwargs)

        monkeypatch.setattr(tf.train.CheckpointManager, "save", full)
        return part
    from pipelines.run_dir import RunDir as Run  # Keras' zip writer: OSError 28 with no file name, on close

    save_model, saves = Run.save_model, []

    def full(self, model, name):
        saves.append(name)
        if len(saves) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save_model(self, model, name)

    monkeypatch.setattr(Run, "save_model", full)
    return None


@pytest.mark.parametrize("kind", ["checkpoint", "best.keras"])
def test_training_onto_a_full_disk_is_one_line_and_the_same_command_resumes(tmp_path, capsys, monkeypatch, kind):
    import yaml
    from tiny_run import TINY

    config, run_dir = str(tmp_path / "tiny.yaml"), str(tmp_path / "run")
    with open(config, "w") as handle:
        yaml.safe_dump({**TINY, "train": {**TINY["train"], "epochs": 3}}, handle)
    checkpoints = os.path.join(run_dir, "checkpoints")
    path = _fill_the_disk_at_epoch_2(kind, monkeypatch, checkpoints) or run_dir
    assert main(["train", config, "--run-dir", run_dir]) == 2
    assert capsys.readouterr().err == (
        f"kcnn train: error: No space left on device writing {path}; the run's checkpoint after epoch 1 is intact. "
        "Free space there (or pass another --run-dir) and run the same command again to continue\n")
    monkeypatch.undo()  # space freed
    assert main(["train", config, "--run-dir", run_dir]) == 0
    assert f"resuming {run_dir} after epoch 1 of 3" in capsys.readouterr().out
    assert [row["epoch"] for row in history(run_dir)] == ["1", "2", "3"]
    assert RunDir(run_dir).load_model().output_shape == (None, 10)
