"""kcnn/ imports only keras, keras.ops and numpy, so it runs on every Keras backend.

The checks of tests/backend_checks.py run here on TensorFlow and, all of them in one process, on JAX
with TensorFlow blocked (the ``on_jax`` fixture); the tests compare the two or read what JAX returned.
They share this module so that pytest-xdist (``--dist loadscope``) runs that one JAX process once.
"""

from __future__ import annotations

import ast
import pathlib

import keras
import numpy as np
import pytest
from backend_checks import autodiff_gradient, builders, insight_maps

import kcnn

PACKAGE = pathlib.Path(kcnn.__file__).parent


# The one module allowed to import a backend's autodiff, and only inside its functions (lazily).
AUTODIFF = "autodiff.py"


def test_no_module_in_kcnn_imports_tensorflow():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        lazy_allowed = path.relative_to(PACKAGE).as_posix() == AUTODIFF
        nodes = tree.body if lazy_allowed else ast.walk(tree)  # autodiff: module level only
        for node in nodes:
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(PACKAGE)}: {n}" for n in names if n.split(".")[0] == "tensorflow"]
    assert offenders == []


@pytest.mark.slow  # a JAX process: about 30 s of compiling initializers on two cores
@pytest.mark.on_jax("builders")
def test_builders_run_on_jax_with_tensorflow_blocked(on_jax):
    builders()  # the same check here, on TensorFlow
    result = on_jax.result("builders")
    assert result["segmentation"].shape == (1, 37, 37, 5)


@pytest.mark.slow
@pytest.mark.on_jax("autodiff_gradient")
def test_tensorflow_and_jax_agree_on_a_model_gradient(on_jax):
    tensorflow = autodiff_gradient()["value_and_grad"]  # this process runs on TensorFlow
    jax = on_jax.result("autodiff_gradient")["value_and_grad"]
    assert np.abs(tensorflow[1:]).max() > 0
    np.testing.assert_allclose(tensorflow, jax, atol=1e-4)


@pytest.mark.slow
@pytest.mark.on_jax("compress_round_trip")
def test_compress_runs_on_jax_with_tensorflow_blocked(on_jax):
    result = on_jax.result("compress_round_trip")  # zeros kept through fit and strip, identical reload: asserted there
    assert result["pruned_zeros"].sum() == 72 - 18  # density 0.25 of the 3x3x1x8 kernel keeps round(0.25 * 72)


@pytest.mark.slow
@pytest.mark.on_jax("newer_blocks")
def test_new_blocks_and_layers_run_on_jax(on_jax):
    result = on_jax.result("newer_blocks")  # shapes and finite values asserted there, in and out of training
    assert set(result) == {"training_False", "training_True"}


@pytest.mark.slow
@pytest.mark.on_jax("insight_maps")
def test_tensorflow_and_jax_give_the_same_gradients_and_maps(on_jax):
    assert keras.backend.backend() == "tensorflow"
    tf, jax = insight_maps(), on_jax.result("insight_maps")
    for key in ("grad", "cam_grad", "deconv"):
        assert np.abs(tf[key]).max() > 0, key
        np.testing.assert_allclose(tf[key], jax[key], atol=1e-4, err_msg=key)
    np.testing.assert_allclose(tf["activations"], jax["activations"], atol=1e-4, rtol=1e-4)


@pytest.mark.on_jax("super_resolution")
def test_super_resolution_models_run_on_jax_with_tensorflow_blocked(on_jax):
    import tensorflow as tf

    from kcnn.superres import bicubic

    result = on_jax.result("super_resolution")
    z = np.arange(2 * 3 * 4 * 8, dtype=np.float32).reshape(2, 3, 4, 8)
    np.testing.assert_array_equal(result["shuffled"], tf.nn.depth_to_space(z, 2).numpy())
    x = np.random.default_rng(0).random((1, 5, 6, 1), dtype=np.float32)
    # The same keras.ops filter on both backends, and it is TensorFlow's resize (test_superres).
    np.testing.assert_allclose(result["bicubic"], bicubic(3)(x), atol=1e-6)
    np.testing.assert_allclose(result["bicubic"], tf.image.resize(x, (15, 18), method="bicubic"), atol=1e-6)
