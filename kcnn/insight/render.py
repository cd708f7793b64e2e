"""``visualize``: run one kcnn.insight method on a run directory or a saved model and write PNGs.

A run directory supplies ``model.keras``, ``preprocessing.json`` (image size, crop, mean, std) and
``class_names.json``; a bare ``.keras`` file is fed pixels scaled to [0, 1], then ``(x - mean) / std``.
Image files are read with Pillow, resized so the shorter side is ``size / crop_fraction`` and centre
cropped, as the evaluation pipeline does.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from kcnn.insight import attribution, deconv, draw, features, graph

HEATMAPS = {"saliency": attribution.saliency, "smoothgrad": attribution.smoothgrad,
            "gradcam": attribution.grad_cam, "gradcam++": attribution.grad_cam_plus_plus,
            "occlusion": attribution.occlusion}


@dataclass
class Target:
    """A model with what it takes to feed it files: input size, channels, crop, mean, std, class names."""

    model: object
    image_size: int
    channels: int
    crop_fraction: float
    mean: np.ndarray
    std: np.ndarray
    class_names: list
    channel_order: str = "rgb"  # "bgr": the model takes BGR pixels (mean and std in BGR order)

    def preprocess(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 RGB ``[H, W, C]`` at the model's size -> model input."""
        return ((self.as_rgb(pixels).astype("float32") / 255.0) - self.mean) / self.std

    def as_rgb(self, image: np.ndarray) -> np.ndarray:
        """Model channel order <-> RGB (reversing is its own inverse)."""
        return image[..., ::-1] if self.channel_order == "bgr" else image

    def class_name(self, index: int) -> str:
        return self.class_names[index] if index < len(self.class_names) else str(index)


def load_target(path: str, *, mean=(0.0,), std=(1.0,)) -> Target:
    import keras

    if os.path.isdir(path):
        model_path = os.path.join(path, "model.keras")
        if not os.path.exists(model_path):
            raise FileNotFoundError(f"{path} has no model.keras; give a finished run directory (kcnn train "
                                    "writes model.keras at the end) or a .keras file")
        spec = _read_json(os.path.join(path, "preprocessing.json"), {})
        names = _read_json(os.path.join(path, "class_names.json"), [])
    elif path.endswith(".keras") and os.path.exists(path):
        model_path, spec, names = path, {}, []
    else:
        raise FileNotFoundError(f"{path} is neither a run directory nor an existing .keras file")
    import kcnn.layers  # noqa: F401  (registers kcnn's custom layers before loading)

    model = keras.saving.load_model(model_path, safe_mode=True)
    height, width, channels = model.inputs[0].shape[1:]
    size = spec.get("image_size") or height or width
    if size is None:
        raise ValueError(f"{path}: the model takes any input size and no preprocessing.json says which to use")
    return Target(model=model, image_size=int(size), channels=int(spec.get("channels", channels)),
                  crop_fraction=float(spec.get("crop_fraction", 1.0)),
                  mean=np.asarray(spec.get("mean", mean), "float32"), std=np.asarray(spec.get("std", std), "float32"),
                  class_names=list(names), channel_order=spec.get("channel_order", "rgb"))


def _read_json(path: str, default):
    if not os.path.exists(path):
        return default
    with open(path) as handle:
        return json.load(handle)


def read_image(path: str, target: Target) -> np.ndarray:
    """An image file -> uint8 ``[size, size, channels]`` (shorter side resized, centre crop)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            picture = opened.convert("L" if target.channels == 1 else "RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from None
    size = target.image_size
    scale = size / target.crop_fraction / min(picture.size)
    resized = picture.resize((max(size, round(picture.width * scale)), max(size, round(picture.height * scale))),
                             Image.BILINEAR)
    left, top = (resized.width - size) // 2, (resized.height - size) // 2
    pixels = np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.uint8)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def explain_panels(target: Target, method: str, inputs: np.ndarray, *, layer=None) -> list[bytes]:
    """One PNG per image: the image, the heatmap and the overlay, titled with the predicted class."""
    probabilities = graph.predict(target.model, inputs)
    kwargs = {"layer": layer} if method in ("gradcam", "gradcam++") else {}
    if layer is not None and method not in ("gradcam", "gradcam++"):
        raise ValueError(f"--layer applies to gradcam and gradcam++, not to {method}")
    heatmaps = HEATMAPS[method](target.model, inputs, **kwargs)
    pictures = []
    for image, heat, row in zip(inputs, heatmaps, probabilities):
        best = int(row.argmax())
        pictures.append(draw.panels_png(
            [draw.to_display(target.as_rgb(image)), heat, draw.overlay(target.as_rgb(image), heat)],
            ["input", method, f"{target.class_name(best)} {row[best]:.2f}"]))
    return pictures


def visualize(path: str, method: str, out_dir: str, *, layer=None, images=(), units=None, steps: int = 150,
              mean=(0.0,), std=(1.0,)) -> list[str]:
    """Write ``method``'s PNGs for the model at ``path`` into ``out_dir``; returns the paths written."""
    from kcnn.insight_cli import METHODS, NEEDS_IMAGES

    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method in NEEDS_IMAGES and not images:
        raise ValueError(f"--method {method} explains images: give one or more with --images FILE...")
    target = load_target(path, mean=mean, std=std)
    model = target.model
    stems = [os.path.splitext(os.path.basename(p))[0] for p in images]
    inputs = np.stack([target.preprocess(read_image(p, target)) for p in images]) if images else None
    written = []

    def write(name: str, data: bytes):
        written.append(draw.save_png_bytes(os.path.join(out_dir, name), data))

    if method == "filters":
        chosen = graph.get_layer(model, layer) if layer else graph.first_conv_layer(model)
        write(f"filters_{_safe(chosen.name)}.png",
              draw.grid_png(features.filters(model, chosen), title=f"filters of {chosen.name}"))
    elif method == "activations":
        chosen = graph.get_layer(model, layer) if layer else graph.last_conv_layer(model)
        for stem, image in zip(stems, inputs):
            write(f"activations_{_safe(chosen.name)}_{stem}.png",
                  draw.grid_png(features.activations(model, chosen, image),
                                title=f"{chosen.name}: strongest feature maps"))
    elif method == "maximize":
        write(*_maximize(target, layer, units, steps))
    elif method in ("deconvnet", "guided"):
        chosen = graph.get_layer(model, layer) if layer else graph.last_conv_layer(model)
        for stem, image in zip(stems, inputs):
            write(f"{method}_{_safe(chosen.name)}_{stem}.png", _projections(target, chosen, image, method))
    else:
        for stem, picture in zip(stems, explain_panels(target, method, inputs, layer=layer)):
            write(f"{method.replace('++', 'pp')}_{stem}.png", picture)
    return written


def _maximize(target: Target, layer, units, steps: int):
    model = target.model
    tensor = graph.score_tensor(model) if layer is None else graph.get_layer(model, layer).output
    units = units if units is not None else list(range(min(8, tensor.shape[-1])))
    low, high = (0.0 - target.mean) / target.std, (1.0 - target.mean) / target.std
    panels, titles = [], []
    for unit in units:
        image, history = features.maximize_activation(model, layer, unit, steps=steps, blur_sigma=0.5,
                                                      l2_decay=1e-3, value_range=(float(low.min()), float(high.max())))
        panels.append(draw.to_display(target.as_rgb(image)))
        name = target.class_name(unit) if layer is None else f"{layer}:{unit}"
        titles.append(f"{name}\n{history[0]:.2g} -> {history[-1]:.2g}")
    label = "classes" if layer is None else _safe(layer)
    return f"maximize_{label}.png", draw.panels_png(panels, titles, columns=min(4, len(panels)))


def _projections(target: Target, layer, image, method: str) -> bytes:
    """The image and the projections of the layer's four most active channels."""
    values = graph.predict(graph_model(target.model, layer), image)[0]
    strength = values.reshape(-1, values.shape[-1]).max(axis=0)
    channels = np.argsort(-strength, kind="stable")[:4]
    project = deconv.deconvnet if method == "deconvnet" else deconv.guided_backprop
    panels, titles = [draw.to_display(target.as_rgb(image))], ["input"]
    for channel in channels:
        reconstruction, position = project(target.model, layer, int(channel), image)
        panels.append(draw.to_display(target.as_rgb(reconstruction)))
        titles.append(f"{layer.name}:{channel} at {position}")
    return draw.panels_png(panels, titles)


def graph_model(model, layer):
    import keras

    return keras.Model(graph.functional(model).inputs[0], graph.get_layer(model, layer).output)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(name)).replace("__", "_")
