"""Evaluation spread over the replicas of a tf.distribute strategy, with sums reduced over all of them.

Each replica scores its share of every batch (loss sum, top-1 and top-5 hits, the
confusion counts); the strategy sums them, so every worker gets the metrics of the
whole dataset, and all workers agree when their models do. Under the default
strategy it is the plain evaluation loop.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


class DistributedEvaluator:
    """``evaluator(dataset)`` -> the task's figures (classification: loss, top-1 and top-5) over a batched dataset.

    ``task`` (a :class:`pipelines.tasks.Task`, classification by default) says what each replica sums
    (``evaluation_sums``) and what the figures are (``evaluation_result``).
    """

    def __init__(self, model, strategy, task=None, num_classes: int | None = None, options: dict | None = None):
        from pipelines.tasks import get_task

        self.model = model
        self.strategy = strategy
        self.task = task or get_task("classification")
        self.num_classes = num_classes or int(model.output_shape[-1])
        self.options = self.task.bind(model, self.task.resolve_options(options or {}))
        self._distributed = {}
        self._step = None

    def __call__(self, dataset, *, keep_predictions: bool = False) -> dict:
        """Figures over ``dataset``; ``keep_predictions`` adds what the task keeps (classification: the
        ``confusion_matrix``, row: true class)."""
        if self._step is None:
            self._step = self._make_step()
        distributed = self._distributed.get(id(dataset))
        if distributed is None:
            options = tf.data.Options()  # shard by element: in-memory and generated data have no files to split
            options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
            distributed = self.strategy.experimental_distribute_dataset(dataset.with_options(options))
            self._distributed[id(dataset)] = (dataset, distributed)  # keep the dataset alive: ids stay unique
        else:
            distributed = distributed[1]
        sums, gathered = {}, {}
        for inputs, targets in distributed:
            for key, value in self._step(inputs, targets).items():
                if key in self.task.gathered:
                    gathered.setdefault(key, []).append(np.asarray(value))
                    continue
                value = np.asarray(value, np.float64)
                sums[key] = value if key not in sums else sums[key] + value
        sums.update({key: np.concatenate(parts) for key, parts in gathered.items()})
        return self.task.evaluation_result(sums, keep_predictions, self.num_classes)

    def _make_step(self):
        model, strategy, task, num_classes, options = (self.model, self.strategy, self.task, self.num_classes,
                                                       self.options)

        def replica_step(inputs, targets):
            return task.evaluation_sums(targets, model(inputs, training=False), num_classes, options)

        @tf.function(reduce_retracing=True, autograph=False)  # the last batch is smaller
        def step(inputs, targets):
            per_replica = strategy.run(replica_step, args=(inputs, targets))
            return {key: strategy.gather(value, axis=0) if key in task.gathered
                    else strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
                    for key, value in per_replica.items()}

        return step


def labels_and_predictions(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and predicted classes, one per counted example, that give back ``confusion`` (for the plots)."""
    rows, columns = np.indices(confusion.shape)
    counts = confusion.ravel()
    return np.repeat(rows.ravel(), counts), np.repeat(columns.ravel(), counts)
