"""Batch-norm statistics during training: precise BN, replicas that agree, synchronized batch statistics.

Batch norm normalises with the batch's statistics while training and with moving
averages at inference. After a short run those averages are still far from the
population's (with momentum 0.99, 60 updates leave 55% of the initial values), so
the model evaluates as if it had learnt nothing; and under tf.distribute every
replica keeps its own averages, so workers evaluate different models.

:class:`BatchNormStatistics` fixes both before every evaluation and checkpoint:

- **Precise BN** (``train.precise_bn_batches`` = N > 0): run N training batches
  forward in training mode with the current weights and set each layer's moving
  mean and variance to the population mean and variance of its inputs over those
  batches: ``mean = E[x]`` and ``variance = E[x^2] - E[x]^2``, pooled over every
  pixel of every batch on every replica (the layers' momentum is set to 0 for the
  pass, so each forward leaves the batch's own moments to read). No trainable
  weight changes. This is the "precise BN" of pycls and Detectron2, with the
  variance pooled exactly rather than averaged over batches.
- **All-reduce** (N = 0, several replicas): the replicas' moving statistics are
  pooled the same way, so every replica ends with the same values.
- **Synchronized batch statistics** (``train.sync_bn``, several replicas): each
  layer normalises with the mean and variance of the global batch (Keras'
  ``BatchNormalization(synchronized=True)``), for small per-replica batches.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def batch_norm_layers(model) -> list:
    """The model's ``BatchNormalization`` layers that training updates (frozen ones keep their statistics)."""
    found = []

    def walk(layer):
        if isinstance(layer, keras.layers.BatchNormalization):
            if layer.trainable and not layer.renorm:
                found.append(layer)
        for inner in getattr(layer, "layers", ()):
            walk(inner)

    for layer in model.layers:
        walk(layer)
    return found


class BatchNormStatistics:
    """Keeps a model's batch-norm moving statistics right for evaluation and identical on all replicas.

    ``dataset`` is the training dataset as the strategy distributes it (each item
    ``(images, labels)``); ``batches`` is how many of its batches precise BN reads
    (0: no precise BN). Build it inside the training setup, before the first
    training step is traced, so ``sync=True`` reaches the traced step.
    """

    def __init__(self, model, strategy, dataset, *, batches: int, sync: bool = False):
        if batches < 0:
            raise ValueError(f"batches must be >= 0, got {batches}")
        self.model = model
        self.strategy = strategy
        self.dataset = dataset
        self.batches = batches
        self.layers = batch_norm_layers(model)
        self.replicas = strategy.num_replicas_in_sync
        self.sync = bool(sync) and self.replicas > 1
        for layer in self.layers:
            layer.synchronized = self.sync
        self._moments_step = None
        self._local_moments_step = None

    def refresh(self) -> str:
        """Make the moving statistics right before an evaluation or a checkpoint; says what it did."""
        if not self.layers:
            return "no batch norm"
        if self.batches:
            used = self.recompute()
            return f"precise batch norm over {used} batches"
        if self.replicas > 1:
            self.all_reduce()
            return f"moving statistics averaged over {self.replicas} replicas"
        return "moving statistics as training left them"

    def recompute(self) -> int:
        """Precise BN: population statistics over up to ``batches`` training batches; returns how many were read."""
        if self._moments_step is None:
            self._moments_step = self._make_step(self._batch_moments)
        sums, used = None, 0
        saved = [layer.momentum for layer in self.layers]
        try:
            for layer in self.layers:
                layer.momentum = 0.0  # each forward leaves exactly the batch's moments in the moving variables
            for images, _ in self.dataset:
                if used >= self.batches:
                    break
                moments = self._local(self._moments_step(images))
                sums = moments if sums is None else [a + b for a, b in zip(sums, moments)]
                used += 1
        finally:
            for layer, momentum in zip(self.layers, saved):
                layer.momentum = momentum
        if sums is None:
            raise ValueError("precise batch norm found no training batch; check the training data")
        self._assign(sums)
        return used

    def all_reduce(self) -> None:
        """Pool the replicas' moving statistics so every replica holds the same ones."""
        if self._local_moments_step is None:
            self._local_moments_step = self._make_step(self._local_moments)
        self._assign(self._local(self._local_moments_step()))

    def release(self) -> None:
        """Turn synchronized statistics off again, so the saved model is a plain one for every backend."""
        for layer in self.layers:
            layer.synchronized = False

    # One replica's weighted sums: count, count * mean and count * E[x^2] per layer, summed over replicas.

    def _batch_moments(self, images):
        self.model(images, training=True)
        # Every pixel of every image weighs the same; within one layer all images have as many pixels.
        return self._weighted(tf.cast(tf.shape(images)[0], tf.float32))

    def _local_moments(self):
        return self._weighted(tf.constant(1.0))

    def _weighted(self, weight):
        sums = []
        for layer in self.layers:
            mean = tf.convert_to_tensor(layer.moving_mean.value)
            variance = tf.convert_to_tensor(layer.moving_variance.value)
            # A replica handed an empty batch has NaN moments and weight 0: it must add nothing.
            valid = weight > 0
            sums.append(tf.stack([tf.fill(tf.shape(mean), weight),
                                  tf.where(valid, weight * mean, 0.0),
                                  tf.where(valid, weight * (variance + tf.square(mean)), 0.0)]))
        return sums

    def _make_step(self, replica_fn):
        strategy = self.strategy

        @tf.function(autograph=False)
        def step(*args):
            per_replica = strategy.run(replica_fn, args=args)
            return [strategy.reduce(tf.distribute.ReduceOp.SUM, t, axis=None) for t in per_replica]

        return step

    @staticmethod
    def _local(tensors) -> list:
        return [np.asarray(t, np.float64) for t in tensors]

    def _assign(self, sums) -> None:
        for layer, (count, weighted_mean, weighted_square) in zip(self.layers, sums):
            mean = weighted_mean / np.maximum(count, 1e-12)
            variance = np.maximum(weighted_square / np.maximum(count, 1e-12) - mean * mean, 0.0)
            layer.moving_mean.assign(mean.astype(np.float32))
            layer.moving_variance.assign(variance.astype(np.float32))
