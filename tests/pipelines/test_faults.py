"""SIGKILL at the worst moments, injected at the write itself (kcnn.faults), then the same command again.

The issue's faults: a kill while best.keras was written left a run no rerun could finish (BadZipFile);
checkpoint temp directories were never cleaned; `kcnn export --overwrite` deleted the old version before
renaming the new one in, so a kill between the two lost the version.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

from kcnn.faults import ENVIRONMENT
from kcnn.files import STAGED_TAG
from serving.export import RETIRED_PREFIX, STAGING_PREFIX, recover, versions

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["data.source=digits", "data.image_size=32", "data.channels=1", "data.batch_size=32", "model.name=lenet5",
        "optimizer.learning_rate=0.05", "train.epochs=3", "train.steps_per_epoch=3"]


def kcnn(args, crash=None, timeout=600):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO}
    env.pop(ENVIRONMENT, None)
    if crash:
        env[ENVIRONMENT] = crash
    return subprocess.run([sys.executable, "-m", "kcnn.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


def train_command(run_dir, config):
    return ["train", config, "--run-dir", run_dir, *sum((["--set", item] for item in TINY), [])]


def history_epochs(run_dir):
    with open(os.path.join(run_dir, "history.csv"), newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def staged_files(run_dir):
    return [os.path.join(root, name) for root, _, files in os.walk(run_dir) for name in files if STAGED_TAG in name]


@pytest.mark.slow
@pytest.mark.parametrize("crash", ["replace:best.keras@2", "checkpoint@2"])
def test_a_run_killed_mid_write_finishes_when_run_again(tmp_path, crash):
    run_dir = str(tmp_path / "run")
    config = os.path.join(REPO, "pipelines", "configs", "digits.yaml")
    killed = kcnn(train_command(run_dir, config), crash=crash)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    if crash.startswith("replace:"):
        assert staged_files(run_dir), "the kill should have left the half-written file behind"
    os.makedirs(os.path.join(run_dir, "checkpoints", "ckpt-9_temp"), exist_ok=True)  # what a kill in TF's saver leaves
    finished = kcnn(train_command(run_dir, config))
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert history_epochs(run_dir) == [1, 2, 3]
    assert staged_files(run_dir) == []
    assert not os.path.exists(os.path.join(run_dir, "checkpoints", "ckpt-9_temp"))
    keras.saving.load_model(os.path.join(run_dir, "best.keras"), safe_mode=True)
    keras.saving.load_model(os.path.join(run_dir, "model.keras"), safe_mode=True)


@pytest.mark.slow
def test_sigterm_mid_epoch_saves_the_step_exits_42_and_the_rerun_continues_from_that_step(tmp_path):
    """A preempted worker gets SIGTERM, then SIGKILL after the grace period (Kubernetes' pod termination).

    The model has dropout (digits.yaml's head); the data is shuffled each epoch.
    The 5th step of a 3-step-epoch run is epoch 2's second: the rerun continues there, not after epoch 1.
    Exit code 42 is TensorFlow's PreemptionCheckpointHandler's, which serving/deploy/train-gke.yaml's
    podFailurePolicy does not count as a failure.
    """
    import tensorflow as tf

    run_dir = str(tmp_path / "run")
    config = os.path.join(REPO, "pipelines", "configs", "digits.yaml")
    stopped = kcnn(train_command(run_dir, config), crash="train_step@5:TERM")
    assert stopped.returncode == 42, stopped.stderr[-3000:]
    saved = os.path.join(run_dir, "checkpoints", "interrupted", "ckpt")
    assert stopped.stderr.strip().splitlines()[-1] == (
        f"kcnn train: stopped by SIGTERM in epoch 2/3 after step 2 of 3; saved {saved}. Run the same command "
        "again to continue from that step (exit code 42)")
    reader = tf.train.load_checkpoint(saved)
    assert int(reader.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE")) == 1  # epochs finished
    assert int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) == 2  # steps of epoch 2 done
    assert int(reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE")) == 5
    assert history_epochs(run_dir) == [1]
    finished = kcnn(train_command(run_dir, config))
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert f"resuming {run_dir} in epoch 2 of 3 after step 2 of 3 (saved when it was preempted)" in finished.stdout
    assert history_epochs(run_dir) == [1, 2, 3]
    assert not os.path.exists(os.path.dirname(saved))  # dropped once epoch 2 was checkpointed whole
    final = tf.train.load_checkpoint(os.path.join(run_dir, "checkpoints", "ckpt-3"))
    assert int(final.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE")) == 9  # no step run twice
    # The resumed epoch replays the uninterrupted run's shuffle and dropout masks: the same final weights.
    plain = str(tmp_path / "uninterrupted")
    assert kcnn(train_command(plain, config)).returncode == 0
    resumed, uninterrupted = (keras.saving.load_model(os.path.join(d, "model.keras"), safe_mode=True)
                              for d in (run_dir, plain))
    assert any(isinstance(layer, keras.layers.Dropout) for layer in resumed._flatten_layers())
    for a, b in zip(resumed.get_weights(), uninterrupted.get_weights()):
        np.testing.assert_array_equal(a, b)


def _exported_run(tmp_path):
    from tests.serving.serving_helpers import exported

    base = str(tmp_path / "models" / "m")
    exported(base, seed=0, version=1)
    return base


def _fingerprint(base):
    with open(os.path.join(base, "1", "saved_model.pb"), "rb") as handle:
        return hash(handle.read())


@pytest.mark.slow
@pytest.mark.parametrize("crash", ["export_before_swap", "export_after_exchange", "export_mid_swap"])
def test_an_overwrite_killed_at_any_point_leaves_a_whole_version_in_place(tmp_path, crash):
    """On Linux the old and the new version swap in one renameat2(RENAME_EXCHANGE), so a server polling the base
    path always finds version 1 (issue 28: no moment without a servable version); export_mid_swap is the
    two-rename fallback for systems without the exchange, where recover() restores the set-aside copy."""
    base = _exported_run(tmp_path)
    old = _fingerprint(base)
    fallback = "import serving.export as e; e.exchange = lambda a, b: False; " if crash == "export_mid_swap" else ""
    script = ("import sys, keras, kcnn; from tests.serving.serving_helpers import CLASSES, SPEC; " + fallback +
              "from serving.export import export; keras.utils.set_random_seed(5); "
              "m = kcnn.build('lenet5', num_classes=3, input_shape=(32, 32, 3)); "
              "export(m, sys.argv[1], class_names=CLASSES, preprocessing=SPEC, version=1, overwrite=True)")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO, ENVIRONMENT: crash}
    killed = subprocess.run([sys.executable, "-c", script, base], capture_output=True, text=True, env=env,
                            timeout=600, cwd=REPO)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    leftovers = [name for name in os.listdir(base) if name.startswith((STAGING_PREFIX, RETIRED_PREFIX))]
    assert leftovers
    if crash == "export_mid_swap":
        assert versions(base) == []  # the fallback, between its two renames: only the set-aside copy exists
    else:
        assert versions(base) == [1]  # what a polling server sees at the kill: a whole version
        assert (_fingerprint(base) == old) == (crash == "export_before_swap")  # after the exchange: the new one
    new = _fingerprint(base) if crash == "export_after_exchange" else old
    done = recover(base)
    assert versions(base) == [1] and _fingerprint(base) == new  # whole, and the old copy cleaned up
    assert any("removed .kcnn-export-1-" in line for line in done)  # the dead process's staging directory
    assert any("restored version 1" in line for line in done) == (crash == "export_mid_swap")
    assert [n for n in os.listdir(base) if n.startswith(".")] == []
    assert oct(os.stat(os.path.join(base, "1")).st_mode & 0o777) == "0o755"
    env.pop(ENVIRONMENT)
    done = subprocess.run([sys.executable, "-c", script, base], capture_output=True, text=True, env=env,
                          timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert versions(base) == [1] and _fingerprint(base) != old  # the new one, in place
