"""Trained quantisation by weight sharing (Han et al., 2016, section 3).

Each layer's kernel is clustered with one-dimensional k-means into ``2**bits - 1`` centroids,
initialised linearly between the smallest and largest weight (the initialisation the paper
found best, since it keeps the rare large weights); code 0 is reserved for exact zero (pruned
weights, and the filler entries of the sparse format). The kernel becomes
``codebook[index]``. ``finetune_centroids`` then trains the codebooks: the gradient of a
centroid is the sum of the gradients of the weights that share it, the indices stay fixed.

Widths are per layer: one integer for every Conv2D and Dense layer, or a mapping whose keys are
``conv`` (every Conv2D), ``fc`` (every Dense), layer names or fnmatch globs, as Deep Compression
uses 8 bits in conv layers and 5 in fc layers (``resolve_bits``).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from kcnn.autodiff import value_and_grad
from kcnn.compress.pruning import PRUNABLE, kernel_variable

# The layer kinds a width mapping may name, in Deep Compression's words (CONV and FC layers).
LAYER_KINDS = {"conv": keras.layers.Conv2D, "fc": keras.layers.Dense}
MAX_BITS = 16


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


def resolve_bits(model, bits, *, what: str = "bits") -> dict[str, int]:
    """Layer name -> width for the Conv2D and Dense layers of ``model``.

    ``bits`` is one integer (every such layer) or a mapping from ``conv`` (every Conv2D),
    ``fc`` (every Dense), a layer name or an fnmatch glob to a width; a layer matched by several
    keys takes the last one given, and layers no key matches are left out. Every key must match
    a layer and every width lie in 1..16; ``what`` names the option in the errors.
    """
    layers = quantisable_layers(model)
    if not isinstance(bits, dict):
        bits = {"*": bits}
    resolved = {}
    for key, width in bits.items():
        if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or not 1 <= width <= MAX_BITS:
            raise ValueError(f"{what} for {key!r} must be an integer from 1 to {MAX_BITS}, got {width!r}")
        if key in LAYER_KINDS:
            matched = [layer.name for layer in layers if isinstance(layer, LAYER_KINDS[key])]
        else:
            matched = fnmatch.filter([layer.name for layer in layers], key)
        if not matched:
            names = [layer.name for layer in layers]
            raise ValueError(f"{what} key {key!r} matches no Conv2D or Dense layer of {model.name} (keys: conv, fc, "
                             f"a layer name or glob); its layers are {', '.join(names[:8])}"
                             f"{'...' if len(names) > 8 else ''}")
        resolved.update({name: int(width) for name in matched})
    return {layer.name: resolved[layer.name] for layer in layers if layer.name in resolved}


def quantise(model, bits: int | dict = 6) -> dict[str, LayerCode]:
    """Share the kernel weights of the Conv2D and Dense layers of ``model`` (in place).

    ``bits`` is one width for all layers or a mapping as ``resolve_bits`` reads it, e.g.
    ``{"conv": 8, "fc": 5}`` (layers left out keep float weights). Returns layer name ->
    ``LayerCode``; the model's kernels are set to the reconstructed ``codebook[index]``.
    """
    widths = resolve_bits(model, bits)
    codes = {}
    for layer in quantisable_layers(model):
        if layer.name not in widths:
            continue
        codes[layer.name] = quantise_kernel(ops.convert_to_numpy(layer.kernel), widths[layer.name])
        kernel_variable(layer).assign(codes[layer.name].kernel())
    return codes


def centroid_optimizer(steps: int, learning_rate: float = 3e-3):
    """The optimizer ``kcnn compress`` fine-tunes centroids with: Adam, its rate decayed to 0 over ``steps``.

    A centroid's gradient is a sum over every weight that shares it, so its scale grows with the
    cluster (SqueezeNet's pruned fire9 expand3x3 kernel at 6 bits: about 700 weights a centroid);
    Adam's per-centroid step does not depend on that scale. On the README's SqueezeNet digits run (one-shot Table 1
    pruning, 6 bits) 60 steps take the test top-1 from 91.1% back to 96.7% (dense: 97.2%), where
    SGD with momentum stopped near 95%.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, steps))


def finetune_centroids(model, codes: dict[str, LayerCode], batches, *, optimizer=None, learning_rate: float = 1e-3,
                       momentum: float = 0.9) -> list[float]:
    """Train the codebooks on ``batches`` of (images, integer labels); returns the loss per batch.

    Every step differentiates the loss with respect to the kernels (``kcnn.autodiff``, any
    backend), sums the gradients of the weights sharing each centroid (``bincount`` over the
    index), steps the centroids with ``optimizer`` (any Keras optimizer; by default the paper's
    SGD at ``learning_rate`` with ``momentum``; ``centroid_optimizer`` is kcnn compress's) and writes
    ``codebook[index]`` back into the kernels. Code 0 stays exactly 0; the indices never change.
    """
    layers = {layer.name: layer for layer in model.layers}
    names = list(codes)
    kernels = [kernel_variable(layers[name]) for name in names]
    trainable = list(model.trainable_variables)
    slots = [next(i for i, v in enumerate(trainable) if v is k) for k in kernels]
    codebooks = [keras.Variable(codes[name].codebook, dtype="float32", name=f"codebook_{i}")
                 for i, name in enumerate(names)]
    optimizer = optimizer or keras.optimizers.SGD(learning_rate, momentum=momentum)
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
        shared = []
        for name, grad in zip(names, grads):
            code = codes[name]
            summed = np.bincount(code.index.ravel(), weights=np.asarray(grad, np.float64).ravel(),
                                 minlength=code.codebook.size)
            summed[0] = 0.0
            shared.append(ops.convert_to_tensor(summed.astype(np.float32)))
        optimizer.apply(shared, codebooks)
        for name, kernel, codebook in zip(names, kernels, codebooks):
            code = codes[name]
            code.codebook = ops.convert_to_numpy(codebook).astype(np.float32)
            code.codebook[0] = 0.0
            codebook.assign(code.codebook)
            kernel.assign(code.kernel())
    return losses
