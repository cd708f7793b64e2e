"""Grad-CAM of one detection of an FCOS detector: where the image made that box's class score.

A detection is one location of the detector's output and one class (``kcnn.detection``): its
score is that location's class logit, the quantity the detector thresholds and ranks. The
gradients are taken at a feature map of the location's own pyramid level (the FPN output that the
shared head reads there, ``<head>_p<level>``) unless ``layer`` names another 4-D layer.

``method="hires_cam"`` (the default) multiplies activations and gradients position by position
before summing the channels (HiResCAM, Draelos and Carin 2020): a detection's score depends on
one location, and averaging its gradients over the map first, as ``method="grad_cam"`` does
(Selvaraju et al. 2017), smears that location away. On the shipped detection recipe's test scenes
the map's peak falls inside the explained box for 36 of the first 40 images with ``hires_cam`` and
18 with ``grad_cam`` (the pointing game; measured for the closing note of issue 26). Without a
location, the detector's top-scoring location and class are explained: the detection that
non-maximum suppression keeps first.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from kcnn import detection as fcos
from kcnn.autodiff import value_and_grad
from kcnn.insight.attribution import _normalise, _resize, cam_of
from kcnn.insight.graph import as_batch, functional, get_layer, run_graph

METHODS = ("hires_cam", "grad_cam")


@dataclass
class ExplainedDetection:
    """``heatmap`` ``[H, W]`` in [0, 1] at the input's size; the detection's ``location`` (its row of the
    output), ``class_index``, ``score`` (the detector's ``sqrt(class x centerness)``), ``box``
    ``(ymin, xmin, ymax, xmax)`` in input pixels, ``level`` (pyramid level) and the ``layer`` used."""

    heatmap: np.ndarray
    location: int
    class_index: int
    score: float
    box: tuple
    level: int
    layer: str


def detection_grad_cam(model, image, *, location: int | None = None, class_index: int | None = None,
                       layer=None, method: str = "hires_cam") -> ExplainedDetection:
    """Grad-CAM of one detection in one model input ``[H, W, C]`` (normalised as the model expects).

    ``location`` (a row of the detector's output) and ``class_index`` pick the detection; by default
    the highest-scoring one. ``layer`` defaults to the FPN output of the location's level;
    ``method`` is ``"hires_cam"`` or ``"grad_cam"`` (see the module docstring).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    decoder = fcos.decoder_of(model)
    batch = as_batch(image)
    if len(batch) != 1:
        raise ValueError(f"detection_grad_cam explains one detection of one image; got {len(batch)} images")
    outputs = np.asarray(keras.ops.convert_to_numpy(model(batch, training=False)))
    num_classes = outputs.shape[-1] - 5
    scores = np.asarray(keras.ops.convert_to_numpy(fcos.scores(outputs, num_classes)))[0]
    locations = scores.shape[0]
    if (location is not None and not 0 <= int(location) < locations) or (
            class_index is not None and not 0 <= int(class_index) < num_classes):
        raise ValueError(f"location must be in [0, {locations}) and class_index in [0, {num_classes}), got "
                         f"{location} and {class_index}")
    if location is None:
        ranked = scores if class_index is None else scores[:, int(class_index)]
        best = np.unravel_index(np.argmax(ranked), ranked.shape)
        location = int(best[0])
        class_index = int(best[1]) if class_index is None else int(class_index)
    elif class_index is None:
        class_index = int(np.argmax(scores[int(location)]))
    location, class_index = int(location), int(class_index)
    level = int(round(np.log2(decoder.points()[1][location])))
    if layer is None:
        layer = f"{decoder.name[:-len('_outputs')] if decoder.name.endswith('_outputs') else 'fcos'}_p{level}"
    chosen = get_layer(model, layer)
    features = chosen.output
    if len(features.shape) != 4:
        raise ValueError(f"layer {chosen.name!r} has output shape {tuple(features.shape)}; Grad-CAM needs a 4-D "
                         "feature map")
    graph = functional(model)
    activations = np.asarray(keras.ops.convert_to_numpy(run_graph(model, batch, wanted=features)))

    def objective(a):
        out = run_graph(model, batch, wanted=graph.outputs[0], replace={features: a})
        return out[0, location, class_index]

    _, (grad,) = value_and_grad(objective, activations)
    box = tuple(float(v) for v in outputs[0, location, num_classes:num_classes + 4])
    if method == "grad_cam":
        heatmap = cam_of(activations, grad, batch.shape[1:3])[0]
    else:
        heatmap = _normalise(_resize(np.maximum((activations * grad).sum(-1), 0.0), batch.shape[1:3]))[0]
    return ExplainedDetection(heatmap, location, class_index,
                              float(scores[location, class_index]), box, level, chosen.name)
