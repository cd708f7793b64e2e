"""What a layer has learned: its filters, its feature maps, and the input that excites a unit most.

``filters`` and ``activations`` return a :class:`Grid` of tiles scaled to [0, 1] per tile, ready for
:func:`kcnn.insight.draw.save_grid`. ``maximize_activation`` climbs the gradient of one unit from
noise (Erhan et al. 2009; the regularisers are those of Yosinski et al. 2015: L2 decay, jitter, blur).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np

from kcnn.autodiff import value_and_grad
from kcnn.insight.graph import (
    as_batch, first_conv_layer, functional, get_layer, is_conv, run_graph, score_tensor, scores,
)


@dataclass
class Grid:
    """Tiles ``[n, h, w, c]`` (c = 1 or 3) in [0, 1], laid out ``columns`` wide, with one label each."""

    tiles: np.ndarray
    columns: int
    labels: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tiles)


def scale_tiles(tiles: np.ndarray) -> np.ndarray:
    """Min-max scale each tile to [0, 1] on its own (an all-equal tile becomes 0.5)."""
    tiles = np.asarray(tiles, dtype="float32")
    axes = tuple(range(1, tiles.ndim))
    low = tiles.min(axis=axes, keepdims=True)
    span = tiles.max(axis=axes, keepdims=True) - low
    return np.where(span > 0, (tiles - low) / np.where(span > 0, span, 1), 0.5).astype("float32")


def filters(model, layer=None, *, max_filters: int = 64, max_channels: int = 8) -> Grid:
    """The kernels of a convolution layer (default: the first) as tiles.

    A layer reading 1 or 3 channels (the first layer) gives one grey or RGB tile per filter. A deeper
    layer gives one grey tile per (filter, input channel) for its first ``max_channels`` input
    channels: one row per filter.
    """
    layer = get_layer(model, layer) if layer is not None else first_conv_layer(model)
    if not is_conv(layer):
        raise ValueError(f"layer {layer.name!r} is a {type(layer).__name__}; filters() needs a convolution layer")
    # A depthwise or separable layer's spatial filters are its depthwise kernel; a pruned (masked) Conv2D's
    # kernel attribute is the kernel times its mask, the filters it computes with.
    kernel = np.asarray(keras.ops.convert_to_numpy(getattr(layer, "depthwise_kernel", None)
                                                   if hasattr(layer, "depthwise_kernel") else layer.kernel))
    kernel = kernel[..., :max_filters]  # [kh, kw, c_in, c_out]
    c_in, c_out = kernel.shape[2], kernel.shape[3]
    if c_in in (1, 3):
        tiles = np.transpose(kernel, (3, 0, 1, 2))
        return Grid(scale_tiles(tiles), columns=int(np.ceil(np.sqrt(c_out))),
                    labels=[f"{layer.name}:{i}" for i in range(c_out)])
    shown = min(c_in, max_channels)
    tiles = np.transpose(kernel[:, :, :shown], (3, 2, 0, 1)).reshape(c_out * shown, *kernel.shape[:2], 1)
    labels = [f"{o}<-{i}" for o in range(c_out) for i in range(shown)]
    return Grid(scale_tiles(tiles), columns=shown, labels=labels)


def activations(model, layer, image, *, top_k: int = 16) -> Grid:
    """The ``top_k`` feature maps of ``layer`` for one image, strongest (highest mean) first."""
    batch = as_batch(image)[:1]
    tensor = get_layer(model, layer).output
    if len(tensor.shape) != 4:
        raise ValueError(f"layer {get_layer(model, layer).name!r} has output shape {tuple(tensor.shape)}; "
                         "activations() needs a 4-D feature map")
    maps = np.asarray(keras.ops.convert_to_numpy(run_graph(model, batch, wanted=tensor)))[0]
    means = maps.mean(axis=(0, 1))
    order = np.argsort(-means, kind="stable")[:top_k]
    tiles = np.transpose(maps[..., order], (2, 0, 1))[..., None]
    return Grid(scale_tiles(tiles), columns=int(np.ceil(np.sqrt(len(order)))),
                labels=[f"ch {c} ({means[c]:.2g})" for c in order])


def unit_objective(model, layer=None, unit: int = 0):
    """A function of model inputs: the mean activation of channel ``unit`` of ``layer`` (a class score
    before softmax when ``layer`` is None), summed over the batch."""
    tensor = score_tensor(model) if layer is None else get_layer(model, layer).output
    if not 0 <= unit < tensor.shape[-1]:
        raise ValueError(f"unit must be in [0, {tensor.shape[-1]}) for this layer, got {unit}")

    def objective(x):
        values = (scores(model, x) if layer is None else run_graph(model, x, wanted=tensor))[..., unit]
        axes = tuple(range(1, len(values.shape)))
        per_image = keras.ops.mean(values, axis=axes) if axes else values
        return keras.ops.sum(per_image)

    return objective


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of ``[H, W, C]`` with reflected borders."""
    radius = max(1, int(round(2 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    for axis in (0, 1):
        pad = [(0, 0)] * image.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(image, pad, mode="reflect")
        size = image.shape[axis]
        image = sum(w * np.take(padded, np.arange(i, i + size), axis=axis) for i, w in enumerate(taps))
    return image.astype("float32")


def maximize_activation(model, layer=None, unit: int = 0, *, steps: int = 100, step_size: float = 0.05,
                        jitter: int = 2, blur_sigma: float = 0.0, blur_every: int = 4, l2_decay: float = 0.0,
                        norm_percentile: float = 0.0, octaves: int = 1, octave_scale: float = 1.6,
                        value_range: tuple | None = None, seed: int = 0):
    """Gradient ascent from small noise to an input that maximises one unit; returns (image, history).

    Each step rolls the image by up to ``jitter`` pixels, takes the gradient of the unit's activation,
    divides it by its root mean square (an L2-normalised step: each pixel moves about ``step_size``),
    then applies Yosinski et al.'s (2015) regularisers: L2 decay, a Gaussian blur every ``blur_every``
    steps, and zeroing the pixels whose norm over the channels is below the ``norm_percentile``-th
    percentile (0 = the mean colour of a normalised input); last, clipping to ``value_range``.

    ``octaves > 1`` climbs coarse to fine, as their figures' multi-scale renderings do: the image is a
    coarser grid (each octave ``octave_scale`` times finer, the last at the input's size) bilinearly
    upsampled to the input, so early steps can only build large structures; the steps are shared evenly.
    ``history`` holds the activation of the unjittered image before each step and after the last one
    (``steps + 1`` values).
    """
    graph = functional(model)
    shape = tuple(graph.inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise ValueError(f"the model's input shape {shape} has unknown sizes; maximize_activation needs a fixed one")
    if not isinstance(octaves, int) or octaves < 1:
        raise ValueError(f"octaves must be a positive integer, got {octaves!r}")
    if not 0 <= norm_percentile < 100:
        raise ValueError(f"norm_percentile must be in [0, 100), got {norm_percentile!r}")
    objective = unit_objective(model, layer, unit)
    rng = np.random.default_rng(seed)
    height, width = shape[:2]
    sizes = [(max(1, round(height / octave_scale ** k)), max(1, round(width / octave_scale ** k)))
             for k in reversed(range(octaves))]
    coarse = rng.normal(0.0, 0.1, (*sizes[0], *shape[2:])).astype("float32")
    history = []
    for octave, size in enumerate(sizes):
        up = _Upsample(size, (height, width))
        if octave:
            coarse = _Upsample(coarse.shape[:2], size)(coarse)
        octave_steps = steps // octaves + (1 if octave < steps % octaves else 0)
        for _ in range(octave_steps):
            image = up(coarse)[None]
            dy, dx = rng.integers(-jitter, jitter + 1, 2) if jitter else (0, 0)
            shifted = np.roll(image, (dy, dx), axis=(1, 2))
            value, (grad,) = value_and_grad(objective, shifted)
            history.append(float(value) if not jitter else _evaluate(objective, image))
            grad = up.adjoint(np.roll(np.asarray(grad), (-dy, -dx), axis=(1, 2))[0])
            grad /= np.sqrt(np.mean(grad**2)) + 1e-8
            coarse = coarse + step_size * grad
            if l2_decay:
                coarse *= 1.0 - l2_decay
            if blur_sigma and (len(history) % blur_every == 0):
                coarse = _blur(coarse, blur_sigma * size[0] / height)
            if norm_percentile:
                norms = np.sqrt(np.sum(coarse**2, axis=-1))
                coarse = np.where((norms < np.percentile(norms, norm_percentile))[..., None], 0.0, coarse)
            if value_range is not None:
                coarse = np.clip(coarse, *value_range)
            coarse = coarse.astype("float32")
    image = _Upsample(sizes[-1], (height, width))(coarse)[None]
    history.append(_evaluate(objective, image))
    return image[0], np.asarray(history, "float32")


class _Upsample:
    """Bilinear resize ``[h, w, c] -> [H, W, c]`` (half-pixel centres) as two matrices, and its adjoint
    (the exact gradient of the resize, to carry an input gradient back to the coarse image)."""

    def __init__(self, size: tuple, target: tuple):
        self.rows, self.columns = _linear_matrix(target[0], size[0]), _linear_matrix(target[1], size[1])

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return np.einsum("Hh,hwc,Ww->HWc", self.rows, image, self.columns).astype("float32")

    def adjoint(self, grad: np.ndarray) -> np.ndarray:
        return np.einsum("Hh,HWc,Ww->hwc", self.rows, grad, self.columns).astype("float32")


def _linear_matrix(n_out: int, n_in: int) -> np.ndarray:
    """``[n_out, n_in]`` weights of 1-D linear interpolation with half-pixel centres, edges clamped."""
    matrix = np.zeros((n_out, n_in), "float64")
    if n_in == n_out:
        return np.eye(n_out)
    position = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, n_in - 1)
    fraction = position - low
    matrix[np.arange(n_out), low] += 1 - fraction
    matrix[np.arange(n_out), high] += fraction
    return matrix


def _evaluate(objective, image) -> float:
    return float(keras.ops.convert_to_numpy(objective(keras.ops.convert_to_tensor(as_batch(image)))))
