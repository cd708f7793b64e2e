"""Blocks: plain functions ``tensor -> tensor`` built from standard Keras layers.

Every block takes a ``name`` prefix so the layers it creates read like the paper.
"""

from kcnn.blocks.common import activation_layer, conv_bn_act, get_activation, make_divisible, max_pool
from kcnn.blocks.densenet import dense_block, transition
from kcnn.blocks.fractal import fractal_block
from kcnn.blocks.inception import inception
from kcnn.blocks.mbconv import mbconv, squeeze_excite_to
from kcnn.blocks.normalization import BatchNormSettings, batch_norm, batch_norm_options, batch_norm_settings
from kcnn.blocks.mobilenet import depthwise_separable, inverted_residual, squeeze_excite
from kcnn.blocks.nfnet import nf_block
from kcnn.blocks.regnet import regnet_block
from kcnn.blocks.resnet import residual_basic, residual_bottleneck
from kcnn.blocks.squeezenet import fire

__all__ = [
    "BatchNormSettings",
    "activation_layer",
    "batch_norm",
    "batch_norm_options",
    "batch_norm_settings",
    "conv_bn_act",
    "dense_block",
    "depthwise_separable",
    "fire",
    "fractal_block",
    "get_activation",
    "inception",
    "inverted_residual",
    "make_divisible",
    "max_pool",
    "mbconv",
    "nf_block",
    "regnet_block",
    "residual_basic",
    "residual_bottleneck",
    "squeeze_excite",
    "squeeze_excite_to",
    "transition",
]
