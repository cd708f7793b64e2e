"""Neural style transfer: Gatys et al.'s optimisation and Johnson et al.'s fast feed-forward stylizer.

Backend-agnostic (keras, keras.ops, numpy; gradients through ``kcnn.autodiff``).
"""

from kcnn.style.fast import PerceptualLoss, compile_for_style
from kcnn.style.features import CONTENT_LAYERS, STYLE_LAYERS, FeatureExtractor, vgg19_features
from kcnn.style.gatys import TransferResult, transfer
from kcnn.style.images import load_rgb, sample_images, save_png
from kcnn.style.losses import content_loss, gram_matrix, style_layer_loss, style_loss, total_variation_loss
from kcnn.style.stylizer import STYLIZERS, johnson2016

__all__ = [
    "CONTENT_LAYERS",
    "STYLE_LAYERS",
    "STYLIZERS",
    "FeatureExtractor",
    "PerceptualLoss",
    "TransferResult",
    "compile_for_style",
    "content_loss",
    "gram_matrix",
    "johnson2016",
    "load_rgb",
    "sample_images",
    "save_png",
    "style_layer_loss",
    "style_loss",
    "total_variation_loss",
    "transfer",
    "vgg19_features",
]
