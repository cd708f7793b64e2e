"""Gradients on whichever Keras backend is active: the one place in kcnn that needs autodiff.

Everything else in ``kcnn`` is keras, keras.ops and numpy. Each backend's autodiff is imported
here lazily, inside the function that uses it, so importing this module imports no backend.

``value_and_grad(fn, *inputs)`` evaluates ``fn(*inputs)`` (a scalar, or ``(scalar, aux)`` with
``has_aux=True``) and returns its value and its gradients with respect to every input, as numpy
arrays. ``fn`` receives backend tensors and should use ``keras.ops`` (or call Keras models and
layers, which run in inference mode unless told otherwise).
"""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np

__all__ = ["value_and_grad"]


def value_and_grad(fn: Callable, *inputs, has_aux: bool = False):
    """Return ``(value, grads)`` or, with ``has_aux``, ``((value, aux), grads)``; grads is a tuple.

    Values, aux outputs and gradients come back as numpy arrays (aux may be any nest of tensors).
    """
    if not inputs:
        raise ValueError("value_and_grad needs at least one input to differentiate with respect to")
    backend = keras.backend.backend()
    arrays = [np.asarray(x, dtype="float32") if not _is_float_array(x) else np.asarray(x) for x in inputs]
    if backend == "tensorflow":
        result, grads = _tensorflow(fn, arrays, has_aux)
    elif backend == "jax":
        result, grads = _jax(fn, arrays, has_aux)
    elif backend == "torch":
        result, grads = _torch(fn, arrays, has_aux)
    else:
        raise NotImplementedError(
            f"kcnn.autodiff supports the tensorflow, jax and torch backends; the active backend is {backend!r}. "
            "Set KERAS_BACKEND to one of those."
        )
    grads = tuple(np.zeros_like(a) if g is None else np.asarray(keras.ops.convert_to_numpy(g))
                  for a, g in zip(arrays, grads))
    return result, grads


def _is_float_array(x) -> bool:
    return np.issubdtype(np.asarray(x).dtype, np.floating)


def _split(output, has_aux: bool):
    if has_aux:
        value, aux = output
        return value, aux
    return output, None


def _to_numpy(nest):
    return keras.tree.map_structure(lambda t: np.asarray(keras.ops.convert_to_numpy(t)), nest)


def _finish(value, aux, has_aux: bool):
    value = _to_numpy(value)
    if np.ndim(value) != 0:
        raise ValueError(f"value_and_grad: fn must return a scalar, got shape {np.shape(value)}; reduce it first")
    return (value, _to_numpy(aux)) if has_aux else value


def _tensorflow(fn, arrays, has_aux):
    import tensorflow as tf

    tensors = [tf.convert_to_tensor(a) for a in arrays]
    with tf.GradientTape() as tape:
        for t in tensors:
            tape.watch(t)
        value, aux = _split(fn(*tensors), has_aux)
    grads = tape.gradient(value, tensors)
    return _finish(value, aux, has_aux), grads


def _jax(fn, arrays, has_aux):
    import jax
    import jax.numpy as jnp

    tensors = [jnp.asarray(a) for a in arrays]

    def wrapped(*xs):
        value, aux = _split(fn(*xs), has_aux)
        return value, aux

    (value, aux), grads = jax.value_and_grad(wrapped, argnums=tuple(range(len(tensors))), has_aux=True)(*tensors)
    return _finish(value, aux, has_aux), grads


def _torch(fn, arrays, has_aux):
    import torch

    # convert_to_tensor places each array on the device Keras' torch backend uses.
    tensors = [keras.ops.convert_to_tensor(a).detach().requires_grad_(True) for a in arrays]
    value, aux = _split(fn(*tensors), has_aux)
    grads = torch.autograd.grad(value, tensors, allow_unused=True)
    if has_aux:
        aux = keras.tree.map_structure(lambda t: t.detach() if isinstance(t, torch.Tensor) else t, aux)
    return _finish(value.detach(), aux, has_aux), grads
