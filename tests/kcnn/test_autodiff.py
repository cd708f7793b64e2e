"""kcnn.autodiff: values and gradients (its agreement with JAX: test_backend_agnostic.py)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kcnn.autodiff import value_and_grad

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
