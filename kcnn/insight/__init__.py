"""Seeing inside a CNN on every Keras backend: filters, feature maps, activation maximisation,
deconvnet and guided backpropagation, saliency, SmoothGrad, Grad-CAM(++) (also of one detection of
an FCOS detector), occlusion, and pictures.

Works on any functional (or Sequential) Keras model. The only backend-specific code is
``kcnn.autodiff.value_and_grad``; everything here is keras.ops and numpy. Images are model inputs
(already normalised), ``[H, W, C]`` or ``[N, H, W, C]``.
"""

from kcnn.insight.attribution import (
    activation_gradients, grad_cam, grad_cam_plus_plus, input_gradients, occlusion, saliency, smoothgrad,
)
from kcnn.insight.deconv import deconvnet, guided_backprop, project, top_projections, top_projections_by_unit
from kcnn.insight.detection import ExplainedDetection, detection_grad_cam
from kcnn.insight.draw import overlay, save_grid, save_panels, tile_image, to_display
from kcnn.insight.evaluation import area_under, deletion_curve, pointing_hit
from kcnn.insight.features import Grid, activations, filters, maximize_activation, unit_objective
from kcnn.insight.graph import first_conv_layer, last_conv_layer, run_graph, score_tensor, scores

__all__ = [
    "ExplainedDetection", "Grid", "activation_gradients", "activations", "area_under", "deconvnet",
    "deletion_curve", "detection_grad_cam", "filters",
    "first_conv_layer", "grad_cam", "grad_cam_plus_plus", "guided_backprop", "input_gradients", "last_conv_layer",
    "maximize_activation", "occlusion", "overlay", "pointing_hit", "project", "run_graph", "saliency",
    "save_grid", "save_panels", "score_tensor", "scores", "smoothgrad", "tile_image", "to_display",
    "top_projections", "top_projections_by_unit", "unit_objective",
]
