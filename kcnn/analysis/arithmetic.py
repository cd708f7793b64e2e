"""Convolution arithmetic: output sizes, parameters, connections and multiply-accumulates.

Pure Python. Conventions follow Keras: ``"same"`` padding gives ceil(W / S) outputs
(any odd pixel of padding goes at the bottom/right), ``"valid"`` and explicit
paddings floor (W - F + 2P) / S + 1, dropping rows a filter cannot reach.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Union

PaddingSpec = Union[int, str]


class FilterDoesNotFit(ValueError):
    """A filter's strides do not tile the padded input exactly (raised in strict mode)."""


def effective_kernel(kernel: int, dilation: int = 1) -> int:
    """Extent of a dilated kernel: F + (F - 1)(d - 1)."""
    _positive(kernel=kernel, dilation=dilation)
    return kernel + (kernel - 1) * (dilation - 1)


def same_padding(kernel: int, dilation: int = 1) -> tuple[int, int]:
    """Padding (before, after) that keeps the size at stride 1: (F - 1) / 2 on each side for odd F.

    An even effective kernel cannot pad symmetrically; Keras puts the extra pixel after.
    """
    total = effective_kernel(kernel, dilation) - 1
    return total // 2, total - total // 2


def padding_amount(padding: PaddingSpec, kernel: int, dilation: int = 1) -> int:
    """Total padding (both sides of one axis) for a padding given as pixels per side or by name."""
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return 0
        if mode == "same":
            return effective_kernel(kernel, dilation) - 1
        if mode == "full":
            return 2 * (effective_kernel(kernel, dilation) - 1)
        raise ValueError(f"padding must be a number of pixels or 'valid', 'same' or 'full', got {padding!r}")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be a non-negative integer or 'valid', 'same' or 'full', got {padding!r}")
    return 2 * padding


def fits(size: int, kernel: int, stride: int = 1, padding: PaddingSpec = 0, dilation: int = 1) -> bool:
    """True when (W - F + 2P) is a multiple of S, so no input row is left over."""
    if isinstance(padding, str) and padding.lower() == "same":
        return True
    span = size - effective_kernel(kernel, dilation) + padding_amount(padding, kernel, dilation)
    return span >= 0 and span % stride == 0


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: PaddingSpec = 0, dilation: int = 1,
                     *, strict: bool = False) -> int:
    """Output length along one axis: (W - F + 2P) / S + 1, with F the effective (dilated) kernel.

    ``padding`` is pixels per side or ``"valid"``, ``"same"`` (Keras: ceil(W / S)) or
    ``"full"`` (F - 1 per side). When the filter does not tile the input, the default
    floors as Keras does; ``strict=True`` raises :class:`FilterDoesNotFit` instead,
    suggesting a padding that fits.
    """
    _positive(size=size, kernel=kernel, stride=stride, dilation=dilation)
    if isinstance(padding, str) and padding.lower() == "same":
        return math.ceil(size / stride)
    k = effective_kernel(kernel, dilation)
    span = size - k + padding_amount(padding, kernel, dilation)
    if span < 0:
        raise FilterDoesNotFit(
            f"a {k}-wide filter does not fit in a {size}-wide input with padding {padding!r}: "
            f"the input must be at least {k - padding_amount(padding, kernel, dilation)} wide"
        )
    if strict and span % stride:
        raise FilterDoesNotFit(_does_not_fit_message(size, kernel, stride, padding, dilation))
    return span // stride + 1


def pool_output_size(size: int, pool: int, stride: int | None = None, padding: PaddingSpec = "valid",
                     *, strict: bool = False) -> int:
    """Pooling output length: (W - F) / S + 1 for valid pooling (stride defaults to the pool size)."""
    return conv_output_size(size, pool, stride or pool, padding, strict=strict)


def transposed_conv_output_size(size: int, kernel: int, stride: int = 1, padding: PaddingSpec = 0,
                                output_padding: int = 0) -> int:
    """Transposed convolution output length: S(I - 1) + F - 2P (+ output padding).

    ``"same"`` gives I * S and ``"valid"`` S(I - 1) + max(F, S), as Keras builds them.
    """
    _positive(size=size, kernel=kernel, stride=stride)
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "same":
            return size * stride + output_padding
        if mode == "valid":
            return (size - 1) * stride + max(kernel, stride) + output_padding
        raise ValueError(f"transposed convolution padding must be 'same', 'valid' or pixels, got {padding!r}")
    return stride * (size - 1) + kernel - 2 * padding + output_padding


def _does_not_fit_message(size, kernel, stride, padding, dilation) -> str:
    k = effective_kernel(kernel, dilation)
    base = padding_amount(padding, kernel, dilation)
    span = size - k + base
    out = span / stride + 1
    extra = next(e for e in range(1, stride + 1) if (span + e) % stride == 0)
    if extra % 2 == 0:
        suggestion = f"padding={base // 2 + extra // 2} on each side"
    else:
        suggestion = f"{extra} more pixel(s) of padding in total (e.g. {extra // 2} before and {extra - extra // 2} after)"
    drop = span % stride
    return (
        f"filter does not fit: (W - F + 2P) / S + 1 = ({size} - {k} + {base}) / {stride} + 1 = {out:g} is not "
        f"an integer; use {suggestion}, or an input of {size + extra} (or {size - drop}) pixels; "
        f"without a change, floor division drops the last {drop} input row(s)/column(s)"
    )


def _positive(**values) -> None:
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class LayerCost:
    """What one layer costs, counted the textbook way for one input image.

    ``multiplications`` and ``macs`` are the same count (one multiply per weight per
    output position); ``additions`` sums the products into each output
    (F*F*D_in/groups - 1 per output unit) and ``bias_additions`` adds the biases.
    """

    output_shape: tuple
    params: int
    weights_per_filter: int
    neurons: int
    connections: int
    multiplications: int
    additions: int
    bias_additions: int

    @property
    def macs(self) -> int:
        return self.multiplications

    @property
    def flops(self) -> int:
        return 2 * self.multiplications

    def as_dict(self) -> dict:
        return {**asdict(self), "macs": self.macs, "flops": self.flops}


def conv2d_cost(height: int, width: int, in_channels: int, filters: int, kernel: int | tuple = 3,
                stride: int | tuple = 1, padding: PaddingSpec = 0, dilation: int = 1, groups: int = 1,
                bias: bool = True, *, strict: bool = False) -> LayerCost:
    """Cost of a (grouped) 2-D convolution. ``groups=in_channels=filters`` is a depthwise convolution."""
    kh, kw = _pair(kernel)
    sh, sw = _pair(stride)
    if in_channels % groups or filters % groups:
        raise ValueError(f"groups ({groups}) must divide in_channels ({in_channels}) and filters ({filters})")
    out_h = conv_output_size(height, kh, sh, padding, dilation, strict=strict)
    out_w = conv_output_size(width, kw, sw, padding, dilation, strict=strict)
    per_filter = kh * kw * in_channels // groups
    return _cost((out_h, out_w, filters), per_filter, filters, bias)


def depthwise_cost(height, width, in_channels, kernel=3, stride=1, padding: PaddingSpec = 0, depth_multiplier=1,
                   bias=False, *, strict=False) -> LayerCost:
    """Cost of a depthwise convolution: one F x F filter per input channel (times the depth multiplier)."""
    return conv2d_cost(height, width, in_channels, in_channels * depth_multiplier, kernel, stride, padding,
                       groups=in_channels, bias=bias, strict=strict)


def pointwise_cost(height, width, in_channels, filters, bias=False) -> LayerCost:
    """Cost of a 1x1 convolution."""
    return conv2d_cost(height, width, in_channels, filters, 1, 1, 0, bias=bias)


def separable_cost(height, width, in_channels, filters, kernel=3, stride=1, padding: PaddingSpec = 0,
                   depth_multiplier=1, bias=False, *, strict=False) -> LayerCost:
    """Depthwise then pointwise (MobileNet's factorisation, Keras' SeparableConv2D)."""
    dw = depthwise_cost(height, width, in_channels, kernel, stride, padding, depth_multiplier, False, strict=strict)
    h, w, c = dw.output_shape
    return add_costs(dw, pointwise_cost(h, w, c, filters, bias))


def dense_cost(in_units: int, units: int, bias: bool = True) -> LayerCost:
    """Cost of a fully connected layer."""
    _positive(in_units=in_units, units=units)
    return _cost((units,), in_units, units, bias)


def add_costs(first: LayerCost, second: LayerCost) -> LayerCost:
    """Two layers applied one after the other, counted as one."""
    return LayerCost(
        second.output_shape,
        first.params + second.params,
        first.weights_per_filter + second.weights_per_filter,
        first.neurons + second.neurons,
        first.connections + second.connections,
        first.multiplications + second.multiplications,
        first.additions + second.additions,
        first.bias_additions + second.bias_additions,
    )


def compare_convolutions(height: int, width: int, in_channels: int, filters: int, kernel: int = 3, stride: int = 1,
                         *, squeeze_ratio: float = 0.125, pct_3x3: float = 0.5) -> dict:
    """A standard convolution against its depthwise-separable and Fire-module replacements.

    Same input and output shape for all three ("same" padding). The Fire module
    uses SqueezeNet's squeeze ratio and share of 3x3 expand filters (section 5).
    Returns params and MACs of each and their ratio to the standard convolution;
    MobileNet's paper predicts the separable ratio 1/N + 1/F^2 (section 3.1).
    """
    standard = conv2d_cost(height, width, in_channels, filters, kernel, stride, "same", bias=False)
    separable = separable_cost(height, width, in_channels, filters, kernel, stride, "same")
    squeeze = max(1, round(filters * squeeze_ratio))
    e3 = round(filters * pct_3x3)
    e1 = filters - e3
    s = conv2d_cost(height, width, in_channels, squeeze, 1, stride, "same", bias=False)
    h, w, _ = s.output_shape
    fire = add_costs(add_costs(s, conv2d_cost(h, w, squeeze, e1, 1, 1, "same", bias=False)),
                     conv2d_cost(h, w, squeeze, e3, kernel, 1, "same", bias=False))
    result = {}
    for name, cost in (("standard", standard), ("depthwise_separable", separable), ("fire", fire)):
        result[name] = {
            "params": cost.params,
            "macs": cost.macs,
            "params_ratio": cost.params / standard.params,
            "macs_ratio": cost.macs / standard.macs,
        }
    result["fire"]["config"] = {"squeeze": squeeze, "expand1x1": e1, "expand3x3": e3}
    return result


def _cost(output_shape: tuple, weights_per_unit: int, filters: int, bias: bool) -> LayerCost:
    neurons = math.prod(output_shape)
    params = (weights_per_unit + int(bias)) * filters
    return LayerCost(
        output_shape=tuple(output_shape),
        params=params,
        weights_per_filter=weights_per_unit,
        neurons=neurons,
        connections=neurons * (weights_per_unit + int(bias)),
        multiplications=neurons * weights_per_unit,
        additions=neurons * (weights_per_unit - 1),
        bias_additions=neurons if bias else 0,
    )


def _pair(value) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    a, b = value
    return int(a), int(b)
