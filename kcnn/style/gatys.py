"""Neural style transfer by optimisation (Gatys, Ecker and Bethge, "Image Style Transfer Using
Convolutional Neural Networks", CVPR 2016), on any Keras backend.

The generated image's pixels are the variables: starting from the content image (or noise), they
move to minimise ``content_weight * L_content + style_weight * L_style + tv_weight * L_tv`` with
the loss network frozen. L-BFGS (scipy, with the pixels bounded to [0, 255]) is the paper's
optimiser; Adam is offered for comparison. Options: coarse-to-fine scales and colour
preservation by luminance-only transfer (Gatys et al., "Controlling Perceptual Factors in
Neural Style Transfer", CVPR 2017, section 5).
"""

from __future__ import annotations

import dataclasses
import time

import keras
import numpy as np
from keras import ops

from kcnn.autodiff import value_and_grad
from kcnn.style import images as image_utils
from kcnn.style.features import CONTENT_LAYERS, STYLE_LAYERS, FeatureExtractor, vgg19_features
from kcnn.style.losses import content_loss, gram_matrix, style_loss, total_variation_loss

OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise")


@dataclasses.dataclass
class TransferResult:
    """The stylised image (uint8 ``[h, w, 3]``) and one record of losses per optimisation step."""

    image: np.ndarray
    losses: list
    seconds: float

    @property
    def reduction(self) -> float:
        """First step's total loss over the last step's."""
        return self.losses[0]["total"] / max(self.losses[-1]["total"], 1e-30)

    def plot_losses(self, path: str) -> str:
        """Write the per-step losses (log scale) as a PNG; returns ``path``."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(6, 4))
        steps = np.arange(1, len(self.losses) + 1)
        for key in ("total", "content", "style", "tv"):
            axis.plot(steps, [max(record[key], 1e-12) for record in self.losses], label=key)
        axis.set(xlabel="step", ylabel="weighted loss", yscale="log", title="Style transfer losses")
        axis.legend()
        figure.tight_layout()
        image_utils.save_figure(figure, path)
        plt.close(figure)
        return path


def transfer(content, style, *, feature_model="vgg19", weights=None, content_layers=CONTENT_LAYERS,
             style_layers=STYLE_LAYERS, content_weight: float = 1.0, style_weight: float = 1e4,
             tv_weight: float = 1e-2, steps: int = 100, optimizer: str = "lbfgs", learning_rate: float = 4.0,
             size: int = 256, scales: int = 1, preserve_color: bool = False, init: str = "content",
             seed: int = 0, progress=None) -> TransferResult:
    """Render ``content`` in the style of ``style``.

    ``content`` and ``style`` are file paths, PIL images or arrays ``[h, w, 3]`` (uint8, or floats in
    [0, 255]). The content image is resized so its longer side is ``size``; the style image to the
    same size. ``feature_model`` is ``"vgg19"`` (kcnn's VGG-19, with ``weights``) or a functional
    Keras model that has the named layers and takes RGB in [0, 255] after Caffe preprocessing.
    ``steps`` optimiser iterations run at each of ``scales`` sizes (coarse to fine, halving).
    ``progress``, if given, is called after every iteration with ``(done, total, losses)``: the
    iterations done and planned over all scales, and that iteration's loss parts.
    """
    _check_options(optimizer, init, steps, scales, size, content_weight, style_weight, tv_weight)
    content = image_utils.load_rgb(content, "content")
    style = image_utils.load_rgb(style, "style")
    layers = tuple(content_layers) + tuple(style_layers)
    if isinstance(feature_model, str):
        if feature_model != "vgg19":
            raise ValueError(f"feature_model must be 'vgg19' or a keras.Model, got {feature_model!r}")
        extractor = vgg19_features(layers, weights=weights)
    elif isinstance(feature_model, keras.Model):
        extractor = FeatureExtractor(feature_model, layers)
    else:
        raise ValueError(f"feature_model must be 'vgg19' or a keras.Model, got {type(feature_model).__name__}")

    if preserve_color:
        content_input, style_input = image_utils.luminance_transfer_inputs(content, style)
    else:
        content_input, style_input = content, style
    height, width = image_utils.fit_size(content.shape[:2], size)
    sizes = [(max(8, height >> k), max(8, width >> k)) for k in reversed(range(scales))]
    rng = np.random.default_rng(seed)
    image = None
    losses: list = []
    start = time.perf_counter()

    def on_step(record):
        if progress is not None:
            progress(len(losses), steps * len(sizes), record)

    for scale_height, scale_width in sizes:
        target_content = image_utils.resize(content_input, scale_height, scale_width)
        target_style = image_utils.resize(style_input, scale_height, scale_width)
        if image is None:
            image = (target_content if init == "content"
                     else rng.uniform(0, 255, target_content.shape).astype("float32"))
        else:
            image = image_utils.resize(image, scale_height, scale_width)
        objective = _Objective(extractor, len(content_layers), target_content, target_style,
                               content_weight, style_weight, tv_weight)
        run = _lbfgs if optimizer == "lbfgs" else _adam
        image = run(objective, image, steps, learning_rate, losses, on_step)
    result = np.clip(image, 0, 255)
    if preserve_color:
        result = image_utils.combine_luminance(result, image_utils.resize(content, *result.shape[:2]))
    return TransferResult(np.round(result).astype(np.uint8), losses, time.perf_counter() - start)


def _check_options(optimizer, init, steps, scales, size, *weights):
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    for name, value, low in (("steps", steps, 1), ("scales", scales, 1), ("size", size, 16)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if any(w < 0 for w in weights):
        raise ValueError(f"content_weight, style_weight and tv_weight must be >= 0, got {weights}")


class _Objective:
    """The weighted loss of one scale, with the targets' features computed once."""

    def __init__(self, extractor, content_count, content, style, content_weight, style_weight, tv_weight):
        self.extractor = extractor
        self.content_count = content_count
        self.weights = (content_weight, style_weight, tv_weight)
        content_features = extractor(content[None])[:content_count]
        style_features = extractor(style[None])[content_count:]
        self.content_targets = [ops.convert_to_numpy(f) for f in content_features]
        self.style_grams = [ops.convert_to_numpy(gram_matrix(f)) for f in style_features]

    def loss(self, image):
        features = self.extractor(image[None])
        content_w, style_w, tv_w = self.weights
        parts = {
            "content": content_w * sum(content_loss(f, t) for f, t in
                                       zip(features[:self.content_count], self.content_targets)),
            "style": style_w * style_loss(features[self.content_count:], self.style_grams),
            "tv": tv_w * total_variation_loss(image[None]),
        }
        return parts["content"] + parts["style"] + parts["tv"], parts

    def __call__(self, image: np.ndarray):
        (value, parts), (grad,) = value_and_grad(self.loss, image.astype("float32"), has_aux=True)
        record = {"total": float(value), **{key: float(v) for key, v in parts.items()}}
        return record, grad


def _lbfgs(objective, image, steps, learning_rate, losses, on_step):
    from scipy.optimize import minimize

    shape = image.shape
    latest = {}

    def fun(flat):
        record, grad = objective(flat.reshape(shape).astype("float32"))
        latest.update(record)
        return record["total"], grad.ravel().astype("float64")

    before = len(losses)

    def callback(_):
        losses.append(dict(latest))
        on_step(losses[-1])

    # L-BFGS-B keeps every pixel inside [0, 255] through the bounds, so no clipping is needed.
    result = minimize(fun, image.ravel().astype("float64"), jac=True, method="L-BFGS-B",
                      bounds=[(0.0, 255.0)] * image.size, callback=callback,
                      options={"maxiter": steps, "maxfun": steps * 2})
    if len(losses) == before:  # stopped before a first iteration completed
        losses.append(dict(latest))
    return result.x.reshape(shape).astype("float32")


def _adam(objective, image, steps, learning_rate, losses, on_step, beta1=0.9, beta2=0.999, epsilon=1e-8):
    image = image.astype("float32").copy()
    first = np.zeros_like(image)
    second = np.zeros_like(image)
    for step in range(1, steps + 1):
        record, grad = objective(image)
        losses.append(record)
        on_step(record)
        first = beta1 * first + (1 - beta1) * grad
        second = beta2 * second + (1 - beta2) * grad * grad
        update = (first / (1 - beta1 ** step)) / (np.sqrt(second / (1 - beta2 ** step)) + epsilon)
        image = np.clip(image - learning_rate * update, 0.0, 255.0)
    return image
