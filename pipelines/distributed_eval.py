"""Evaluation spread over the replicas of a tf.distribute strategy, with sums reduced over all of them.

Each replica scores its share of every batch (loss sum, top-1 and top-5 hits, the
confusion counts); the strategy sums them, so every worker gets the metrics of the
whole dataset, and all workers agree when their models do. Under the default
strategy it is the plain evaluation loop.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


class DistributedEvaluator:
    """``evaluator(dataset)`` -> loss, top-1 and top-5 accuracy of ``model`` over a labelled, batched dataset."""

    def __init__(self, model, strategy):
        self.model = model
        self.strategy = strategy
        self._distributed = {}
        self._step = None

    def __call__(self, dataset, *, keep_predictions: bool = False) -> dict:
        """Metrics over ``dataset``; ``keep_predictions`` adds ``confusion_matrix`` (row: true class)."""
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
        loss_sum = correct = top5 = count = 0.0
        confusion = None
        for images, labels in distributed:
            batch_loss, batch_correct, batch_top5, batch_count, batch_confusion = self._step(images, labels)
            loss_sum += float(batch_loss)
            correct += float(batch_correct)
            top5 += float(batch_top5)
            count += float(batch_count)
            matrix = np.asarray(batch_confusion, np.int64)
            confusion = matrix if confusion is None else confusion + matrix
        result = {"loss": loss_sum / max(count, 1), "accuracy": correct / max(count, 1),
                  "top5_accuracy": top5 / max(count, 1), "count": int(count)}
        if keep_predictions:
            result["confusion_matrix"] = confusion
        return result

    def _make_step(self):
        model, strategy = self.model, self.strategy
        num_classes = int(model.output_shape[-1])

        def replica_step(images, labels):
            probabilities = model(images, training=False)
            targets = labels if labels.shape.rank == 2 else tf.one_hot(labels, num_classes)
            loss = tf.reduce_sum(keras.losses.categorical_crossentropy(targets, probabilities))
            truth = tf.argmax(targets, -1, output_type=tf.int32)
            predicted = tf.argmax(probabilities, -1, output_type=tf.int32)
            correct = tf.reduce_sum(tf.cast(tf.equal(predicted, truth), tf.float32))
            # top_k, not in_top_k: in_top_k counts every tied class as a hit, so a model that outputs uniform
            # probabilities would score 100% top-5.
            best = tf.math.top_k(probabilities, k=min(5, num_classes)).indices
            top5 = tf.reduce_sum(tf.cast(tf.reduce_any(tf.equal(best, truth[:, None]), -1), tf.float32))
            count = tf.cast(tf.shape(images)[0], tf.float32)
            confusion = tf.math.confusion_matrix(truth, predicted, num_classes, dtype=tf.float32)
            return tf.cast(loss, tf.float32), correct, top5, count, confusion

        @tf.function(reduce_retracing=True, autograph=False)  # the last batch is smaller
        def step(images, labels):
            per_replica = strategy.run(replica_step, args=(images, labels))
            return [strategy.reduce(tf.distribute.ReduceOp.SUM, t, axis=None) for t in per_replica]

        return step


def labels_and_predictions(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and predicted classes, one per counted example, that give back ``confusion`` (for the plots)."""
    rows, columns = np.indices(confusion.shape)
    counts = confusion.ravel()
    return np.repeat(rows.ravel(), counts), np.repeat(columns.ravel(), counts)
