"""``visualize``: run one kcnn.insight method on a run directory or a saved model and write PNGs.

A run directory supplies ``model.keras``, ``preprocessing.json`` (image size, crop, mean, std) and
``class_names.json``; so do the files beside a ``.keras`` file given directly (an export or a copied
run keeps them together). A ``.keras`` file with none beside it is fed pixels scaled to [0, 1], then
``(x - mean) / std`` with the ``mean`` and ``std`` given (0 and 1 by default), and says so.
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
    notes: list = None  # what was assumed for lack of a file, for the command to print

    def preprocess(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 RGB ``[H, W, C]`` at the model's size -> model input."""
        return ((self.as_rgb(pixels).astype("float32") / 255.0) - self.mean) / self.std

    def as_rgb(self, image: np.ndarray) -> np.ndarray:
        """Model channel order <-> RGB (reversing is its own inverse)."""
        return image[..., ::-1] if self.channel_order == "bgr" else image

    def class_name(self, index: int) -> str:
        return self.class_names[index] if index < len(self.class_names) else str(index)


def load_target(path: str, *, mean=None, std=None) -> Target:
    """The model at ``path`` (a run directory or a ``.keras`` file) with its preprocessing and class names.

    ``mean`` and ``std`` (per channel, on pixels in [0, 1]) override a ``preprocessing.json``'s; with none
    there they default to 0 and 1 and the returned ``Target.notes`` says what was assumed.
    """
    if os.path.isdir(path):
        folder, model_path = path, os.path.join(path, "model.keras")
        if not os.path.exists(model_path):
            raise FileNotFoundError(f"{path} has no model.keras; give a finished run directory (kcnn train "
                                    "writes model.keras at the end) or a .keras file")
    elif path.endswith(".keras") and os.path.exists(path):
        folder, model_path = os.path.dirname(path) or ".", path
    else:
        raise FileNotFoundError(f"{path} is neither a run directory nor an existing .keras file")
    spec = _read_json(os.path.join(folder, "preprocessing.json"), None)
    names = _read_json(os.path.join(folder, "class_names.json"), None)
    notes = []
    if spec is None:
        spec = {}
        if mean is None and std is None:
            notes.append(f"no preprocessing.json beside {model_path}: pixels in [0, 1] are fed as they are "
                         "(give --mean and --std if the model was trained on normalised inputs)")
    if names is None:
        names = []
        notes.append(f"no class_names.json beside {model_path}: classes are shown by number")
    from kcnn.files import load_keras_model  # registers kcnn's custom layers before loading

    model = load_keras_model(model_path)
    height, width, channels = model.inputs[0].shape[1:]
    size = spec.get("image_size") or height or width
    if size is None:
        raise ValueError(f"{path}: the model takes any input size and no preprocessing.json says which to use")
    mean = spec.get("mean", (0.0,)) if mean is None else mean
    std = spec.get("std", (1.0,)) if std is None else std
    return Target(model=model, image_size=int(size), channels=int(spec.get("channels", channels)),
                  crop_fraction=float(spec.get("crop_fraction", 1.0)),
                  mean=np.asarray(mean, "float32"), std=np.asarray(std, "float32"),
                  class_names=list(names), channel_order=spec.get("channel_order", "rgb"), notes=notes)


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


METHOD_TITLES = {"saliency": "saliency", "smoothgrad": "SmoothGrad", "gradcam": "Grad-CAM",
                 "gradcam++": "Grad-CAM++", "occlusion": "occlusion"}


def explain_panels(target: Target, method: str, inputs: np.ndarray, *, layer=None) -> list[bytes]:
    """One PNG per image: the image, the heatmap (with its colour bar) and the overlay, for the predicted class."""
    probabilities = graph.predict(target.model, inputs)
    kwargs = {"layer": layer} if method in ("gradcam", "gradcam++") else {}
    if layer is not None and method not in ("gradcam", "gradcam++"):
        raise ValueError(f"--layer applies to gradcam and gradcam++, not to {method}")
    heatmaps = HEATMAPS[method](target.model, inputs, **kwargs)
    pictures = []
    for image, heat, row in zip(inputs, heatmaps, probabilities):
        best = int(row.argmax())
        name = target.class_name(best)
        pictures.append(draw.panels_png(
            [draw.to_display(target.as_rgb(image)), heat, draw.overlay(target.as_rgb(image), heat)],
            ["input", f"{METHOD_TITLES[method]} for {name!r}", f"predicted {name!r}, p = {row[best]:.2f}"],
            heatmaps={1: "relevance (1 = the map's maximum)"}))
    return pictures


def visualize(path: str, method: str, out_dir: str, *, layer=None, images=(), units=None, steps: int = 150,
              mean=None, std=None, log=None) -> list[str]:
    """Write ``method``'s PNGs for the model at ``path`` into ``out_dir``; returns the paths written.

    ``log`` (a function of one line, e.g. ``print``) hears what was assumed and the progress of the
    long methods (maximize, deconvnet, guided).
    """
    from kcnn.insight_cli import METHODS, NEEDS_IMAGES

    log = log or (lambda line: None)
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method in NEEDS_IMAGES and not images:
        raise ValueError(f"--method {method} explains images: give one or more with --images FILE...")
    images = image_files(images)  # every file checked before the model loads
    target = load_target(path, mean=mean, std=std)
    for note in target.notes or ():
        log(f"note: {note}")
    model = target.model
    stems = [os.path.splitext(os.path.basename(p))[0] for p in images]
    inputs = np.stack([target.preprocess(read_image(p, target)) for p in images]) if images else None
    written = []

    def write(name: str, data: bytes):
        written.append(draw.save_png_bytes(os.path.join(out_dir, name), data))

    if method == "filters":
        chosen = graph.get_layer(model, layer) if layer else graph.first_conv_layer(model)
        grid = features.filters(model, chosen)
        shape = "" if grid.tiles.shape[-1] == 3 else " (rows: filters; columns: input channels)"
        write(f"filters_{_safe(chosen.name)}.png", draw.grid_png(grid, title=f"filters of {chosen.name}{shape}"))
    elif method == "activations":
        chosen = graph.get_layer(model, layer) if layer else graph.last_conv_layer(model)
        for stem, image in zip(stems, inputs):
            write(f"activations_{_safe(chosen.name)}_{stem}.png",
                  draw.grid_png(features.activations(model, chosen, image),
                                title=f"{chosen.name}: strongest feature maps for {stem} (channel, mean)"))
    elif method == "maximize":
        write(*_maximize(target, layer, units, steps, log))
    elif method in ("deconvnet", "guided"):
        chosen = graph.get_layer(model, layer) if layer else graph.last_conv_layer(model)
        write(f"{method}_{_safe(chosen.name)}.png", _top_projections(target, chosen, inputs, units, method, log))
    else:
        for stem, picture in zip(stems, explain_panels(target, method, inputs, layer=layer)):
            write(f"{method.replace('++', 'pp')}_{stem}.png", picture)
    return written


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")


def image_files(paths) -> list[str]:
    """``--images`` as files: a directory stands for its image files (sorted); a missing path is an error."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(os.path.join(path, name) for name in os.listdir(path)
                           if name.lower().endswith(IMAGE_SUFFIXES))
            if not found:
                raise FileNotFoundError(f"--images {path}: the directory holds no image files "
                                        f"({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif not os.path.isfile(path):
            raise FileNotFoundError(f"--images {path}: no such file")
        else:
            files.append(path)
    return files


# Yosinski et al. (2015), section 3 and their best combination in Table 1's spirit: L2 decay, blur,
# jitter, small-norm pixels clipped, plus a few octaves coarse to fine.
MAXIMIZE_OPTIONS = dict(jitter=2, blur_sigma=1.0, blur_every=4, l2_decay=1e-2, norm_percentile=50, octaves=3)


def maximized(target: Target, layer, unit: int, steps: int = 150):
    """``kcnn visualize --method maximize``'s picture of one unit (a class score when ``layer`` is None):
    (image in the model's input scale, history), pixels kept within what the preprocessing can produce."""
    low, high = (0.0 - target.mean) / target.std, (1.0 - target.mean) / target.std
    return features.maximize_activation(target.model, layer, unit, steps=steps,
                                        value_range=(float(low.min()), float(high.max())), **MAXIMIZE_OPTIONS)


def _maximize(target: Target, layer, units, steps: int, log):
    import time

    model = target.model
    tensor = graph.score_tensor(model) if layer is None else graph.get_layer(model, layer).output
    units = units if units is not None else list(range(min(8, tensor.shape[-1])))
    panels, titles = [], []
    for count, unit in enumerate(units, start=1):
        started = time.perf_counter()
        image, history = maximized(target, layer, unit, steps)
        panels.append(draw.to_display(target.as_rgb(image)))
        name = repr(target.class_name(unit)) if layer is None else f"{layer} channel {unit}"
        what = "score" if layer is None else "mean activation"
        titles.append(f"{name}\n{what} {history[0]:.2g} (noise) -> {history[-1]:.3g}")
        log(f"maximize: {count}/{len(units)} {name}: {what} {history[0]:.3g} -> {history[-1]:.3g} "
            f"in {steps} steps ({time.perf_counter() - started:.1f} s)")
    label = "classes" if layer is None else _safe(layer)
    what = "class score before softmax" if layer is None else f"channel of {layer}"
    return f"maximize_{label}.png", draw.panels_png(
        panels, titles, columns=min(4, len(panels)),
        suptitle=f"inputs that maximise each {what} (gradient ascent from noise; jitter, blur, L2 decay, octaves)")


def _top_projections(target: Target, layer, inputs, units, method: str, log, k: int = 9) -> bytes:
    """Zeiler and Fergus' figure: per unit, the projections of its top-9 activations over the images
    beside the image patches (the unit's receptive field) that caused them."""
    import time

    rows, started = [], [time.perf_counter()]
    planned = len(units) if units is not None else min(4, layer.output.shape[-1])

    def done(unit, found):
        columns = 3 if len(found) >= 3 else len(found)
        projections = draw.tile_image([draw.to_display(target.as_rgb(f["projection"])) for f in found], columns)
        patches = draw.tile_image([np.clip(target.as_rgb(f["patch"]) * target.std + target.mean, 0, 1)
                                   for f in found], columns)
        rows.append((unit, projections, patches, found))
        log(f"{method}: {len(rows)}/{planned} {layer.name} channel {unit}: top {len(found)} of {len(inputs)} "
            f"images ({time.perf_counter() - started[0]:.1f} s)")
        started[0] = time.perf_counter()

    # Without --units: the channels with the strongest activations over the images.
    deconv.top_projections_by_unit(target.model, layer, inputs, units=units, count=4, k=k, rule=method,
                                   on_unit=done)
    panels, titles = [], []
    for unit, projections, patches, found in rows:
        panels += [projections, patches]
        titles += [f"{layer.name} channel {unit}: {'deconvnet' if method == 'deconvnet' else 'guided backprop'}",
                   f"its top {len(found)} patches (max {found[0]['activation']:.3g})"]
    field = rows[0][3][0]["patch"].shape[0]
    return draw.panels_png(panels, titles, columns=2, size=2.6,
                           suptitle=f"{layer.name}: each unit's strongest activations over {len(inputs)} images, "
                                    f"projected to pixels ({field}-pixel receptive field)")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(name)).replace("__", "_")
