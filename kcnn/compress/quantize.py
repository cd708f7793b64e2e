"""Trained quantisation by weight sharing (Han et al., 2016, section 3).

Each layer's kernel is clustered with one-dimensional k-means into ``2**bits - 1`` centroids,
initialised linearly between the smallest and largest weight (the initialisation the paper
found best, since it keeps the rare large weights); code 0 is reserved for exact zero (pruned
weights, and the filler entries of the sparse format). The kernel becomes
``codebook[index]``. ``finetune_centroids`` then trains the codebooks: the gradient of a
centroid is the sum of the gradients of the weights that share it, the indices stay fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from kcnn.autodiff import value_and_grad
from kcnn.compress.pruning import PRUNABLE, kernel_variable


@dataclass
class LayerCode:
    """A layer's shared weights: ``kernel == codebook[index]``; ``codebook[0] == 0``."""

    codebook: np.ndarray  # float32 [2**bits]
    index: np.ndarray  # integer, the kernel's shape
    bits: int

    def kernel(self) -> np.ndarray:
        return self.codebook[self.index].astype(np.float32)


def kmeans_linear(values: np.ndarray, clusters: int, iterations: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """1-D k-means with linear initialisation; returns (centroids, assignment of each value)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    centroids = np.linspace(values.min(), values.max(), clusters)
    assignment = np.zeros(values.size, dtype=np.int64)
    for _ in range(iterations):
        order = np.argsort(centroids, kind="stable")
        edges = (centroids[order][1:] + centroids[order][:-1]) / 2
        assignment = order[np.searchsorted(edges, values)]
        sums = np.bincount(assignment, weights=values, minlength=clusters)
        counts = np.bincount(assignment, minlength=clusters)
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)  # empty clusters stay put
        if np.allclose(updated, centroids, rtol=0, atol=1e-12):
            break
        centroids = updated
    return centroids, assignment


def quantise_kernel(kernel: np.ndarray, bits: int) -> LayerCode:
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be between 1 and 16, got {bits}")
    kernel = np.asarray(kernel, dtype=np.float32)
    index = np.zeros(kernel.shape, dtype=np.uint16 if bits > 8 else np.uint8)
    codebook = np.zeros(2 ** bits, dtype=np.float32)
    nonzero = kernel != 0
    if bits > 1 and nonzero.any():
        centroids, assignment = kmeans_linear(kernel[nonzero], 2 ** bits - 1)
        codebook[1:] = centroids.astype(np.float32)
        index[nonzero] = assignment + 1
    return LayerCode(codebook, index, bits)


def quantisable_layers(model) -> list:
    return [layer for layer in model.layers if isinstance(layer, PRUNABLE)]


def quantise(model, bits: int | dict = 6) -> dict[str, LayerCode]:
    """Share the kernel weights of every Conv2D and Dense layer of ``model`` (in place).

    ``bits`` is one width for all layers or a dict layer name -> width (layers left out keep
    float weights). Returns layer name -> ``LayerCode``; the model's kernels are set to the
    reconstructed ``codebook[index]``.
    """
    codes = {}
    for layer in quantisable_layers(model):
        width = bits.get(layer.name) if isinstance(bits, dict) else bits
        if width is None:
            continue
        codes[layer.name] = quantise_kernel(ops.convert_to_numpy(layer.kernel), int(width))
        kernel_variable(layer).assign(codes[layer.name].kernel())
    return codes


def finetune_centroids(model, codes: dict[str, LayerCode], batches, *, learning_rate: float = 1e-3,
                       momentum: float = 0.9) -> list[float]:
    """Train the codebooks on ``batches`` of (images, integer labels); returns the loss per batch.

    Every step differentiates the loss with respect to the kernels (``kcnn.autodiff``, any
    backend), sums the gradients of the weights sharing each centroid (``bincount`` over the
    index), takes an SGD-with-momentum step on the centroids (code 0 stays exactly 0) and writes
    ``codebook[index]`` back into the kernels.
    """
    layers = {layer.name: layer for layer in model.layers}
    names = list(codes)
    kernels = [kernel_variable(layers[name]) for name in names]
    trainable = list(model.trainable_variables)
    slots = [next(i for i, v in enumerate(trainable) if v is k) for k in kernels]
    velocity = {name: np.zeros_like(codes[name].codebook) for name in names}
    losses = []
    for images, labels in batches:
        images = ops.convert_to_tensor(np.asarray(images))
        labels = ops.convert_to_tensor(np.asarray(labels).astype("int32"))

        def loss_fn(*kernel_values):
            values = [v.value for v in trainable]
            for slot, value in zip(slots, kernel_values):
                values[slot] = value
            outputs, _ = model.stateless_call(values, [v.value for v in model.non_trainable_variables], images,
                                              training=False)
            return ops.mean(keras.losses.sparse_categorical_crossentropy(labels, outputs))

        loss, grads = value_and_grad(loss_fn, *[ops.convert_to_numpy(k) for k in kernels])
        losses.append(float(loss))
        for name, kernel, grad in zip(names, kernels, grads):
            code = codes[name]
            shared = np.bincount(code.index.ravel(), weights=np.asarray(grad, np.float64).ravel(),
                                 minlength=code.codebook.size)
            shared[0] = 0.0
            velocity[name] = momentum * velocity[name] - learning_rate * shared.astype(np.float32)
            code.codebook = (code.codebook + velocity[name]).astype(np.float32)
            code.codebook[0] = 0.0
            kernel.assign(code.kernel())
    return losses
