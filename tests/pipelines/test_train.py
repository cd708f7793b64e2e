"""Training: a complete run directory, precision, schedules, divergence, early stopping, resume, two workers."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
from tiny_run import TINY, tiny

from pipelines import config as C
from pipelines.evaluate import evaluate
from pipelines.optim import WarmupSchedule
from pipelines.train import TrainingDiverged, train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read_history(run_dir):
    with open(os.path.join(run_dir, "history.csv"), newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_run_leaves_a_complete_run_directory(tiny_run):
    run_dir, metrics = tiny_run  # train(tiny(), run_dir), shared with the other run-directory tests
    for name in ("config.yaml", "history.csv", "metrics.json", "model.keras", "best.keras", "class_names.json",
                 "preprocessing.json", "run_info.json", "report.html", "plots/curves.png", "plots/learning_rate.png",
                 "plots/confusion_matrix.png"):
        assert os.path.exists(os.path.join(run_dir, name)), name
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(run_dir, "logs", "train")))
    with open(os.path.join(run_dir, "metrics.json")) as handle:
        written = json.load(handle)
    assert written == pytest.approx(metrics)
    for key in ("test_accuracy", "test_top5_accuracy", "val_accuracy", "epochs_completed", "train_images_per_second",
                "precision_policy", "strategy"):
        assert key in written
    assert written["epochs_completed"] == 2 and written["precision_policy"] == "float32"
    assert written["strategy"] == "default" and 0.0 <= written["test_accuracy"] <= 1.0
    assert [int(r["epoch"]) for r in read_history(run_dir)] == [1, 2]
    model = keras.saving.load_model(os.path.join(run_dir, "model.keras"), safe_mode=True)
    assert model.output_shape == (None, 10)
    result = evaluate(run_dir)
    assert result["top1_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert sum(row["support"] for row in result["per_class"]) == 360
    with pytest.warns(UserWarning, match=r"this run's augmentation \('none'\) never mirrored images"):
        ten = evaluate(run_dir, tta="ten_crop")
    assert ten["examples"] == 360 and ten["tta_flip"] is True
    assert os.path.exists(os.path.join(run_dir, "plots", "confusion_matrix_ten_crop.png"))
    five = evaluate(run_dir, tta="ten_crop", flip=False)  # no mirrored views, no warning
    assert five["tta_flip"] is False and os.path.exists(os.path.join(run_dir, "evaluation_ten_crop_noflip.json"))


def test_run_info_records_the_dates_and_versions_of_the_session(tiny_run):
    import platform

    import tensorflow as tf

    import kcnn

    run_dir, _ = tiny_run
    with open(os.path.join(run_dir, "run_info.json")) as handle:
        info = json.load(handle)
    (session,) = info["sessions"]
    assert session["start_epoch"] == 0 and session["started_utc"] <= info["finished_utc"]
    assert session["started_utc"].endswith("+00:00")  # UTC
    assert session["versions"] == {"kcnn": kcnn.__version__, "keras": keras.__version__,
                                   "tensorflow": tf.__version__, "python": platform.python_version()}


@pytest.mark.slow
def test_kcnn_train_prints_the_pruning_schedule_the_unfreezing_epoch_and_the_report_path(tmp_path, capsys):
    from kcnn.cli import main

    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(TINY))  # JSON is YAML
    run_dir = tmp_path / "run"
    assert main(["train", str(config), "--run-dir", str(run_dir), "--set", "train.epochs=2",
                 "--set", "train.steps_per_epoch=1", "--set", "model.freeze=backbone",
                 "--set", "train.unfreeze_at_epoch=1", "--set", "train.unfreeze_learning_rate=0.02",
                 "--set", "train.prune_density=0.5", "--set", "train.prune_end_epoch=1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    pruning = ("pruning gradually to density 0.5 (50% of the weights kept) in every Conv2D and Dense layer: from "
               "density 1 at the start of epoch 1 to the target by the end of epoch 1 (Zhu and Gupta's cubic "
               "schedule), then held")
    unfreezing = ("epoch 2/2: fine-tuning stage two: unfreezing the backbone (model.freeze: backbone; batch-norm "
                  "layers stay frozen); learning rate now 0.02")
    assert lines[0] == pruning
    assert lines[1].startswith("epoch 1/2: loss") and lines[2] == unfreezing and lines[3].startswith("epoch 2/2: loss")
    assert lines[-1] == f"wrote the run report {run_dir / 'report.html'}" and (run_dir / "report.html").exists()
    with open(run_dir / "report.html", encoding="utf-8") as handle:
        page = handle.read()
    assert "unfreeze_learning_rate: 0.02" in page  # the resolved config.yaml, the --set overrides applied
    assert "gradually to density 0.5 (50% of the weights kept)" in page  # the report's pruning row


def test_a_run_directory_refuses_a_different_config(tiny_run):
    run_dir, _ = tiny_run  # trained with tiny()
    before = sorted(os.listdir(run_dir))
    with pytest.raises(ValueError, match="holds a run with a different config"):
        train(tiny("optimizer.learning_rate=0.01"), run_dir, verbose=False)
    assert sorted(os.listdir(run_dir)) == before


def test_a_checkpoint_its_state_file_does_not_list_yet_is_resumed_and_an_unreadable_one_skipped(tiny_run, capsys):
    """tf.train.CheckpointManager writes ckpt-N, then the ``checkpoint`` state file: a kill between the two
    leaves a newer checkpoint the state file does not name. The run resumes from it; one that does not read
    back is skipped for the one before it."""
    run_dir, _ = tiny_run  # two epochs: ckpt-1 and ckpt-2
    checkpoints = os.path.join(run_dir, "checkpoints")
    os.remove(os.path.join(checkpoints, "checkpoint"))  # as if killed before ckpt-1's state was recorded
    train(tiny(), run_dir)
    out = capsys.readouterr().out
    assert f"resuming {run_dir} after epoch 2 of 2" in out
    assert out.splitlines()[-1] == f"wrote the run report {os.path.join(run_dir, 'report.html')}"
    assert [int(r["epoch"]) for r in read_history(run_dir)] == [1, 2]
    (data,) = [name for name in os.listdir(checkpoints) if name.startswith("ckpt-2.data")]
    with open(os.path.join(checkpoints, data), "r+b") as handle:
        handle.truncate(16)  # half written
    metrics = train(tiny(), run_dir)
    assert f"resuming {run_dir} after epoch 1 of 2" in capsys.readouterr().out
    assert metrics["epochs_completed"] == 2 and [int(r["epoch"]) for r in read_history(run_dir)] == [1, 2]
    with open(os.path.join(run_dir, "run_info.json")) as handle:
        info = json.load(handle)
    assert [session["start_epoch"] for session in info["sessions"]] == [0, 2, 1] and info["finished_utc"]


def test_a_start_that_fails_leaves_no_run_directory_and_the_corrected_run_starts(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(ValueError, match="unknown source 'digitz'"):
        train(tiny("data.source=digitz"), str(run_dir), verbose=False)
    assert not run_dir.exists()
    with pytest.raises(ValueError, match="data.batch_size 4096 is larger than the 1257 training images"):
        train(tiny("data.batch_size=4096"), str(run_dir), verbose=False)
    assert not run_dir.exists()
    metrics = train(tiny("train.epochs=1", "train.steps_per_epoch=1"), str(run_dir), verbose=False)
    assert metrics["epochs_completed"] == 1 and (run_dir / "config.yaml").exists()


def test_mixed_bfloat16_trains_on_cpu_with_finite_loss_and_float32_outputs(tmp_path):
    run_dir = str(tmp_path / "bf16")
    metrics = train(tiny("train.precision=mixed_bfloat16", "train.epochs=1", "model.name=squeezenet1_1",
                         "data.channels=3"), run_dir, verbose=False)
    assert metrics["precision_policy"] == "mixed_bfloat16"
    loss = float(read_history(run_dir)[0]["loss"])
    assert np.isfinite(loss)
    assert keras.config.dtype_policy().name == "float32"  # restored after the run
    model = keras.saving.load_model(os.path.join(run_dir, "model.keras"), safe_mode=True)
    assert any(layer.compute_dtype == "bfloat16" for layer in model.layers)
    outputs = model.predict(np.zeros((1, 32, 32, 3), np.float32), verbose=0)
    assert outputs.dtype == np.float32 and np.all(np.isfinite(outputs))


def test_schedules_warm_up_then_decay():
    cosine = WarmupSchedule(0.1, total_steps=110, warmup_steps=10, kind="cosine")
    assert float(cosine(0)) == pytest.approx(0.01)  # (step + 1) / warm-up steps of the peak
    assert float(cosine(9)) == pytest.approx(0.1)
    assert float(cosine(60)) == pytest.approx(0.05)  # half-way through the cosine
    assert float(cosine(110)) == pytest.approx(0.0, abs=1e-9)
    step = WarmupSchedule(0.1, total_steps=100, kind="step", boundaries=[30, 60], factor=0.1)
    assert [float(step(s)) for s in (0, 29, 30, 60)] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    restored = WarmupSchedule.from_config(cosine.get_config())
    assert float(restored(60)) == pytest.approx(0.05)


class PoisonWeights(keras.callbacks.Callback):
    """Make the next step's loss NaN at the start of the second epoch, as a divergence would."""

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            kernel = self.model.get_layer("logits").kernel
            kernel.assign(np.full(kernel.shape, np.nan, np.float32))


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path):
    run_dir = str(tmp_path / "nan")
    with pytest.raises(TrainingDiverged) as error:
        train(tiny("train.epochs=3"), run_dir, callbacks=[PoisonWeights()], verbose=False)
    message = str(error.value)
    assert message.startswith("loss became nan at epoch 2, step 1; stopped.")
    assert "after epoch 1" in message and "Lower optimizer.learning_rate" in message
    assert [int(r["epoch"]) for r in read_history(run_dir)] == [1]
    checkpoints = sorted(f for f in os.listdir(os.path.join(run_dir, "checkpoints")) if f.endswith(".index"))
    assert checkpoints == ["ckpt-1.index"]


def test_early_stopping_and_user_callbacks_see_every_epoch(tmp_path):
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((epoch, sorted(logs)))

    metrics = train(tiny("train.epochs=6", "optimizer.learning_rate=1e-9", "train.early_stopping_patience=1"),
                    str(tmp_path / "early"), callbacks=[Record()], verbose=False)
    assert metrics["epochs_completed"] == 2  # no improvement after the first epoch: stop after the second
    assert [epoch for epoch, _ in seen] == [0, 1]
    assert "val_accuracy" in seen[0][1] and "loss" in seen[0][1]


def kcnn_command(*args):
    return [sys.executable, "-m", "kcnn.cli", *args]


@pytest.mark.slow
def test_killed_mid_run_resumes_and_ends_with_the_same_number_of_epochs(tmp_path):
    config = tmp_path / "resume.yaml"
    config.write_text(textwrap.dedent("""
        data: {source: digits, image_size: 32, channels: 1, batch_size: 16}
        model: {name: lenet5}
        optimizer: {name: sgd, learning_rate: 0.05}
        train: {epochs: 4}
    """))
    run_dir = tmp_path / "run"
    command = kcnn_command("train", str(config), "--run-dir", str(run_dir))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    first_checkpoint = run_dir / "checkpoints" / "ckpt-1.index"
    deadline = time.time() + 240
    while not first_checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert first_checkpoint.exists(), process.communicate()[0][-2000:]
    process.send_signal(signal.SIGKILL)  # mid-run, as a crash or a pre-empted machine would
    process.wait()
    completed = [int(r["epoch"]) for r in read_history(run_dir)]
    assert 1 <= len(completed) < 4
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"resuming {run_dir} after epoch {len(completed)} of 4" in result.stdout
    assert [int(r["epoch"]) for r in read_history(run_dir)] == [1, 2, 3, 4]
    with open(run_dir / "metrics.json") as handle:
        assert json.load(handle)["epochs_completed"] == 4


RECIPES = os.path.join(os.path.dirname(C.__file__), "configs")
QUICK = ["train.epochs=1", "train.steps_per_epoch=1", "train.precision=float32", "data.batch_size=4",
         "train.precise_bn_batches=1"]


@pytest.mark.slow
def test_cifar10_recipe_runs_a_step_on_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=8):
        cifar = C.load(os.path.join(RECIPES, "cifar10_mobilenet_v2.yaml"), QUICK + [f"data.data_dir={tmp_path}"])
        metrics = train(cifar, str(tmp_path / "cifar"), verbose=False)
    assert metrics["epochs_completed"] == 1 and metrics["num_classes"] == 10


@pytest.mark.slow
def test_imagenet_recipe_runs_a_step_on_generated_tfrecords(tmp_path):
    from pipelines import sources

    records = tmp_path / "records"
    for split in ("train", "validation"):
        sources.write_tfrecords(sources.shapes_source(split), str(records), split, shards=2)
    imagenet = C.load(os.path.join(RECIPES, "imagenet_resnet50.yaml"),
                      QUICK + ["data.image_size=32", f"data.source=tfrecord:{records}/{{split}}-*.tfrecord"])
    metrics = train(imagenet, str(tmp_path / "imagenet"), verbose=False)
    assert metrics["strategy"] == "mirrored" and metrics["num_classes"] == 3


@pytest.mark.parametrize("name, cls", [("sgd", "SGD"), ("adamw", "AdamW"), ("rmsprop", "RMSprop")])
def test_optimizer_config_reaches_the_keras_optimizer(name, cls):
    from pipelines.optim import effective_learning_rate, make_optimizer

    cfg = C.from_dict({"optimizer": {"name": name, "learning_rate": 0.2, "nesterov": True, "weight_decay": 0.01,
                                     "ema": 0.999, "clip_norm": 1.5, "lr_scaling": "linear",
                                     "base_batch_size": 256}}).optimizer
    optimizer = make_optimizer(cfg, steps_per_epoch=10, epochs=3, global_batch=512)
    assert type(optimizer).__name__ == cls
    assert optimizer.weight_decay == pytest.approx(0.01) and optimizer.global_clipnorm == pytest.approx(1.5)
    assert optimizer.use_ema and optimizer.ema_momentum == pytest.approx(0.999)
    assert effective_learning_rate(cfg, 512) == pytest.approx(0.4)  # linear scaling: 0.2 * 512 / 256
    assert float(optimizer.learning_rate) == pytest.approx(0.4)  # cosine schedule at step 0
    if name == "sgd":
        assert optimizer.nesterov
