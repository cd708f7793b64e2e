"""The Keras layer types ``analyze`` knows: their geometry, their cost and how they move receptive fields.

Each table below is a set of layer class names. A type in none of them is
reported as "not analysed" (its MACs unknown), never counted as zero.
"""

from __future__ import annotations

import math

from kcnn.analysis import arithmetic, costs

CONVOLUTIONS = {"Conv1D", "Conv2D", "Conv3D"}
DEPTHWISE = {"DepthwiseConv1D", "DepthwiseConv2D"}
SEPARABLE = {"SeparableConv1D", "SeparableConv2D"}
TRANSPOSED = {"Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"}
POOLING = {f"{kind.title()}Pooling{n}D": kind for kind in ("max", "average") for n in (1, 2, 3)}
GLOBAL_POOLING = {f"Global{kind.title()}Pooling{n}D": kind for kind in ("max", "average") for n in (1, 2, 3)}
UPSAMPLING = {"UpSampling1D", "UpSampling2D", "UpSampling3D"}
WINDOWED = CONVOLUTIONS | DEPTHWISE | SEPARABLE | TRANSPOSED | set(POOLING)
# Layers counted as free: normalisation (folded into the convolution at inference), activations, dropout and
# noise (identity at inference), reshaping, padding, cropping, up-sampling by copying, and merges.
FREE = {
    "InputLayer", "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "BatchNormalization",
    "LayerNormalization", "GroupNormalization", "UnitNormalization", "LocalResponseNormalization", "Dropout",
    "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
    "ActivityRegularization", "Flatten", "Reshape", "Permute", "RepeatVector", "Identity", "Rescaling",
    "Normalization", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D",
    "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "MatchSpatial",
    # kcnn's own layers that only rescale, pad or merge (NFNet's gains, FractalNet's joins, stylizer padding)
    "ScalarGain", "FractalJoin", "FractalPathSampler", "ReflectionPadding2D",
} | UPSAMPLING
WHOLE_INPUT = {"Flatten"} | set(GLOBAL_POOLING)


def known(kind: str) -> bool:
    return kind in WINDOWED or kind in GLOBAL_POOLING or kind in FREE or kind == "Dense"


def geometry(kind: str, config: dict):
    """(kernel, strides, padding, dilation) of a windowed layer, one value per axis; None for other layers."""
    if kind not in WINDOWED:
        return None
    kernel = tuple(config.get("kernel_size") or config["pool_size"])
    strides = tuple(config.get("strides") or kernel)
    dilation = tuple(config.get("dilation_rate") or (1,) * len(kernel))
    return kernel, strides, config.get("padding", "valid"), dilation


def layer_cost(kind: str, config: dict, in_shape: tuple, *, strict: bool = False) -> costs.LayerCost | None:
    """The calculators' cost of one known layer for its input shape (channels last); None for free layers."""
    spatial, channels = tuple(in_shape[:-1]), in_shape[-1]
    bias = config.get("use_bias", True)
    if kind == "Dense":
        return costs._weighted_cost(spatial + (config["units"],), channels, 1, config["units"], bias)
    if kind in GLOBAL_POOLING:
        return costs.global_pool_cost(spatial, channels, GLOBAL_POOLING[kind])
    if kind not in WINDOWED:
        return None
    kernel, strides, padding, dilation = geometry(kind, config)
    if kind in CONVOLUTIONS:
        return costs.conv_cost(spatial, channels, config["filters"], kernel, strides, padding, dilation,
                               config.get("groups", 1), bias, strict=strict)
    if kind in DEPTHWISE:
        return costs.depthwise_conv_cost(spatial, channels, kernel, strides, padding, config["depth_multiplier"],
                                         dilation, bias, strict=strict)
    if kind in SEPARABLE:
        return costs.separable_conv_cost(spatial, channels, config["filters"], kernel, strides, padding,
                                         config["depth_multiplier"], dilation, bias, strict=strict)
    if kind in TRANSPOSED:
        output_padding = config.get("output_padding")
        return costs.transposed_conv_cost(spatial, channels, config["filters"], kernel, strides, padding,
                                          tuple(output_padding) if output_padding else None, dilation, bias)
    return costs.pool_cost(spatial, channels, kernel, strides, padding, POOLING[kind], strict=strict)


def propagate(kind: str, config: dict, in_fields: list, in_shapes):
    """Receptive field and jump after a layer: r_out = r_in + (k_eff - 1) * j_in, j_out = j_in * s, per axis.

    A field is ``(receptive_field, jump)``, one entry per axis of the tensor it
    describes. At a merge the largest field wins (inputs with the most axes first).
    A windowed layer whose axes do not match its input's field (a reshape in
    between) starts counting again from its own input.
    """
    axes = max(len(f[0]) for f in in_fields)
    same_rank = [f for f in in_fields if len(f[0]) == axes]
    rf = tuple(max(f[0][a] for f in same_rank) for a in range(axes))
    jump = tuple(max(f[1][a] for f in same_rank) for a in range(axes))
    shape = geometry(kind, config)
    if shape is not None:
        kernel, strides, _, dilation = shape
        if len(kernel) != axes:
            rf, jump = (1,) * len(kernel), (1,) * len(kernel)
        if kind in TRANSPOSED:
            spans = [transposed_span(k, s, d) for k, s, d in zip(kernel, strides, dilation)]
            return (tuple(r + span * j for r, span, j in zip(rf, spans, jump)),
                    tuple(j / s for j, s in zip(jump, strides)))
        k_eff = [arithmetic.effective_kernel(k, d) for k, d in zip(kernel, dilation)]
        return (tuple(r + (k - 1) * j for r, k, j in zip(rf, k_eff, jump)),
                tuple(j * s for j, s in zip(jump, strides)))
    if kind in UPSAMPLING:
        size = config["size"]
        size = (size,) * axes if isinstance(size, int) else tuple(size)
        return rf, tuple(j / s for j, s in zip(jump, size))
    if kind in WHOLE_INPUT and in_shapes:
        sizes = in_shapes[0][:-1]
        if len(sizes) == axes and all(s is not None for s in sizes):
            return tuple(r + (s - 1) * j for r, s, j in zip(rf, sizes, jump)), jump
    return rf, jump


def transposed_span(kernel: int, stride: int, dilation: int = 1) -> int:
    """How many input steps apart the farthest two inputs of one transposed-convolution output are.

    Output position x gets the product of input n and tap t when x = n*S + t*d
    (up to a fixed crop), so the taps that reach x are those with t*d = x mod S;
    the widest such set over the S residues gives the span, (taps apart) * d / S.
    """
    widest = 0
    for residue in range(stride):
        taps = [t for t in range(kernel) if (residue - t * dilation) % stride == 0]
        if taps:
            widest = max(widest, (taps[-1] - taps[0]) * dilation // stride)
    return widest


def axis_names(axes: int) -> tuple:
    return {1: ("length",), 2: ("height", "width"), 3: ("depth", "height", "width")}.get(
        axes, tuple(f"axis {a}" for a in range(axes)))


def shape_notes(kind: str, config: dict, in_shape: tuple, built: tuple, cost, strict: bool) -> list:
    """Compare the formulas' output sizes with the ones Keras built; flag filters that do not tile their input."""
    shape = geometry(kind, config)
    if shape is None or cost is None:
        return []
    kernel, strides, padding, dilation = shape
    notes = []
    names = axis_names(len(kernel))
    for axis, (size, k, s, d) in enumerate(zip(in_shape[:-1], kernel, strides, dilation)):
        if kind not in TRANSPOSED and not arithmetic.fits(size, k, s, padding, d):
            k_eff = arithmetic.effective_kernel(k, d)
            base = arithmetic.padding_amount(padding, k, d)
            notes.append(
                f"filter does not fit along {names[axis]}: ({size} - {k_eff} + {base}) / {s} + 1 is not an "
                f"integer; Keras floors and drops the last {(size - k_eff + base) % s} row(s)/column(s)")
    expected, actual = tuple(cost.output_shape[:-1]), tuple(built[:-1])
    for axis, (want, got) in enumerate(zip(expected, actual)):
        if got is not None and want != got:
            notes.append(f"formula gives {want} along {names[axis]} but Keras built {got}")
    return notes


def positions(shape) -> int:
    return math.prod(d for d in shape if d is not None)
