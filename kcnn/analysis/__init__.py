"""Convolution arithmetic and model analysis (pure Python over Keras layer configs)."""

from kcnn.analysis.arithmetic import (
    FilterDoesNotFit,
    LayerCost,
    compare_convolutions,
    conv2d_cost,
    conv_output_size,
    dense_cost,
    depthwise_cost,
    effective_kernel,
    fits,
    pointwise_cost,
    pool_output_size,
    same_padding,
    separable_cost,
    transposed_conv_output_size,
)
from kcnn.analysis.format import render
from kcnn.analysis.report import LayerReport, ModelReport, analyze, feature_strides

__all__ = [
    "FilterDoesNotFit", "LayerCost", "LayerReport", "ModelReport", "analyze", "compare_convolutions",
    "conv2d_cost", "conv_output_size", "dense_cost", "depthwise_cost", "effective_kernel", "feature_strides",
    "fits", "pointwise_cost", "pool_output_size", "render", "same_padding", "separable_cost",
    "transposed_conv_output_size",
]
