"""``train(config)``: one training loop for every tf.distribute strategy.

The step is kcnn's own (``strategy.run`` over a ``GradientTape``, the loss averaged
over the global batch) because Keras 3's ``fit`` fails under
MultiWorkerMirroredStrategy (keras-team/keras#20585); the same loop serves the
default and mirrored strategies, so there is one code path. It keeps what ``fit``
users expect: Keras callbacks (EarlyStopping and others), a progress bar on a
terminal, metrics, TensorBoard scalars, checkpoints, and dynamic loss scaling under
float16. A run resumes from its last completed epoch when started again with the
same run directory. It prints the pruning schedule when ``train.prune_*`` prunes, a
line at the epoch fine-tuning unfreezes the backbone, and, last, where the run's
report.html went; run_info.json records each session's start (UTC) and versions.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import keras
import tensorflow as tf

from kcnn.faults import crash_point
from pipelines import finetune, fs, report
from pipelines.batchnorm import BatchNormStatistics
from pipelines.checkpoints import restore_newest, set_aside_damaged_model
from pipelines.config import Config
from pipelines.data import DataSpec
from pipelines.distributed_eval import DistributedEvaluator
from pipelines.environment import is_chief, resolve_jit, resolve_precision, resolve_strategy
from pipelines.preemption import (EXIT_CODE, CountedPasses, SigtermWatch, TrainingPreempted, any_worker,
                                  remove_interrupted, restore_interrupted, save_interrupted, skip_batches,
                                  workers_agree)
from pipelines.prune import prune_for_training, pruning_callbacks
from pipelines.run_dir import RunDir, atomic_write, software_versions, utc_now
from pipelines.run_report import frozen_part, pruning_schedule, write_report
from pipelines.tasks import Task, get_task, task_of

log = logging.getLogger(__name__)

HISTORY_FIELDS = get_task("classification").history_fields()  # a classification run's history.csv columns


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


def default_run_dir(config: Config) -> str:
    source = config.data.source.replace(":", "_").replace("/", "_").strip("_")
    return os.path.join("runs", f"{config.model.name}-{source}")


@dataclass
class Session:
    """What one training session works with, handed whole to its stages (setup, epochs, finish)."""

    config: Config
    run: RunDir  # where results go
    work: RunDir  # where this task writes: ``run`` on the chief, a temporary directory on other workers
    chief: bool
    strategy: Any
    strategy_name: str
    policy: str
    spec: DataSpec
    verbose: bool
    task: Task = None
    started: float = field(default_factory=time.perf_counter)
    started_utc: str = field(default_factory=utc_now)  # run_info.json's date of this session

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync

    def say(self, message: str) -> None:
        if self.verbose:
            print(message, flush=True)


def train(config: Config, run_dir: str | None = None, *, callbacks=(), verbose: bool = True) -> dict:
    """Train as ``config`` says, writing everything to ``run_dir``; returns the metrics written to metrics.json.

    A directory that holds a run of another config is refused before any work; a new
    run directory is claimed (its ``config.yaml`` written) only once the data and the
    model are ready, so a start that fails leaves nothing behind.
    """
    run = RunDir(run_dir or default_run_dir(config))
    run.check_can_resume(config.to_yaml())
    strategy_name, strategy = resolve_strategy(config.train)
    chief = is_chief(strategy)
    work = run if chief else RunDir(tempfile.mkdtemp(prefix="kcnn-worker-"))
    task = task_of(config)
    spec = task.data_spec(DataSpec.from_config(config.data, model=config.model, seed=config.train.seed), config.model)
    session = Session(config, run, work, chief, strategy, strategy_name, resolve_precision(config.train), spec,
                      verbose, task)
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(session.policy)
    keras.utils.set_random_seed(config.train.seed)
    try:
        return _run(session, callbacks)
    finally:
        keras.config.set_dtype_policy(previous_policy)
        if not chief:
            shutil.rmtree(work.path, ignore_errors=True)


def _datasets(task: Task, spec: DataSpec, replicas: int):
    """The training and validation datasets of the task, each with its info."""
    if spec.batch_size % replicas:
        raise ValueError(f"data.batch_size ({spec.batch_size}) is the global batch; it must divide evenly over "
                         f"the {replicas} replicas")
    return task.datasets(spec, spec.train_split), task.datasets(spec, spec.validation_split)


def _run(session: Session, callbacks) -> dict:
    config, work, task = session.config, session.work, session.task
    (train_ds, train_info), (val_ds, val_info) = _datasets(task, session.spec, session.replicas)
    num_classes = len(train_info.class_names)
    global_batch = config.data.batch_size
    steps = train_info.num_examples // global_batch
    if steps < 1:
        raise ValueError(f"data.batch_size {global_batch} is larger than the {train_info.num_examples} training "
                         "images; lower it")
    steps = min(steps, config.train.steps_per_epoch or steps)
    epochs = config.train.epochs
    input_shape = (config.data.image_size, config.data.image_size, config.data.channels)

    with session.strategy.scope():
        model = prune_for_training(task.build_model(config.model, num_classes, input_shape), config.train)
        optimizer = finetune.make_stage_optimizer(config, steps_per_epoch=steps, epochs=epochs,
                                                  global_batch=global_batch)
        if session.policy == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        best_var = tf.Variable(-math.inf, dtype=tf.float64, trainable=False, name="best_validation_figure")
        step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_in_epoch")  # > 0: preempted mid-epoch
        passes_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="data_passes")  # CountedPasses.count
    work.claim(config.to_yaml())  # the run has started: from here on the directory is this run's
    if session.chief:
        work.record_files(train_info, val_info)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_var, best=best_var,
                                     step=step_var, data_passes=passes_var, random=_seed_states(model))
    # Every worker resumes from the chief's checkpoints (the run directory is on storage they share); the chief
    # first rebuilds a lost state file, which the manager reads (pipelines/checkpoints.py).
    resumed = restore_newest(checkpoint, session.run.checkpoints, required=("model", "optimizer"),
                             repair=session.chief)
    manager = tf.train.CheckpointManager(checkpoint, work.checkpoints, max_to_keep=2)
    if resumed:
        session.say(f"resuming {session.run} after epoch {int(epoch_var.numpy())} of {epochs}")
    if session.chief:
        set_aside_damaged_model(work.best_model)  # else loading it would fail the run at its very end
    resumed_step = 0  # steps of epoch start_epoch + 1 a preempted session finished
    if restore_interrupted(checkpoint, session.run.checkpoints, epoch_var):
        resumed_step = int(step_var.numpy())
        session.say(f"resuming {session.run} in epoch {int(epoch_var.numpy()) + 1} of {epochs} after step "
                    f"{resumed_step} of {steps} (saved when it was preempted)")
    start_epoch = int(epoch_var.numpy())
    if not workers_agree(session.strategy, start_epoch, resumed_step):
        raise ValueError(f"the workers found different checkpoints in {session.run.checkpoints}: the run "
                         "directory must be on storage every worker reads (gs://BUCKET/..., a shared volume), not "
                         "on each machine's own disk")
    if session.chief:
        work.record_session(session.started_utc, start_epoch, software_versions())
    history = _read_history(work, start_epoch)
    pruning = pruning_schedule(config.train)
    if pruning:
        session.say(f"pruning {pruning}")
    monitor = f"val_{task.monitor}"

    finetune.apply_stage(model, config, start_epoch)  # the optimizer was built over every variable above
    train_step = _make_train_step(task, model, optimizer, session.strategy, global_batch, resolve_jit(config.train),
                                  config)
    dist_train = CountedPasses(session.strategy.experimental_distribute_dataset(_auto_shard_by_data(train_ds)))
    dist_train.fast_forward(int(passes_var.numpy()))  # a resumed run reads the passes the first session would have
    # Batch norm (pipelines/batchnorm.py): precise statistics, identical on every replica, before each evaluation.
    bn_statistics = BatchNormStatistics(model, session.strategy, dist_train, sync=config.train.sync_bn,
                                        batches=min(config.train.precise_bn_batches, steps))
    evaluate_replicas = DistributedEvaluator(model, session.strategy, task, num_classes, config.model.task_options)
    callback_list = _callbacks(config, model, callbacks, epochs, steps, monitor)
    writers = {name: tf.summary.create_file_writer(work.logs(name)) for name in ("train", "validation")}
    model.stop_training = False  # EarlyStopping and user callbacks set it, as under fit
    callback_list.on_train_begin()
    with SigtermWatch() as sigterm:  # SIGTERM: save the step reached and stop (pipelines/preemption.py)
        for epoch in range(start_epoch, epochs):
            if finetune.starts_stage_two(config, epoch):
                if epoch > start_epoch:  # a resumed run at the boundary was set up in stage two above
                    finetune.apply_stage(model, config, epoch)  # a new trainable set: trace the step again
                    train_step = _make_train_step(task, model, optimizer, session.strategy, global_batch,
                                                  resolve_jit(config.train), config)
                session.say(_stage_two_message(config, epoch, float(_current_rate(optimizer))))
            callback_list.on_epoch_begin(epoch)
            bar = keras.utils.Progbar(steps, unit_name="step") if session.verbose and sys.stdout.isatty() else None
            tick = time.perf_counter()
            first_step = resumed_step if epoch == start_epoch else 0  # a preempted epoch runs its remaining steps
            passes_before = dist_train.count
            batches = iter(dist_train)
            skip_batches(batches, first_step)  # the batches of this pass that the preempted session trained on
            loss_sum = correct = seen = 0.0
            for step, (images, labels) in enumerate(batches, start=first_step):
                if step >= steps:
                    break
                crash_point("train_step")
                loss, hits, stop = (float(t) for t in train_step(images, labels, sigterm.flag()))
                if not math.isfinite(loss):
                    raise TrainingDiverged(
                        f"loss became {loss} at epoch {epoch + 1}, step {step + 1}; stopped. The last good "
                        f"checkpoint (after epoch {epoch}) is kept in {session.run.checkpoints}. Lower "
                        "optimizer.learning_rate, add optimizer.warmup_epochs or optimizer.clip_norm, and run again")
                loss_sum, correct, seen = loss_sum + loss, correct + hits, seen + global_batch
                callback_list.on_train_batch_end(step, {"loss": loss})
                if bar:
                    bar.update(step + 1, [("loss", loss)])
                if stop:  # a worker was told to stop: every worker saves this step and stops with it
                    step_var.assign(step + 1)
                    passes_var.assign(passes_before)
                    saved = save_interrupted(checkpoint, work.checkpoints)
                    raise TrainingPreempted(
                        f"stopped by SIGTERM in epoch {epoch + 1}/{epochs} after step {step + 1} of {steps}; saved "
                        f"{saved if session.chief else session.run.checkpoints}. Run the same command again to "
                        f"continue from that step (exit code {EXIT_CODE})")
            seconds = time.perf_counter() - tick
            bn_statistics.refresh()
            val = evaluate_replicas(val_ds)
            ran = max(steps - first_step, 1)
            logs = {"epoch": epoch + 1, "loss": loss_sum / ran, task.train_metric: correct / max(seen, 1),
                    "val_loss": val["loss"], monitor: val[task.monitor],
                    **{key: val[key[len("val_"):]] for key in task.validation_extras},
                    "learning_rate": float(_current_rate(optimizer)), "images_per_second": seen / seconds,
                    "seconds": seconds}
            logs = {key: logs[key] for key in task.history_fields()}  # history.csv's column order
            history.append(logs)
            _write_epoch(work, writers, history, logs, task)
            if logs[monitor] > best_var.numpy():
                best_var.assign(logs[monitor])
                work.save_model(model, RunDir.BEST_MODEL)  # every worker (others in a temporary directory)
            epoch_var.assign(epoch + 1)
            step_var.assign(0)
            passes_var.assign(dist_train.count)
            crash_point("checkpoint")
            manager.save(checkpoint_number=epoch + 1)
            remove_interrupted(work.checkpoints)
            session.say(f"epoch {epoch + 1}/{epochs}: loss {logs['loss']:.4f} {task.train_metric} "
                        f"{logs[task.train_metric]:.4f} val_loss {logs['val_loss']:.4f} {monitor} "
                        f"{logs[monitor]:.4f} lr {logs['learning_rate']:.3g} "
                        f"({logs['images_per_second']:.0f} images/s)")
            callback_list.on_epoch_end(epoch, {k: v for k, v in logs.items() if k != "epoch"})
            if any_worker(session.strategy, sigterm.flag()):  # signalled during evaluation: the epoch is saved
                raise TrainingPreempted(
                    f"stopped by SIGTERM after epoch {epoch + 1}/{epochs}; its checkpoint is saved in "
                    f"{session.run.checkpoints}. Run the same command again to continue (exit code {EXIT_CODE})")
            if model.stop_training:
                session.say(f"early stopping after epoch {epoch + 1}")
                break
    callback_list.on_train_end()
    if config.optimizer.ema is not None:
        optimizer.finalize_variable_values(model.trainable_variables)
    elif fs.exists(session.run.best_model):  # the chief's, whole: its write came before any_worker's all-reduce
        with fs.local_file(session.run.best_model) as best:
            model.load_weights(best)
    return _finish(session, model, bn_statistics, evaluate_replicas, history, train_info)


def _finish(session: Session, model, bn_statistics, evaluate_replicas, history: list[dict], train_info) -> dict:
    """Test the final model; the chief writes model.keras, class names, preprocessing, metrics.json and the plots."""
    spec, task = session.spec, session.task
    test_ds, test_info = task.datasets(spec.evaluation(cache=False), spec.test_split)
    if session.chief:
        session.work.record_files(test_info)
    bn_statistics.refresh()
    test = evaluate_replicas(test_ds, keep_predictions=True)
    bn_statistics.release()
    rates = [h["images_per_second"] for h in history]
    class_names = list(train_info.class_names)
    run = session.run if session.chief else None
    if run is not None:
        report.plot_curves(history, run.plot("curves"), task.train_metric, task.monitor)
        report.plot_learning_rate(history, run.plot("learning_rate"))
    metrics = {
        "task": task.name,
        **task.finish(run, model, history, test, train_info, spec),  # the test figures, and the task's plots
        "epochs_completed": len(history),
        "train_images_per_second": statistics.median(rates[1:] or rates) if rates else 0.0,
        "precision_policy": session.policy,
        "strategy": session.strategy_name,
        "replicas": session.replicas,
        "wall_seconds_this_session": time.perf_counter() - session.started,
        "num_classes": len(class_names),
    }
    if run is not None:
        run.save_model(model)
        run.write_json(RunDir.CLASS_NAMES, class_names)
        run.write_text(RunDir.PREPROCESSING, spec.preprocessing.to_json())
        run.write_json(RunDir.METRICS, metrics)
        run.record_finish(utc_now())
        page = write_report(str(run), model=model)  # report.html: reads the files written above (model in hand)
    session.say(f"{task.summary(metrics)}; run directory {session.run}")
    if run is not None:
        session.say(f"wrote the run report {page}")
    return metrics


def _stage_two_message(config: Config, epoch: int, rate: float) -> str:
    """The line ``kcnn train`` prints at the epoch fine-tuning's stage two starts (``train.unfreeze_at_epoch``)."""
    head = f"epoch {epoch + 1}/{config.train.epochs}: fine-tuning stage two"
    if config.model.freeze == "none":
        return f"{head}: nothing was frozen (model.freeze: none); learning rate now {rate:.3g}"
    return (f"{head}: unfreezing {frozen_part(config.model.freeze)} (model.freeze: {config.model.freeze}; "
            f"batch-norm layers stay frozen); learning rate now {rate:.3g}")


def _make_train_step(task: Task, model, optimizer, strategy, global_batch, jit, config):
    """One distributed step: the task's per-example loss averaged over the global batch, its score summed, and the
    number of replicas whose ``stop`` flag (the SIGTERM watch) was set."""
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    variables = model.trainable_variables
    scales = finetune.gradient_scales(model, config, variables)
    options = task.bind(model, task.resolve_options(config.model.task_options))

    def step(inputs, targets, stop):
        with tf.GradientTape() as tape:
            outputs = model(inputs, training=True)
            per_example = task.loss(targets, outputs, options, config)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            objective = optimizer.scale_loss(loss) if scaled else loss
        gradients = tape.gradient(objective, variables)
        gradients = [g if scale == 1.0 else g * scale for g, scale in zip(gradients, scales)]
        optimizer.apply(gradients, variables)
        score = task.train_score(targets, outputs, options)
        return tf.stack([tf.cast(loss, tf.float32), tf.cast(score, tf.float32), tf.cast(stop, tf.float32)])

    replica_step = tf.function(step, jit_compile=jit, autograph=False)

    @tf.function(autograph=False)
    def distributed_step(inputs, targets, stop=0.0):
        """The global batch's loss, its summed score, and how many replicas were asked to stop (SIGTERM)."""
        totals = strategy.reduce(tf.distribute.ReduceOp.SUM,
                                 strategy.run(replica_step, args=(inputs, targets, stop)), axis=None)
        return totals[0], totals[1], totals[2]  # one all-reduce for the three

    return distributed_step


def _seed_states(model) -> dict:
    """The states of the model's random-number generators (dropout, stochastic depth) by layer.

    tf.train.Checkpoint does not track Keras' SeedGenerator states through the model; saved beside it,
    a resumed run draws the dropout masks the uninterrupted run would have.
    """
    return {f"{layer.name}/{index}": generator.state.value for layer in model._flatten_layers()
            for index, generator in enumerate(getattr(layer, "_seed_generators", []))}


def _auto_shard_by_data(dataset):
    """Shard in-memory and generated data by element across workers (file sharding does not apply)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _callbacks(config, model, user_callbacks, epochs, steps, monitor: str):
    callbacks = pruning_callbacks(config.train, steps) + list(user_callbacks)
    if config.train.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, mode="max",
                                                       patience=config.train.early_stopping_patience))
    return keras.callbacks.CallbackList(callbacks, model=model, epochs=epochs, steps=steps, verbose=0)


def _current_rate(optimizer):
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    rate = inner.learning_rate
    return rate(inner.iterations) if callable(rate) else rate


def _read_history(work: RunDir, completed_epochs: int) -> list[dict]:
    """The history of the epochs the restored checkpoint covers (rows of a crashed later epoch are dropped)."""
    if not fs.exists(work.history):
        return []
    rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(fs.read_text(work.history)))]
    return [{**row, "epoch": int(row["epoch"])} for row in rows if row["epoch"] <= completed_epochs]


def _write_epoch(work: RunDir, writers: dict, history: list[dict], logs: dict, task: Task) -> None:
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=task.history_fields())
    writer.writeheader()
    writer.writerows(history)
    atomic_write(work.history, table.getvalue())
    step = logs["epoch"]
    with writers["train"].as_default():
        for key in ("loss", task.train_metric, "learning_rate", "images_per_second"):
            tf.summary.scalar(key, logs[key], step=step)
    with writers["validation"].as_default():  # the same names as the training scalars, so TensorBoard overlays them
        for key in ("val_loss", f"val_{task.monitor}", *task.validation_extras):
            tf.summary.scalar(key[len("val_"):], logs[key], step=step)
    for writer in writers.values():
        writer.flush()


