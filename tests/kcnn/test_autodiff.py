"""kcnn.autodiff gives the same gradients on TensorFlow and on JAX (TensorFlow blocked there)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from kcnn.autodiff import value_and_grad

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
    from kcnn.autodiff import value_and_grad
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 3, activation="relu", name="conv")(inputs)
    outputs = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(1)
    model.set_weights([rng.standard_normal(w.shape).astype("float32") for w in model.get_weights()])
    image = rng.standard_normal((1, 6, 6, 2)).astype("float32")
    value, (grad,) = value_and_grad(lambda t: keras.ops.sum(model(t)[:, 2]), image)
    np.save(sys.argv[1], np.concatenate([[value], grad.ravel()]))
    """
)


def test_gradient_of_a_square_is_twice_the_input():
    x = np.array([[1.0, -2.0], [0.5, 3.0]], "float32")
    value, (grad,) = value_and_grad(lambda t: keras.ops.sum(t * t), x)
    assert value == pytest.approx(14.25)
    np.testing.assert_allclose(grad, 2 * x)


def test_several_inputs_and_aux_outputs():
    a, b = np.float32([1.0, 2.0]), np.float32([3.0, 4.0])
    (value, aux), (ga, gb) = value_and_grad(lambda x, y: (keras.ops.sum(x * y), x + y), a, b, has_aux=True)
    assert value == pytest.approx(11.0)
    np.testing.assert_allclose(aux, [4.0, 6.0])
    np.testing.assert_allclose(ga, b)
    np.testing.assert_allclose(gb, a)


def test_non_scalar_output_is_a_clear_error():
    with pytest.raises(ValueError, match="must return a scalar"):
        value_and_grad(lambda t: t * 2, np.ones(3, "float32"))


@pytest.mark.slow
def test_tensorflow_and_jax_agree_on_a_model_gradient(tmp_path):
    results = {}
    for backend in ("tensorflow", "jax"):
        out = tmp_path / f"{backend}.npy"
        env = {**__import__("os").environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        done = subprocess.run([sys.executable, "-c", SCRIPT, str(out)], env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        results[backend] = np.load(out)
    assert np.abs(results["tensorflow"][1:]).max() > 0
    np.testing.assert_allclose(results["tensorflow"], results["jax"], atol=1e-4)
