"""``train(config)``: one training loop for every tf.distribute strategy.

The step is kcnn's own (``strategy.run`` over a ``GradientTape``, the loss averaged
over the global batch) because Keras 3's ``fit`` fails under
MultiWorkerMirroredStrategy (keras-team/keras#20585); the same loop serves the
default and mirrored strategies, so there is one code path. It keeps what ``fit``
users expect: Keras callbacks (EarlyStopping and others), a progress bar on a
terminal, metrics, TensorBoard scalars, checkpoints, and dynamic loss scaling under
float16. A run resumes from its last completed epoch when started again with the
same run directory.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time

import keras
import tensorflow as tf

import kcnn
from pipelines import report
from pipelines.batchnorm import BatchNormStatistics
from pipelines.config import Config
from pipelines.data import make_dataset
from pipelines.distributed_eval import DistributedEvaluator, labels_and_predictions
from pipelines.environment import is_chief, resolve_jit, resolve_precision, resolve_strategy
from pipelines.optim import make_optimizer

HISTORY_FIELDS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "val_top5_accuracy", "learning_rate",
                  "images_per_second", "seconds")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


def default_run_dir(config: Config) -> str:
    source = config.data.source.replace(":", "_").replace("/", "_").strip("_")
    return os.path.join("runs", f"{config.model.name}-{source}")


def train(config: Config, run_dir: str | None = None, *, callbacks=(), verbose: bool = True) -> dict:
    """Train as ``config`` says, writing everything to ``run_dir``; returns the metrics written to metrics.json."""
    run_dir = run_dir or default_run_dir(config)
    strategy_name, strategy = resolve_strategy(config.train)
    chief = is_chief(strategy)
    work_dir = run_dir if chief else tempfile.mkdtemp(prefix="kcnn-worker-")
    _claim_run_dir(work_dir, config)
    policy = resolve_precision(config.train)
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    keras.utils.set_random_seed(config.train.seed)
    try:
        return _run(config, run_dir, work_dir, chief, strategy, strategy_name, policy, callbacks, verbose)
    finally:
        keras.config.set_dtype_policy(previous_policy)
        if not chief:
            shutil.rmtree(work_dir, ignore_errors=True)


def _claim_run_dir(run_dir: str, config: Config) -> None:
    """Create the run directory, or check that the one there was made by the same config (resume)."""
    path = os.path.join(run_dir, "config.yaml")
    text = config.to_yaml()
    if os.path.exists(path):
        with open(path) as handle:
            if handle.read() != text:
                raise ValueError(f"{run_dir} holds a run with a different config; pass another run directory "
                                 f"(--run-dir) or delete {run_dir} to start over")
        return
    os.makedirs(run_dir, exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)


def _datasets(config: Config, replicas: int):
    data = config.data
    common = dict(image_size=data.image_size, batch_size=data.batch_size, channels=data.channels,
                  crop_fraction=data.crop_fraction, mean=data.mean, std=data.std, data_dir=data.data_dir,
                  cache=data.cache)
    if data.batch_size % replicas:
        raise ValueError(f"data.batch_size ({data.batch_size}) is the global batch; it must divide evenly over "
                         f"the {replicas} replicas")
    train_ds = make_dataset(data.source, data.train_split, augment=data.augment, mix=data.mix,
                            mix_alpha=data.mix_alpha, seed=config.train.seed, **common)
    val_ds = make_dataset(data.source, data.validation_split, **common)
    return train_ds, val_ds


def _run(config, run_dir, work_dir, chief, strategy, strategy_name, policy, callbacks, verbose) -> dict:
    started = time.perf_counter()
    replicas = strategy.num_replicas_in_sync
    train_ds, val_ds = _datasets(config, replicas)
    num_classes = len(train_ds.class_names)
    global_batch = config.data.batch_size
    steps = train_ds.num_examples // global_batch
    if steps < 1:
        raise ValueError(f"data.batch_size {global_batch} is larger than the {train_ds.num_examples} training "
                         "images; lower it")
    steps = min(steps, config.train.steps_per_epoch or steps)
    epochs = config.train.epochs
    input_shape = (config.data.image_size, config.data.image_size, config.data.channels)

    with strategy.scope():
        model = kcnn.build(config.model.name, num_classes=num_classes, head=config.model.head,
                           input_shape=input_shape, backbone_kwargs=config.model.builder_kwargs(),
                           head_kwargs=dict(config.model.head_kwargs))
        optimizer = make_optimizer(config.optimizer, steps_per_epoch=steps, epochs=epochs, global_batch=global_batch)
        if policy == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        best_var = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_val_accuracy")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_var, best=best_var)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(work_dir, "checkpoints"), max_to_keep=2)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        _say(verbose, f"resuming {run_dir} after epoch {int(epoch_var.numpy())} of {epochs}")
    start_epoch = int(epoch_var.numpy())
    history = _read_history(work_dir, start_epoch)

    train_step = _make_train_step(model, optimizer, strategy, num_classes, global_batch,
                                  config.optimizer.label_smoothing, resolve_jit(config.train))
    dist_train = strategy.experimental_distribute_dataset(_auto_shard_by_data(train_ds))
    # Batch norm (pipelines/batchnorm.py): precise statistics, identical on every replica, before each evaluation.
    bn_statistics = BatchNormStatistics(model, strategy, dist_train, sync=config.train.sync_bn,
                                        batches=min(config.train.precise_bn_batches, steps))
    evaluate_replicas = DistributedEvaluator(model, strategy)
    callback_list = _callbacks(config, model, callbacks, epochs, steps)
    writers = {name: tf.summary.create_file_writer(os.path.join(work_dir, "logs", name))
               for name in ("train", "validation")}
    model.stop_training = False  # EarlyStopping and user callbacks set it, as under fit
    callback_list.on_train_begin()
    for epoch in range(start_epoch, epochs):
        callback_list.on_epoch_begin(epoch)
        bar = keras.utils.Progbar(steps, unit_name="step") if verbose and sys.stdout.isatty() else None
        tick = time.perf_counter()
        loss_sum = correct = seen = 0.0
        for step, (images, labels) in enumerate(dist_train):
            if step >= steps:
                break
            loss, hits = (float(t) for t in train_step(images, labels))
            if not math.isfinite(loss):
                raise TrainingDiverged(
                    f"loss became {loss} at epoch {epoch + 1}, step {step + 1}; stopped. The last good checkpoint "
                    f"(after epoch {epoch}) is kept in {run_dir}/checkpoints. Lower optimizer.learning_rate, add "
                    "optimizer.warmup_epochs or optimizer.clip_norm, and run again")
            loss_sum, correct, seen = loss_sum + loss, correct + hits, seen + global_batch
            callback_list.on_train_batch_end(step, {"loss": loss})
            if bar:
                bar.update(step + 1, [("loss", loss)])
        seconds = time.perf_counter() - tick
        bn_statistics.refresh()
        val = evaluate_replicas(val_ds)
        logs = {"epoch": epoch + 1, "loss": loss_sum / max(steps, 1), "accuracy": correct / max(seen, 1),
                "val_loss": val["loss"], "val_accuracy": val["accuracy"], "val_top5_accuracy": val["top5_accuracy"],
                "learning_rate": float(_current_rate(optimizer)), "images_per_second": seen / seconds,
                "seconds": seconds}
        history.append(logs)
        _write_epoch(work_dir, writers, history, logs)
        if logs["val_accuracy"] > best_var.numpy():
            best_var.assign(logs["val_accuracy"])
            model.save(os.path.join(work_dir, "best.keras"))  # every worker, so all test the same best model
        epoch_var.assign(epoch + 1)
        manager.save(checkpoint_number=epoch + 1)
        _say(verbose, "epoch {epoch}/{total}: loss {loss:.4f} accuracy {accuracy:.4f} val_loss {val_loss:.4f} "
             "val_accuracy {val_accuracy:.4f} lr {learning_rate:.3g} ({images_per_second:.0f} images/s)"
             .format(total=epochs, **logs))
        callback_list.on_epoch_end(epoch, {k: v for k, v in logs.items() if k != "epoch"})
        if model.stop_training:
            _say(verbose, f"early stopping after epoch {epoch + 1}")
            break
    callback_list.on_train_end()
    if config.optimizer.ema is not None:
        optimizer.finalize_variable_values(model.trainable_variables)
    return _finish(config, run_dir, work_dir, chief, model, bn_statistics, evaluate_replicas, history, policy,
                   strategy_name, replicas, started, train_ds, val_ds, verbose)


def _finish(config, run_dir, work_dir, chief, model, bn_statistics, evaluate_replicas, history, policy,
            strategy_name, replicas, started, train_ds, val_ds, verbose) -> dict:
    """Test the best model, write model.keras, metrics.json and the plots (chief only)."""
    best_path = os.path.join(work_dir, "best.keras")
    if config.optimizer.ema is None and os.path.exists(best_path):
        model.load_weights(best_path)
    data = config.data
    test_ds = make_dataset(data.source, data.test_split, image_size=data.image_size, batch_size=data.batch_size,
                           channels=data.channels, crop_fraction=data.crop_fraction, mean=data.mean, std=data.std,
                           data_dir=data.data_dir)
    bn_statistics.refresh()
    test = evaluate_replicas(test_ds, keep_predictions=True)
    bn_statistics.release()
    rates = [h["images_per_second"] for h in history]
    metrics = {
        "test_accuracy": test["accuracy"],
        "test_top5_accuracy": test["top5_accuracy"],
        "test_loss": test["loss"],
        "val_accuracy": max((h["val_accuracy"] for h in history), default=float("nan")),
        "epochs_completed": len(history),
        "train_images_per_second": statistics.median(rates[1:] or rates) if rates else 0.0,
        "precision_policy": policy,
        "strategy": strategy_name,
        "replicas": replicas,
        "wall_seconds_this_session": time.perf_counter() - started,
        "num_classes": len(train_ds.class_names),
    }
    if chief:
        model.save(os.path.join(run_dir, "model.keras"))
        with open(os.path.join(run_dir, "metrics.json"), "w") as handle:
            json.dump(metrics, handle, indent=2)
        with open(os.path.join(run_dir, "class_names.json"), "w") as handle:
            json.dump(train_ds.class_names, handle)
        with open(os.path.join(run_dir, "preprocessing.json"), "w") as handle:
            handle.write(val_ds.preprocessing.to_json())
        report.plot_curves(history, os.path.join(run_dir, "plots", "curves.png"))
        report.plot_confusion(*labels_and_predictions(test["confusion_matrix"]), train_ds.class_names,
                              os.path.join(run_dir, "plots", "confusion_matrix.png"))
    _say(verbose, f"test accuracy {metrics['test_accuracy']:.4f} (top-5 {metrics['test_top5_accuracy']:.4f}); "
         f"run directory {run_dir}")
    return metrics


def _make_train_step(model, optimizer, strategy, num_classes, global_batch, label_smoothing, jit):
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    def step(images, labels):
        targets = labels if labels.shape.rank == 2 else tf.one_hot(labels, num_classes)
        with tf.GradientTape() as tape:
            probabilities = model(images, training=True)
            per_example = keras.losses.categorical_crossentropy(targets, probabilities,
                                                                label_smoothing=label_smoothing)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            objective = optimizer.scale_loss(loss) if scaled else loss
        gradients = tape.gradient(objective, model.trainable_variables)
        optimizer.apply(gradients, model.trainable_variables)
        hits = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probabilities, -1), tf.argmax(targets, -1)), tf.float32))
        return loss, hits

    replica_step = tf.function(step, jit_compile=jit)

    @tf.function
    def distributed_step(images, labels):
        loss, hits = strategy.run(replica_step, args=(images, labels))
        return (strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
                strategy.reduce(tf.distribute.ReduceOp.SUM, hits, axis=None))

    return distributed_step


def _auto_shard_by_data(dataset):
    """Shard in-memory and generated data by element across workers (file sharding does not apply)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _callbacks(config, model, user_callbacks, epochs, steps):
    callbacks = list(user_callbacks)
    if config.train.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max",
                                                       patience=config.train.early_stopping_patience))
    return keras.callbacks.CallbackList(callbacks, model=model, epochs=epochs, steps=steps, verbose=0)


def _current_rate(optimizer):
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    rate = inner.learning_rate
    return rate(inner.iterations) if callable(rate) else rate


def _read_history(run_dir: str, completed_epochs: int) -> list[dict]:
    """The history of the epochs the restored checkpoint covers (rows of a crashed later epoch are dropped)."""
    path = os.path.join(run_dir, "history.csv")
    if not os.path.exists(path):
        return []
    with open(path, newline="") as handle:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    return [{**row, "epoch": int(row["epoch"])} for row in rows if row["epoch"] <= completed_epochs]


def _write_epoch(run_dir: str, writers: dict, history: list[dict], logs: dict) -> None:
    with open(os.path.join(run_dir, "history.csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=HISTORY_FIELDS)
        writer.writeheader()
        writer.writerows(history)
    step = logs["epoch"]
    with writers["train"].as_default():
        for key in ("loss", "accuracy", "learning_rate", "images_per_second"):
            tf.summary.scalar(key, logs[key], step=step)
    with writers["validation"].as_default():
        tf.summary.scalar("loss", logs["val_loss"], step=step)
        tf.summary.scalar("accuracy", logs["val_accuracy"], step=step)
        tf.summary.scalar("top5_accuracy", logs["val_top5_accuracy"], step=step)
    for writer in writers.values():
        writer.flush()


def _say(verbose: bool, message: str) -> None:
    if verbose:
        print(message, flush=True)
