"""Batch-norm statistics in training: precise BN, pooled replica statistics, sync BN, workers that agree."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipelines import config as C
from pipelines.batchnorm import BatchNormStatistics, batch_norm_layers
from pipelines.data import load_dataset
from pipelines.distributed_eval import DistributedEvaluator
from pipelines.evaluate import evaluate
from pipelines.train import train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TINY_MODEL = textwrap.dedent("""
    def tiny_model():
        keras.utils.set_random_seed(1)
        inputs = keras.Input((6, 6, 3))
        x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(inputs)
        x = keras.layers.BatchNormalization(name="bn1")(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.Conv2D(5, 3, padding="same", name="conv2")(x)
        x = keras.layers.BatchNormalization(name="bn2")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="logits")(x))


    def shifted_batches(count=5, size=8):
        # Batch b is offset by b, so the batches' means differ and the pooled variance exceeds their average.
        rng = np.random.default_rng(0)
        images = np.concatenate([rng.normal(b, 1.0, (size, 6, 6, 3)) for b in range(count)]).astype(np.float32)
        labels = rng.integers(0, 3, len(images))
        return images, labels
""")
exec(TINY_MODEL)  # the same model and data in this process and in the two-device subprocess below


def population(outputs: list) -> tuple:
    values = np.concatenate([np.asarray(o, np.float64) for o in outputs]).reshape(-1, np.shape(outputs[0])[-1])
    return values.mean(axis=0), values.var(axis=0)


def test_precise_bn_sets_population_statistics_and_changes_no_trainable_weight():
    model = tiny_model()  # noqa: F821 - defined by exec above
    images, labels = shifted_batches()  # noqa: F821
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    conv1 = keras.Model(model.inputs, model.get_layer("conv1").output)
    conv2 = keras.Model(model.inputs, model.get_layer("conv2").output)
    batches = [b for b, _ in dataset]
    # bn1 sees conv1's outputs; bn2 sees conv2's outputs with bn1 normalising by each batch's statistics.
    expected = {"bn1": population([conv1(b) for b in batches]),
                "bn2": population([conv2(b, training=True) for b in batches])}
    trainable = [v.numpy().copy() for v in model.trainable_variables]

    statistics = BatchNormStatistics(model, tf.distribute.get_strategy(), dataset, batches=5)
    assert [layer.name for layer in statistics.layers] == ["bn1", "bn2"]
    assert statistics.refresh() == "precise batch norm over 5 batches"

    for name, (mean, variance) in expected.items():
        layer = model.get_layer(name)
        np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(layer.moving_variance.numpy(), variance, rtol=1e-4, atol=1e-5)
        assert layer.momentum == 0.99  # restored after the pass
    # The variance is the population's, not the average of the batches' variances (smaller here).
    per_batch = np.mean([np.var(np.asarray(conv1(b)).reshape(-1, 4), axis=0) for b in batches], axis=0)
    assert np.max(model.get_layer("bn1").moving_variance.numpy() / per_batch) > 1.2
    for before, after in zip(trainable, model.trainable_variables):
        np.testing.assert_array_equal(before, after.numpy())
    assert BatchNormStatistics(model, tf.distribute.get_strategy(), dataset, batches=2).recompute() == 2


def test_frozen_batch_norm_keeps_its_statistics_and_no_batch_norm_is_a_no_op():
    model = tiny_model()  # noqa: F821
    model.get_layer("bn1").trainable = False
    assert [layer.name for layer in batch_norm_layers(model)] == ["bn2"]
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert BatchNormStatistics(plain, tf.distribute.get_strategy(), None, batches=4).refresh() == "no batch norm"


TWO_DEVICES = TINY_MODEL + textwrap.dedent("""
    import json
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from pipelines.batchnorm import BatchNormStatistics

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    images, labels = shifted_batches()
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    with strategy.scope():
        model = tiny_model()
    bn1 = model.get_layer("bn1")

    def per_replica(variable):
        values = strategy.run(tf.function(lambda: tf.identity(variable.value)))
        return [v.numpy().tolist() for v in strategy.experimental_local_results(values)]

    @tf.function
    def diverge():
        def set_stats():
            replica = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.float32)
            bn1.moving_mean.assign(tf.fill([4], 2.0 * replica))
            bn1.moving_variance.assign(tf.fill([4], 1.0 + replica))
        strategy.run(set_stats)

    diverge()
    out = {"diverged": per_replica(bn1.moving_mean)}
    pooled = BatchNormStatistics(model, strategy, strategy.experimental_distribute_dataset(dataset), batches=0)
    out["all_reduce"] = pooled.refresh()
    out["mean"], out["variance"] = per_replica(bn1.moving_mean), per_replica(bn1.moving_variance)

    precise = BatchNormStatistics(model, strategy, strategy.experimental_distribute_dataset(dataset), batches=5,
                                  sync=True)
    out["synchronized"] = [layer.synchronized for layer in model.layers
                           if isinstance(layer, keras.layers.BatchNormalization)]
    out["precise"] = precise.refresh()
    out["replicas"] = {name: [per_replica(model.get_layer(name).moving_mean),
                              per_replica(model.get_layer(name).moving_variance)] for name in ("bn1", "bn2")}
    single = tiny_model()
    single.set_weights(model.get_weights())
    BatchNormStatistics(single, tf.distribute.get_strategy(), dataset, batches=5).refresh()
    out["single"] = {name: [single.get_layer(name).moving_mean.numpy().tolist(),
                            single.get_layer(name).moving_variance.numpy().tolist()] for name in ("bn1", "bn2")}
    precise.release()
    out["released"] = [layer.synchronized for layer in model.layers
                       if isinstance(layer, keras.layers.BatchNormalization)]
    print("OUT", json.dumps(out))
""")


def test_two_replicas_pool_their_statistics_and_sync_bn_precise_bn_equals_one_device():
    result = subprocess.run([sys.executable, "-c", TWO_DEVICES], capture_output=True, text=True, timeout=300,
                            cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO})
    lines = [line for line in result.stdout.splitlines() if line.startswith("OUT ")]
    assert lines, result.stdout[-2000:] + result.stderr[-3000:]
    out = json.loads(lines[0][4:])
    assert out["diverged"] == [[0.0] * 4, [2.0] * 4]  # each replica held its own statistics
    assert out["all_reduce"] == "moving statistics averaged over 2 replicas"
    # Pooled: mean (0 + 2) / 2 = 1; variance E[var + mean^2] - mean^2 = ((1 + 0) + (2 + 4)) / 2 - 1 = 2.5.
    assert out["mean"] == [[1.0] * 4, [1.0] * 4]
    np.testing.assert_allclose(out["variance"], [[2.5] * 4, [2.5] * 4], rtol=1e-6)
    assert out["synchronized"] == [True, True] and out["released"] == [False, False]
    assert out["precise"] == "precise batch norm over 5 batches"
    for name in ("bn1", "bn2"):
        replica0, replica1 = (np.array([stat[r] for stat in out["replicas"][name]]) for r in (0, 1))
        np.testing.assert_array_equal(replica0, replica1)
        # With synchronized batch statistics, bn2's inputs are what one device computes on the whole batch.
        np.testing.assert_allclose(replica0, np.array(out["single"][name]), rtol=1e-4, atol=1e-5)


def small_bn_config(*overrides):
    return C.from_dict({"data": {"source": "digits", "image_size": 32, "channels": 1, "batch_size": 32},
                        "model": {"name": "resnet18", "head": "fully_conv"},
                        "optimizer": {"name": "sgd", "learning_rate": 0.05, "nesterov": True},
                        "train": {"epochs": 1, "steps_per_epoch": 12, "precision": "float32"}}, list(overrides))


@pytest.mark.slow
def test_the_model_evaluated_after_one_epoch_agrees_with_it_after_statistics_re_estimation(tmp_path):
    """ResNet-18 after 12 steps: the epoch's validation figure is the one of statistics from every training image."""
    run_dir = str(tmp_path / "run")
    config = small_bn_config("train.precise_bn_batches=12")
    train(config, run_dir, verbose=False)
    with open(os.path.join(run_dir, "history.csv"), newline="") as handle:
        logged = float(next(csv.DictReader(handle))["val_accuracy"])
    model = keras.saving.load_model(os.path.join(run_dir, "model.keras"), safe_mode=True)
    trainable = [v.numpy().copy() for v in model.trainable_variables]
    common = dict(image_size=32, batch_size=32, channels=1)
    strategy = tf.distribute.get_strategy()
    training, _ = load_dataset("digits", "train", augment="none", seed=1, **common)
    every_batch = sum(1 for _ in training)
    assert every_batch * 32 >= 1257 - 31  # every training image, but for a last partial batch
    statistics = BatchNormStatistics(model, strategy, training, batches=1000)
    assert statistics.refresh() == f"precise batch norm over {every_batch} batches"
    re_estimated = DistributedEvaluator(model, strategy)(load_dataset("digits", "validation", **common)[0])["accuracy"]
    assert re_estimated >= 0.3  # it has learnt something (chance: 0.1), so agreeing is not trivial
    assert abs(logged - re_estimated) <= 0.04, (logged, re_estimated)
    for before, after in zip(trainable, model.trainable_variables):
        np.testing.assert_array_equal(before, after.numpy())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# A worker as the cluster jobs start one: kcnn's CLI with the container's argv (kcnn.cli.main), plus a callback that
# prints each epoch's logs and saves the worker's final weights, so the test can compare the workers.
WORKER = textwrap.dedent("""
    import json, sys
    import keras
    import pipelines.train as training
    from kcnn.cli import main

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            print("EPOCH", json.dumps({k: float(v) for k, v in logs.items()}), flush=True)

        def on_train_end(self, logs=None):
            self.model.save_weights(sys.argv[1])

    train = training.train

    def recorded(config, run_dir=None, **options):
        metrics = train(config, run_dir, callbacks=[Record()], verbose=False)
        print("METRICS", json.dumps(metrics), flush=True)
        return metrics

    training.train = recorded
    sys.exit(main(json.loads(sys.argv[2])))
""")
# The manifests' digits recipe made small: a quarter-width MobileNet with synchronised batch norm, 2 x 3 steps.
SMALL = ["data.image_size=32", "model.name=mobilenet_v1", "model.backbone_kwargs={width: 0.25}",
         "optimizer.learning_rate=0.1", "optimizer.warmup_epochs=0", "train.epochs=2", "train.steps_per_epoch=3",
         "train.precise_bn_batches=2", "train.sync_bn=true", "train.precision=float32"]


def platform_workers(platform: str, run_dir: str):
    """Each worker's TF_CONFIG and argv as serving/deploy's Kubernetes Job or Vertex AI CustomJob starts it.

    Their hosts are mapped to local ports; the chief (Vertex's pool 0, the Job's index 0) comes first.
    """
    from serving import deploy_manifests as manifests

    if platform == "gke":
        configs = [manifests.gke_tf_config(i) for i in range(2)]
        argvs = [manifests.gke_train_argv(run_dir=run_dir)] * 2
    else:
        configs = [manifests.vertex_tf_config(0, 0), manifests.vertex_tf_config(1, 0)]
        argvs = [manifests.vertex_train_argv(pool=pool, run_dir=run_dir) for pool in (0, 1)]
    local = {host: f"127.0.0.1:{free_port()}" for host in manifests.cluster_hosts(configs[0])}
    configs = [{**c, "cluster": {k: [local[h] for h in hosts] for k, hosts in c["cluster"].items()}} for c in configs]
    return [(c, [*argv, *sum((["--set", item] for item in SMALL), [])]) for c, argv in zip(configs, argvs)]


@pytest.mark.slow
@pytest.mark.parametrize("platform", ["gke", "vertex"])
def test_two_local_workers_started_as_the_cluster_jobs_train_one_model_and_only_the_chief_writes(tmp_path, platform):
    """serving/deploy/train-gke.yaml (two workers, worker 0 the chief) and train-vertex.yaml (Vertex's TF_CONFIG:
    a "chief" task and a "worker" task, plus "environment": "cloud"), each run on 127.0.0.1."""
    run_dir = tmp_path / "run"
    workers = platform_workers(platform, str(run_dir))

    def start(crash_on_worker_1=None):
        processes = []
        for index, (tf_config, argv) in enumerate(workers):
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO, "TF_CONFIG": json.dumps(tf_config)}
            env.pop("KCNN_CRASH_AT", None)
            if index == 1 and crash_on_worker_1:
                env["KCNN_CRASH_AT"] = crash_on_worker_1
            weights = str(tmp_path / f"worker{index}.weights.h5")
            processes.append(subprocess.Popen([sys.executable, "-c", WORKER, weights, json.dumps(argv)],
                                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                              cwd=REPO))
        outputs = []
        for process in processes:
            try:
                outputs.append(process.communicate(timeout=300)[0])
            except subprocess.TimeoutExpired:
                for p in processes:
                    p.kill()
                raise
        return [(process.returncode, output) for process, output in zip(processes, outputs)]

    sessions = []
    if platform == "gke":
        # A node drain: only worker 1 gets SIGTERM, at epoch 2's first step. Both save that step and exit 42 (the
        # stop rides on the step's all-reduce), and the Job's replacement pods continue from it.
        sessions.append(start(crash_on_worker_1="train_step@4:TERM"))
        for code, output in sessions[0]:
            assert code == 42, output[-3000:]
            assert "stopped by SIGTERM in epoch 2/2 after step 1 of 3" in output
    sessions.append(start())
    logs, metrics = [[], []], []
    for session in sessions:
        for index, (code, output) in enumerate(session):
            lines = output.splitlines()
            logs[index] += [json.loads(line[6:]) for line in lines if line.startswith("EPOCH ")]
    for code, output in sessions[-1]:
        assert code == 0, output[-3000:]
        metrics.append([json.loads(line[8:]) for line in output.splitlines() if line.startswith("METRICS ")][0])
    assert len(logs[0]) == len(logs[1]) == 2
    final = tf.train.load_checkpoint(str(run_dir / "checkpoints" / "ckpt-2"))
    assert int(final.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE")) == 6  # no step trained twice
    assert [(m["strategy"], m["replicas"]) for m in metrics] == [("multi_worker", 2)] * 2
    # The workers trained one model together: identical weights at the end.
    weights = []
    for index in range(2):
        model = keras.saving.load_model(str(run_dir / "model.keras"), safe_mode=True)
        model.load_weights(str(tmp_path / f"worker{index}.weights.h5"))
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
    # Only the chief (worker 0) writes the run directory.
    with open(run_dir / "history.csv", newline="") as handle:
        assert [int(row["epoch"]) for row in csv.DictReader(handle)] == [1, 2]
    for chief_epoch, worker_epoch in zip(*logs):
        for key in ("loss", "val_loss", "val_accuracy", "val_top5_accuracy"):
            assert worker_epoch[key] == pytest.approx(chief_epoch[key], rel=1e-6), key
    for key in ("test_accuracy", "test_top5_accuracy", "test_loss"):
        assert metrics[1][key] == pytest.approx(metrics[0][key], rel=1e-6), key
    # The chief's model.keras, evaluated alone on one device, is the model both workers tested.
    assert evaluate(str(run_dir))["top1_accuracy"] == pytest.approx(metrics[0]["test_accuracy"], abs=1e-6)


@pytest.mark.parametrize("overrides, message", [
    (["model.name=lenet5", "model.bn_momentum=0.9"], "model.bn_momentum: lenet5 has no batch norm; leave "
                                                      "model.bn_momentum unset"),
    (["model.name=resnet18", "model.bn_momentum=1.0"], "model.bn_momentum must be in [0, 1), got 1.0"),
    (["model.name=resnet18", "model.bn_epsilon=0"], "model.bn_epsilon must be in (0, 1], got 0.0"),
    (["model.name=resnet18", "model.bn_epsilon=1e-5", "model.backbone_kwargs={bn_epsilon: 0.001}"],
     "model.bn_epsilon and model.backbone_kwargs.bn_epsilon are both set; keep one"),
    (["train.precise_bn_batches=-1"], "train.precise_bn_batches must be >= 0 (0 turns precise batch norm off), "
                                      "got -1"),
])
def test_batch_norm_config_errors_name_the_key_and_the_fix(overrides, message):
    with pytest.raises(C.ConfigError) as error:
        C.from_dict({}, overrides)
    assert str(error.value) == message


def test_model_bn_keys_reach_the_backbone_builder():
    model = C.from_dict({}, ["model.name=resnet18", "model.bn_momentum=0.9",
                             "model.backbone_kwargs={weight_decay: 0.0001}"]).model
    assert model.builder_kwargs() == {"weight_decay": 0.0001, "bn_momentum": 0.9}
    assert C.from_dict({}).train.precise_bn_batches == 32 and C.from_dict({}).train.sync_bn is False
