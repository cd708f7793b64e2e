"""Convolution arithmetic and model analysis (pure Python over Keras layer configs)."""

from kcnn.analysis.arithmetic import (
    FilterDoesNotFit,
    conv_output_size,
    effective_kernel,
    fits,
    pool_output_size,
    same_padding,
    transposed_conv_crop,
    transposed_conv_output_size,
)
from kcnn.analysis.costs import (
    LayerCost,
    add_costs,
    compare_convolutions,
    conv1d_cost,
    conv2d_cost,
    conv3d_cost,
    conv_cost,
    dense_cost,
    depthwise_conv_cost,
    depthwise_cost,
    global_pool_cost,
    pointwise_cost,
    pool_cost,
    separable_conv_cost,
    separable_cost,
    transposed_conv_cost,
)
from kcnn.analysis.format import render
from kcnn.analysis.report import LayerReport, ModelReport, analyze, feature_strides

__all__ = [
    "FilterDoesNotFit", "LayerCost", "LayerReport", "ModelReport", "add_costs", "analyze", "compare_convolutions",
    "conv1d_cost", "conv2d_cost", "conv3d_cost", "conv_cost", "conv_output_size", "dense_cost",
    "depthwise_conv_cost", "depthwise_cost", "effective_kernel", "feature_strides", "fits", "global_pool_cost",
    "pointwise_cost", "pool_cost", "pool_output_size", "render", "same_padding", "separable_conv_cost",
    "separable_cost", "transposed_conv_cost", "transposed_conv_crop", "transposed_conv_output_size",
]
