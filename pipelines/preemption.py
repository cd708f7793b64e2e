"""Preemption: SIGTERM during training saves where the run is and exits so the platform restarts it.

Spot VMs, node upgrades and Vertex AI maintenance stop a worker with SIGTERM and a grace period
(Kubernetes' ``terminationGracePeriodSeconds``, 30 s by default) before SIGKILL. :class:`SigtermWatch`
turns the signal into a flag that the training step sums over every worker and replica with its loss,
so all workers see the request at the same step, however many of them were signalled: each saves the
step it reached (``checkpoints/interrupted/``) and training raises :class:`TrainingPreempted`, which
``kcnn train`` turns into exit code 42, the code TensorFlow's ``PreemptionCheckpointHandler`` exits
with. The job's failure policy restarts the pods (serving/deploy/train-gke.yaml ignores exit 42 in its
backoff count), and the same command continues mid-epoch from that step.

It is the equivalent of TensorFlow's ``tf.distribute.experimental.PreemptionCheckpointHandler`` for
every strategy kcnn trains with (that handler needs a multi-worker cluster resolver and the
coordination service), at the cost of one scalar added to the step's all-reduce.
"""

from __future__ import annotations

import logging
import signal
import threading

import tensorflow as tf

from kcnn.faults import crash_point

log = logging.getLogger(__name__)

EXIT_CODE = 42  # what PreemptionCheckpointHandler exits with after saving; the job manifests expect it
INTERRUPTED = "interrupted"  # checkpoints/interrupted/ckpt: the step a preempted session reached


class TrainingPreempted(RuntimeError):
    """A SIGTERM stopped training after its checkpoint was saved; run the same command to continue."""

    exit_code = EXIT_CODE


class SigtermWatch:
    """A context in which SIGTERM sets :attr:`requested` instead of ending the process.

    ``flag()`` is the tensor a training step sums over the workers (0.0, or 1.0 once signalled). Off the
    main thread (signals cannot be caught there) it only ever reports 0. The previous handler comes
    back when the context ends, so a second SIGTERM after training exits as usual.
    """

    def __init__(self):
        self.requested = False
        self._previous = None
        self._zero, self._one = tf.constant(0.0), tf.constant(1.0)

    def __enter__(self) -> "SigtermWatch":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def flag(self):
        return self._one if self.requested else self._zero


def interrupted_prefix(checkpoints: str) -> str:
    """The checkpoint prefix of a preempted session's step, in the run's checkpoint directory."""
    return f"{checkpoints.rstrip('/')}/{INTERRUPTED}/ckpt"


def restore_interrupted(checkpoint, checkpoints: str, epoch_var, *, required=("model", "optimizer")) -> bool:
    """Restore the step a preempted session saved, if it belongs to the epoch ``epoch_var`` says comes next.

    One from an epoch finished since (a kill between that epoch's checkpoint and the removal of this
    one) is stale and left alone; one that does not read back whole is skipped with a warning, and the
    epoch checkpoint already restored stands (:func:`pipelines.checkpoints.restore_whole` reads every
    tensor before it assigns any).
    """
    from pipelines.checkpoints import first_line, restore_whole

    prefix = interrupted_prefix(checkpoints)
    if not tf.io.gfile.exists(prefix + ".index"):
        return False
    try:
        epoch = int(tf.compat.v1.train.NewCheckpointReader(prefix).get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE"))
    except Exception as error:  # a damaged index: whatever TensorFlow raises for it
        problem = f"{INTERRUPTED}/ckpt.index is damaged ({first_line(error)})"
    else:
        if epoch != int(epoch_var.numpy()):
            return False
        problem = restore_whole(checkpoint, prefix, required)
        if problem is None:
            return True
    log.warning("skipped checkpoint %s: %s; resuming from the last finished epoch instead", prefix, problem)
    return False


def save_interrupted(checkpoint, checkpoints: str) -> str:
    """Write the step reached to ``checkpoints/interrupted/ckpt`` (TF writes its files, then the index)."""
    prefix = interrupted_prefix(checkpoints)
    crash_point("interrupted_checkpoint")
    checkpoint.write(prefix)
    return prefix


def remove_interrupted(checkpoints: str) -> None:
    """Drop a preempted session's step once the epoch it was in is checkpointed whole."""
    directory = f"{checkpoints.rstrip('/')}/{INTERRUPTED}"
    if tf.io.gfile.exists(directory):
        tf.io.gfile.rmtree(directory)


def any_worker(strategy, flag) -> bool:
    """Whether ``flag`` (a 0/1 tensor) is set on any replica of any worker: one all-reduce of a scalar."""
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.identity(flag)), axis=None)
    return float(total) > 0


def workers_agree(strategy, *values: int) -> bool:
    """Whether every replica of every worker holds the same ``values`` (n * sum(v^2) == sum(v)^2, exact in float64)."""
    if strategy.num_replicas_in_sync == 1:
        return True
    moments = tf.constant([m for v in values for m in (float(v), float(v) ** 2)] + [1.0], tf.float64)
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.identity(moments)), axis=None)
    total = total.numpy().tolist()
    count = total[-1]
    return all(count * total[2 * i + 1] == total[2 * i] ** 2 for i in range(len(values)))


class CountedPasses:
    """A dataset that counts the passes (iterators) started over it, so a resumed run can replay its data order.

    A shuffle with ``reshuffle_each_iteration`` and a fixed seed orders its k-th pass the same way in
    every process: the order depends only on how many iterators were created before it, not on what
    they read. The checkpoint records the count (``data_passes``); a resumed session first creates and
    drops that many iterators (:meth:`fast_forward`), then reads the interrupted epoch's pass from its
    start, skipping the steps already trained, so it sees the batches the uninterrupted run would have.
    """

    def __init__(self, dataset):
        self.dataset = dataset
        self.count = 0

    def __iter__(self):
        self.count += 1
        return iter(self.dataset)

    def fast_forward(self, passes: int) -> None:
        for _ in range(passes - self.count):
            iter(self)  # its shuffle draws the pass's seeds; nothing is read


def skip_batches(iterator, count: int) -> None:
    """Read and drop ``count`` batches (a resumed epoch's steps that were already trained)."""
    for _ in range(count):
        next(iterator)
