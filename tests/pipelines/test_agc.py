"""Adaptive gradient clipping (Brock et al., 2021, "High-Performance Large-Scale Image Recognition Without
Normalization", section 4.1, eq. 3): G_i <- clip * max(||W_i||, eps) / ||G_i|| * G_i when the unit-wise ratio
||G_i|| / max(||W_i||, eps) exceeds clip, for each output unit i; the final classifier is not clipped."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from pipelines import config as C
from pipelines.optim import AGCSGD, adaptive_gradient_clip, make_optimizer


def paper_agc(w, g, clip, eps=1e-3, axes=None):
    """Eq. 3 written out in NumPy: norms per output unit (last axis), scaled where the ratio exceeds clip."""
    axes = tuple(range(w.ndim - 1)) if axes is None else axes
    w_norm = np.sqrt((w**2).sum(axis=axes, keepdims=True)) if w.ndim > 1 else np.abs(w)
    g_norm = np.sqrt((g**2).sum(axis=axes, keepdims=True)) if g.ndim > 1 else np.abs(g)
    bound = clip * np.maximum(w_norm, eps)
    return np.where(g_norm / np.maximum(w_norm, eps) > clip, g * bound / g_norm, g)


def test_clips_each_output_unit_to_the_ratio_and_leaves_the_others():
    rng = np.random.default_rng(0)
    kernel = keras.Variable(rng.normal(size=(3, 3, 4, 5)).astype("float32"), name="kernel")
    bias = keras.Variable(np.array([0.5, 0.0, -2.0], "float32"), name="bias")
    g_kernel = rng.normal(size=(3, 3, 4, 5)).astype("float32") * np.array([0.001, 10, 0.001, 1, 0.05], "float32")
    g_bias = np.array([0.001, 0.5, 1.0], "float32")
    clip = 0.01
    out_kernel, out_bias = (keras.ops.convert_to_numpy(t) for t in
                            adaptive_gradient_clip([g_kernel, g_bias], [kernel, bias], clip))
    np.testing.assert_allclose(out_kernel, paper_agc(kernel.numpy(), g_kernel, clip), rtol=1e-5)
    np.testing.assert_allclose(out_bias, paper_agc(bias.numpy(), g_bias, clip), rtol=1e-5)
    # Unit by unit: clipped units end exactly at the bound, the small ones are untouched.
    w_norm = np.sqrt((kernel.numpy() ** 2).sum(axis=(0, 1, 2)))
    g_norm = np.sqrt((g_kernel**2).sum(axis=(0, 1, 2)))
    out_norm = np.sqrt((out_kernel**2).sum(axis=(0, 1, 2)))
    for unit in range(5):
        if g_norm[unit] / w_norm[unit] > clip:
            assert out_norm[unit] == pytest.approx(clip * w_norm[unit], rel=1e-5)
        else:
            np.testing.assert_array_equal(out_kernel[..., unit], g_kernel[..., unit])
    # The zero bias is bounded by eps = 1e-3: 0.5 -> clip * 1e-3 = 1e-5.
    assert out_bias[1] == pytest.approx(1e-5)
    assert out_bias[0] == pytest.approx(0.001)  # ratio 0.001 / 0.5 = 0.002 < clip: kept
    assert out_bias[2] == pytest.approx(0.02)  # ratio 0.5: bounded to 0.01 * |-2|


def test_sgd_step_with_agc_moves_each_unit_by_at_most_clip_times_its_norm():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(4, name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(hidden))
    config = C.OptimizerConfig(name="sgd", learning_rate=1.0, momentum=0.0, schedule="constant", agc_clip=0.01)
    optimizer = make_optimizer(config, steps_per_epoch=1, epochs=1, global_batch=1)
    assert isinstance(optimizer, AGCSGD) and optimizer.agc_clip == 0.01
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    grads = [np.full(v.shape, 100.0, "float32") for v in model.trainable_variables]
    optimizer.apply(grads, model.trainable_variables)
    for variable, grad in zip(model.trainable_variables, grads):
        step = before[variable.path] - variable.numpy()
        if variable.path.startswith("logits/"):
            np.testing.assert_allclose(step, grad)  # the classifier is not clipped
        else:
            np.testing.assert_allclose(step, paper_agc(before[variable.path], grad, 0.01), rtol=1e-4)
    kernel = before["hidden/kernel"]
    moved = np.sqrt(((kernel - model.get_layer("hidden").kernel.numpy()) ** 2).sum(axis=0))
    np.testing.assert_allclose(moved, 0.01 * np.sqrt((kernel**2).sum(axis=0)), rtol=1e-4)


def test_agc_clip_is_a_checked_optimizer_option():
    assert C.from_dict({"optimizer": {"agc_clip": 0.01}}).optimizer.agc_clip == 0.01
    assert C.from_dict({}).optimizer.agc_clip is None
    with pytest.raises(C.ConfigError, match=r"optimizer.agc_clip must be in \(0, 1e\+09\], got 0.0"):
        C.from_dict({"optimizer": {"agc_clip": 0.0}})
