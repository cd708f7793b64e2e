"""Where a classifier looks: vanilla gradients, SmoothGrad, Grad-CAM, Grad-CAM++ and occlusion.

Every method takes model inputs as the model sees them (already normalised), one image ``[H, W, C]``
or a batch ``[N, H, W, C]``, and returns one heatmap ``[N, H, W]`` per image at the input's size,
scaled to [0, 1] per image. ``class_index`` is the class to explain (an int, one per image, or None for
the predicted class). Scores are taken before the final softmax when the model ends in one.

Sources: Simonyan et al. 2014 (saliency), Smilkov et al. 2017 (SmoothGrad), Selvaraju et al. 2017
(Grad-CAM), Chattopadhyay et al. 2018 (Grad-CAM++), Zeiler and Fergus 2014 (occlusion).
"""

from __future__ import annotations

import keras
import numpy as np

from kcnn.autodiff import value_and_grad
from kcnn.insight.graph import as_batch, get_layer, last_conv_layer, predict, run_graph, score_tensor, scores


def _classes(model, batch, class_index) -> np.ndarray:
    if class_index is None:
        return predict(model, batch).argmax(-1)
    classes = np.broadcast_to(np.asarray(class_index, dtype="int64"), (len(batch),)).copy()
    num_classes = score_tensor(model).shape[-1]
    if classes.min() < 0 or classes.max() >= num_classes:
        raise ValueError(f"class_index must be in [0, {num_classes}), got {class_index!r}")
    return classes


def _one_hot(classes, num_classes) -> np.ndarray:
    return np.eye(num_classes, dtype="float32")[classes]


def _normalise(maps: np.ndarray) -> np.ndarray:
    """Scale each map to [0, 1] (an all-equal map becomes zeros)."""
    maps = np.asarray(maps, dtype="float32")
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1), 0.0).astype("float32")


def _resize(maps: np.ndarray, size: tuple) -> np.ndarray:
    """Bilinear resize of ``[N, h, w]`` maps to ``size`` (height, width)."""
    if maps.shape[1:3] == tuple(size):
        return maps
    resized = keras.ops.image.resize(maps[..., None], size, interpolation="bilinear")
    return np.asarray(keras.ops.convert_to_numpy(resized))[..., 0]


def input_gradients(model, images, class_index=None) -> tuple[np.ndarray, np.ndarray]:
    """dScore/dInput ``[N, H, W, C]`` and the classes explained."""
    batch = as_batch(images)
    classes = _classes(model, batch, class_index)
    target = _one_hot(classes, score_tensor(model).shape[-1])

    def objective(x):
        return keras.ops.sum(scores(model, x) * target)

    _, (grad,) = value_and_grad(objective, batch)
    return grad, classes


def saliency(model, images, class_index=None) -> np.ndarray:
    """Vanilla gradient: the largest |dScore/dPixel| over colour channels (Simonyan et al. 2014)."""
    grad, _ = input_gradients(model, images, class_index)
    return _normalise(np.abs(grad).max(axis=-1))


def smoothgrad(model, images, class_index=None, *, samples: int = 25, noise: float = 0.15, seed: int = 0):
    """Gradients averaged over noisy copies; ``noise`` is the std as a fraction of each image's value range."""
    batch = as_batch(images)
    classes = _classes(model, batch, class_index)
    rng = np.random.default_rng(seed)
    sigma = noise * (batch.max(axis=(1, 2, 3)) - batch.min(axis=(1, 2, 3)))
    total = np.zeros(batch.shape, "float32")
    for _ in range(samples):
        noisy = batch + rng.normal(size=batch.shape).astype("float32") * sigma[:, None, None, None]
        grad, _ = input_gradients(model, noisy, classes)
        total += grad
    return _normalise(np.abs(total / samples).max(axis=-1))


def activation_gradients(model, layer, images, class_index=None):
    """The activations A of ``layer`` and dScore/dA, both ``[N, h, w, k]``, and the classes explained.

    The model is split at the layer: its activation is computed once, then fed as a free variable to
    the rest of the graph, so the gradient is with respect to the activation itself.
    """
    batch = as_batch(images)
    classes = _classes(model, batch, class_index)
    layer = get_layer(model, layer) if layer is not None else last_conv_layer(model)
    features = layer.output
    if len(features.shape) != 4:
        raise ValueError(f"layer {layer.name!r} has output shape {tuple(features.shape)}; Grad-CAM needs a "
                         "4-D feature map (a convolution or pooling layer)")
    activations = np.asarray(keras.ops.convert_to_numpy(run_graph(model, batch, wanted=features)))
    target = _one_hot(classes, score_tensor(model).shape[-1])

    def objective(a):
        return keras.ops.sum(scores(model, batch, replace={features: a}) * target)

    _, (grad,) = value_and_grad(objective, activations)
    return activations, grad, classes


def grad_cam(model, images, class_index=None, *, layer=None) -> np.ndarray:
    """Grad-CAM: ReLU of the feature maps weighted by their spatially averaged gradients, upsampled.

    ``layer`` defaults to the last convolution whose output has more than one position.
    """
    batch = as_batch(images)
    activations, grad, _ = activation_gradients(model, layer, batch, class_index)
    return cam_of(activations, grad, batch.shape[1:3])


def cam_of(activations: np.ndarray, grad: np.ndarray, size: tuple) -> np.ndarray:
    """Grad-CAM's map from activations and their gradients ``[N, h, w, k]``, at ``size``, scaled to [0, 1]."""
    weights = grad.mean(axis=(1, 2), keepdims=True)
    cam = np.maximum((weights * activations).sum(-1), 0.0)
    return _normalise(_resize(cam, size))


def grad_cam_plus_plus(model, images, class_index=None, *, layer=None) -> np.ndarray:
    """Grad-CAM++: pixel-wise weights alpha from the closed form with an exponential score.

    With S = exp(Y), alpha = g^2 / (2 g^2 + sum_ab A g^3) where g = dY/dA, and each map's weight is
    sum(alpha * relu(g)) (Chattopadhyay et al. 2018, eq. 19).
    """
    batch = as_batch(images)
    activations, grad, _ = activation_gradients(model, layer, batch, class_index)
    g2, g3 = grad**2, grad**3
    denominator = 2 * g2 + (activations * g3).sum(axis=(1, 2), keepdims=True)
    alpha = np.where(denominator != 0, g2 / np.where(denominator != 0, denominator, 1), 0.0)
    weights = (alpha * np.maximum(grad, 0.0)).sum(axis=(1, 2), keepdims=True)
    cam = np.maximum((weights * activations).sum(-1), 0.0)
    return _normalise(_resize(cam, batch.shape[1:3]))


def occlusion(model, images, class_index=None, *, patch: int = 8, stride: int = 2, fill=None,
              batch_size: int = 128) -> np.ndarray:
    """Drop in the class probability when a square patch hides each region (Zeiler and Fergus 2014).

    ``fill`` is the patch's value in model-input units (default: each image's mean, a grey patch).
    Each pixel gets the mean drop over the patches that covered it.
    """
    batch = as_batch(images)
    classes = _classes(model, batch, class_index)
    height, width = batch.shape[1:3]
    if patch < 1 or patch > min(height, width) or stride < 1:
        raise ValueError(f"occlusion needs 1 <= patch <= image size and stride >= 1, got patch={patch}, "
                         f"stride={stride} for {height}x{width} images")
    tops = list(range(0, height - patch + 1, stride))
    lefts = list(range(0, width - patch + 1, stride))
    maps = np.zeros(batch.shape[:3], "float32")
    for n, image in enumerate(batch):
        base = predict(model, image)[0, classes[n]]
        value = image.mean(axis=(0, 1)) if fill is None else fill
        boxes = [(t, l) for t in tops for l in lefts]
        occluded = np.repeat(image[None], len(boxes), axis=0)
        for i, (t, l) in enumerate(boxes):
            occluded[i, t:t + patch, l:l + patch] = value
        drops = base - predict(model, occluded, batch_size)[:, classes[n]]
        total, count = np.zeros((height, width), "float32"), np.zeros((height, width), "float32")
        for (t, l), drop in zip(boxes, drops):
            total[t:t + patch, l:l + patch] += drop
            count[t:t + patch, l:l + patch] += 1
        maps[n] = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    return _normalise(np.maximum(maps, 0.0))
