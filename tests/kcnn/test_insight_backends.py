"""kcnn.insight gives the same maps on JAX (TensorFlow blocked) as on TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = textwrap.dedent(
    """
    import importlib.abc, os, sys
    if os.environ["KERAS_BACKEND"] != "tensorflow":
        class BlockTensorFlow(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "tensorflow" or name.startswith("tensorflow."):
                    raise ImportError("tensorflow is blocked in this test")
        sys.meta_path.insert(0, BlockTensorFlow())
    import numpy as np, keras
    from kcnn import insight
    assert keras.backend.backend() == os.environ["KERAS_BACKEND"]
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", kernel_initializer="zeros", name="c1")(inputs)
    x = keras.layers.MaxPooling2D(name="p1")(x)
    x = keras.layers.Conv2D(6, 3, padding="same", kernel_initializer="zeros", name="c2")(x)
    x = keras.layers.ReLU(name="r2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", kernel_initializer="zeros")(x))
    # Zero initialisers, then random weights: JAX compiles every random initializer shape (slow on CPU).
    rng = np.random.default_rng(1)
    model.set_weights([rng.standard_normal(w.shape).astype("float32") * 0.5 for w in model.get_weights()])
    images = rng.standard_normal((2, 12, 12, 3)).astype("float32")
    grad, _ = insight.input_gradients(model, images, class_index=[0, 2])
    activations, cam_grad, _ = insight.activation_gradients(model, "r2", images, class_index=[0, 2])
    deconv, _ = insight.deconvnet(model, "r2", 1, images[0])
    np.savez(sys.argv[1], grad=grad, cam_grad=cam_grad, activations=activations, deconv=deconv)
    assert not any(m == "tensorflow" or m.startswith("tensorflow.") for m in sys.modules) or \\
        os.environ["KERAS_BACKEND"] == "tensorflow"
    print("OK", keras.backend.backend())
    """
)


@pytest.mark.slow
def test_tensorflow_and_jax_give_the_same_gradients_and_maps(tmp_path):
    results = {}
    for backend in ("tensorflow", "jax"):
        out = tmp_path / f"{backend}.npz"
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        done = subprocess.run([sys.executable, "-c", SCRIPT, str(out)], env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip().endswith(f"OK {backend}")
        results[backend] = dict(np.load(out))
    tf, jax = results["tensorflow"], results["jax"]
    for key in ("grad", "cam_grad", "deconv"):
        assert np.abs(tf[key]).max() > 0, key
        np.testing.assert_allclose(tf[key], jax[key], atol=1e-4, err_msg=key)
    np.testing.assert_allclose(tf["activations"], jax["activations"], atol=1e-4, rtol=1e-4)
