"""What the optimizer options do to the numbers: EMA, gradient clipping, label smoothing."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipelines import config as C
from pipelines.optim import make_optimizer
from pipelines.tasks import get_task
from pipelines.train import _make_train_step


def sgd(**optimizer):
    """Plain SGD at a constant rate 0.1 (no momentum, no decay), plus the options under test."""
    cfg = C.from_dict({"optimizer": {"name": "sgd", "learning_rate": 0.1, "momentum": 0.0, "schedule": "constant",
                                     **optimizer}}).optimizer
    return make_optimizer(cfg, steps_per_epoch=10, epochs=1, global_batch=8)


def test_ema_weights_equal_the_hand_computed_moving_average_after_k_steps():
    decay, gradients = 0.8, [1.0, -2.0, 0.5, 3.0]
    variable = keras.Variable(np.zeros(2, np.float32))
    optimizer = sgd(ema=decay)
    optimizer.build([variable])
    weight, average = 0.0, None
    for g in gradients:
        optimizer.apply([tf.constant([g, 2 * g], tf.float32)], [variable])
        weight -= 0.1 * g
        # Keras starts the average at the weights after the first step, then average = d * average + (1 - d) * w.
        average = weight if average is None else decay * average + (1 - decay) * weight
        np.testing.assert_allclose(variable.numpy(), [weight, 2 * weight], rtol=1e-6)
    optimizer.finalize_variable_values([variable])  # what training does at the end with optimizer.ema set
    np.testing.assert_allclose(variable.numpy(), [average, 2 * average], rtol=1e-5)
    assert not math.isclose(average, weight)  # the EMA is not simply the last weights


@pytest.mark.parametrize("gradient, clipped", [([30.0, 40.0], True), ([0.3, 0.4], False)])
def test_clip_norm_bounds_the_applied_update_to_learning_rate_times_the_norm(gradient, clipped):
    variable = keras.Variable(np.zeros(2, np.float32))
    optimizer = sgd(clip_norm=1.0)
    optimizer.build([variable])
    optimizer.apply([tf.constant(gradient)], [variable])
    update = -variable.numpy()
    if clipped:  # norm 50 scaled down to 1: the step is 0.1 long, in the gradient's direction
        np.testing.assert_allclose(update, [0.06, 0.08], rtol=1e-5)
    else:  # norm 0.5 is under the bound: applied as it is
        np.testing.assert_allclose(update, 0.1 * np.asarray(gradient), rtol=1e-5)


def test_label_smoothing_changes_the_training_loss_by_the_formulas_amount():
    """Smoothed targets (1 - e) y + e / K change the cross-entropy by e * (mean_k(-log p_k) - (-log p_y))."""
    logits = np.array([2.0, 0.5, -1.0, 0.0], np.float32)
    inputs = keras.Input((3,))
    dense = keras.layers.Dense(4, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(logits))
    model = keras.Model(inputs, keras.layers.Softmax()(dense(inputs)))
    images = np.ones((8, 3), np.float32)
    labels = tf.constant([0, 0, 0, 1, 0, 0, 3, 0], tf.int32)  # mostly the likeliest class: smoothing costs
    strategy = tf.distribute.get_strategy()

    def loss(smoothing):
        optimizer = keras.optimizers.SGD(learning_rate=0.0)  # the weights stay: only the loss is compared
        config = C.from_dict({"optimizer": {"label_smoothing": smoothing}})
        step = _make_train_step(get_task("classification"), model, optimizer, strategy, 8, False, config)
        return float(step(tf.constant(images), labels)[0])

    log_p = np.log(np.exp(logits) / np.exp(logits).sum())
    plain = float(np.mean(-log_p[labels.numpy()]))
    assert loss(0.0) == pytest.approx(plain, rel=1e-5)
    epsilon = 0.2
    expected_change = epsilon * (np.mean(-log_p) - plain)
    assert loss(epsilon) - loss(0.0) == pytest.approx(expected_change, rel=1e-4)
