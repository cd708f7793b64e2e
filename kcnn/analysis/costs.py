"""What one layer costs for one input, counted the way the course notes count.

Every calculator takes the input's spatial sizes as a tuple (one entry per axis:
``(length,)``, ``(height, width)`` or ``(depth, height, width)``), so one
function serves 1-D, 2-D and 3-D layers; ``conv1d_cost``, ``conv2d_cost`` and
``conv3d_cost`` spell the sizes out. Kernel, stride and dilation are an int (the
same on every axis) or one value per axis. docs/analysis.md gives each count's
formula and the worked examples.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

from kcnn.analysis.arithmetic import (
    PaddingSpec,
    _positive,
    conv_output_size,
    effective_kernel,
    padding_amount,
    transposed_conv_crop,
    transposed_conv_output_size,
)

POOL_KINDS = ("max", "average")


@dataclass(frozen=True)
class LayerCost:
    """The notes' counts for one layer and one input.

    - ``weights_per_unit``: the weights one output unit uses, its bias included (the
      notes' "weights per filter": LeNet C1 26, AlexNet conv1 364).
      ``weights_per_filter`` is the same count without the bias.
    - ``neurons``: output units; ``connections``: input links into them, bias included.
    - ``multiplications`` (= MACs): one per weight per output position.
    - ``additions``: every addition that sums a unit's products, channels included
      (F*F*D_in/groups - 1 per unit); ``accumulations_notes`` is the notes' shorter
      (F*F - 1) * D_in form, which leaves out the D_in - 1 additions across channels;
      ``bias_additions``: one per unit with a bias.
    - ``pooling_ops``: comparisons (max pooling) or additions (average pooling);
      pooling costs no multiplications, so it adds nothing to MACs.
    """

    output_shape: tuple
    params: int
    weights_per_filter: int
    neurons: int
    connections: int
    multiplications: int
    additions: int
    bias_additions: int
    weights_per_unit: int = 0
    accumulations_notes: int = 0
    pooling_ops: int = 0

    @property
    def macs(self) -> int:
        return self.multiplications

    @property
    def flops(self) -> int:
        return 2 * self.multiplications

    def as_dict(self) -> dict:
        return {**asdict(self), "macs": self.macs, "flops": self.flops}


def conv_cost(spatial: Sequence[int], in_channels: int, filters: int, kernel=3, stride=1,
              padding: PaddingSpec = 0, dilation=1, groups: int = 1, bias: bool = True, *,
              strict: bool = False) -> LayerCost:
    """Cost of a (grouped) N-D convolution; ``groups=in_channels`` makes it depthwise."""
    spatial = tuple(spatial)
    kernel, stride, dilation = (_per_axis(v, len(spatial), name) for v, name in
                                ((kernel, "kernel"), (stride, "stride"), (dilation, "dilation")))
    _positive(in_channels=in_channels, filters=filters, groups=groups)
    if in_channels % groups or filters % groups:
        raise ValueError(f"groups ({groups}) must divide in_channels ({in_channels}) and filters ({filters})")
    out = tuple(conv_output_size(i, k, s, padding, d, strict=strict)
                for i, k, s, d in zip(spatial, kernel, stride, dilation))
    return _weighted_cost(out + (filters,), math.prod(kernel), in_channels // groups, filters, bias)


def conv1d_cost(length, in_channels, filters, kernel=3, stride=1, padding: PaddingSpec = 0, dilation=1, groups=1,
                bias=True, *, strict=False) -> LayerCost:
    """Cost of a 1-D convolution over a sequence (Keras' Conv1D)."""
    return conv_cost((length,), in_channels, filters, kernel, stride, padding, dilation, groups, bias, strict=strict)


def conv2d_cost(height: int, width: int, in_channels: int, filters: int, kernel: int | tuple = 3,
                stride: int | tuple = 1, padding: PaddingSpec = 0, dilation: int = 1, groups: int = 1,
                bias: bool = True, *, strict: bool = False) -> LayerCost:
    """Cost of a (grouped) 2-D convolution. ``groups=in_channels=filters`` is a depthwise convolution."""
    return conv_cost((height, width), in_channels, filters, kernel, stride, padding, dilation, groups, bias,
                     strict=strict)


def conv3d_cost(depth, height, width, in_channels, filters, kernel=3, stride=1, padding: PaddingSpec = 0,
                dilation=1, groups=1, bias=True, *, strict=False) -> LayerCost:
    """Cost of a 3-D convolution over a volume (Keras' Conv3D)."""
    return conv_cost((depth, height, width), in_channels, filters, kernel, stride, padding, dilation, groups,
                     bias, strict=strict)


def depthwise_conv_cost(spatial, in_channels, kernel=3, stride=1, padding: PaddingSpec = 0, depth_multiplier=1,
                        dilation=1, bias=False, *, strict=False) -> LayerCost:
    """One filter per input channel (times the depth multiplier), on any number of axes."""
    return conv_cost(spatial, in_channels, in_channels * depth_multiplier, kernel, stride, padding, dilation,
                     groups=in_channels, bias=bias, strict=strict)


def separable_conv_cost(spatial, in_channels, filters, kernel=3, stride=1, padding: PaddingSpec = 0,
                        depth_multiplier=1, dilation=1, bias=False, *, strict=False) -> LayerCost:
    """Depthwise then pointwise (Keras' SeparableConv1D/2D); the counts are the two stages summed."""
    dw = depthwise_conv_cost(spatial, in_channels, kernel, stride, padding, depth_multiplier, dilation, False,
                             strict=strict)
    return add_costs(dw, conv_cost(dw.output_shape[:-1], dw.output_shape[-1], filters, 1, bias=bias))


def depthwise_cost(height, width, in_channels, kernel=3, stride=1, padding: PaddingSpec = 0, depth_multiplier=1,
                   bias=False, *, strict=False) -> LayerCost:
    """Cost of a 2-D depthwise convolution: one F x F filter per input channel (times the depth multiplier)."""
    return depthwise_conv_cost((height, width), in_channels, kernel, stride, padding, depth_multiplier, 1, bias,
                               strict=strict)


def pointwise_cost(height, width, in_channels, filters, bias=False) -> LayerCost:
    """Cost of a 1x1 convolution."""
    return conv2d_cost(height, width, in_channels, filters, 1, 1, 0, bias=bias)


def separable_cost(height, width, in_channels, filters, kernel=3, stride=1, padding: PaddingSpec = 0,
                   depth_multiplier=1, bias=False, *, strict=False) -> LayerCost:
    """Depthwise then pointwise (MobileNet's factorisation, Keras' SeparableConv2D)."""
    return separable_conv_cost((height, width), in_channels, filters, kernel, stride, padding, depth_multiplier,
                               1, bias, strict=strict)


def dense_cost(in_units: int, units: int, bias: bool = True) -> LayerCost:
    """Cost of a fully connected layer (its "kernel" is its whole input, one channel)."""
    _positive(in_units=in_units, units=units)
    return _weighted_cost((units,), in_units, 1, units, bias)


def transposed_conv_cost(spatial, in_channels, filters, kernel=3, stride=1, padding: PaddingSpec = "valid",
                         output_padding=None, dilation=1, bias=True) -> LayerCost:
    """Cost of an N-D transposed convolution (Conv1DTranspose/2D/3D), counting the products that land in the output.

    Each input value times each kernel tap lands on output position
    ``n * S + t * d - crop``; products cropped away by the padding are not counted,
    and each output unit sums the products that land on it (there may be none when
    S exceeds the effective kernel). With "valid" padding every product lands, so
    multiplications = I * F * D_in * D_out per axis product, the textbook count.
    """
    spatial = tuple(spatial)
    n = len(spatial)
    kernel, stride, dilation = (_per_axis(v, n, name) for v, name in
                                ((kernel, "kernel"), (stride, "stride"), (dilation, "dilation")))
    pads = output_padding if isinstance(output_padding, (tuple, list)) else (output_padding,) * n
    _positive(in_channels=in_channels, filters=filters)
    out, landed, reached = [], [], []
    for i, k, s, d, a in zip(spatial, kernel, stride, dilation, pads):
        length = transposed_conv_output_size(i, k, s, padding, a, d)
        crop = transposed_conv_crop(i, k, s, padding, a, d)
        hits = [0] * length
        for pos in (m * s + t * d - crop for m in range(i) for t in range(k)):
            if 0 <= pos < length:
                hits[pos] += 1
        out.append(length)
        landed.append(sum(hits))
        reached.append(sum(1 for h in hits if h))
    products, units_reached = math.prod(landed), math.prod(reached)
    neurons = math.prod(out) * filters
    weights = math.prod(kernel) * in_channels
    return LayerCost(
        output_shape=tuple(out) + (filters,),
        params=(weights + int(bias)) * filters,
        weights_per_filter=weights,
        neurons=neurons,
        connections=products * in_channels * filters + (neurons if bias else 0),
        multiplications=products * in_channels * filters,
        additions=filters * (products * in_channels - units_reached),
        bias_additions=neurons if bias else 0,
        weights_per_unit=weights + int(bias),
        accumulations_notes=filters * in_channels * (products - units_reached),
    )


def pool_cost(spatial, channels: int, pool=2, stride=None, padding: PaddingSpec = "valid", kind: str = "max", *,
              strict: bool = False) -> LayerCost:
    """Cost of max or average pooling: no weights, no MACs; ``pooling_ops`` counts its work.

    Each output takes (values in its window - 1) comparisons (max) or additions
    (average; plus one division, not counted). Window values outside the input
    ("same" padding) are not counted, as Keras leaves them out.
    """
    if kind not in POOL_KINDS:
        raise ValueError(f"kind must be one of {', '.join(POOL_KINDS)}, got {kind!r}")
    spatial = tuple(spatial)
    pool = _per_axis(pool, len(spatial), "pool")
    stride = pool if stride is None else _per_axis(stride, len(spatial), "stride")
    out, values = [], []
    for i, k, s in zip(spatial, pool, stride):
        length = conv_output_size(i, k, s, padding, strict=strict)
        before = _padding_before(i, length, k, s, padding)
        out.append(length)
        values.append(sum(1 for o in range(length) for t in range(k) if 0 <= o * s + t - before < i))
    neurons = math.prod(out) * channels
    window_values = math.prod(values) * channels
    return LayerCost(tuple(out) + (channels,), 0, 0, neurons, window_values, 0, 0, 0,
                     pooling_ops=window_values - neurons)


def global_pool_cost(spatial, channels: int, kind: str = "max") -> LayerCost:
    """Global max or average pooling: one output per channel from every position of the map."""
    if kind not in POOL_KINDS:
        raise ValueError(f"kind must be one of {', '.join(POOL_KINDS)}, got {kind!r}")
    values = math.prod(spatial) * channels
    return LayerCost((channels,), 0, 0, channels, values, 0, 0, 0, pooling_ops=values - channels)


def add_costs(first: LayerCost, second: LayerCost) -> LayerCost:
    """Two layers applied one after the other, counted as one (per-unit weights are summed over both)."""
    summed = {key: getattr(first, key) + getattr(second, key) for key in LayerCost.__dataclass_fields__
              if key != "output_shape"}
    return LayerCost(output_shape=second.output_shape, **summed)


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


def _weighted_cost(output_shape: tuple, kernel_volume: int, channels_per_unit: int, filters: int,
                   bias: bool) -> LayerCost:
    """Units that each take ``kernel_volume`` taps on ``channels_per_unit`` channels, plus a bias."""
    neurons = math.prod(output_shape)
    weights = kernel_volume * channels_per_unit
    return LayerCost(
        output_shape=tuple(output_shape),
        params=(weights + int(bias)) * filters,
        weights_per_filter=weights,
        neurons=neurons,
        connections=neurons * (weights + int(bias)),
        multiplications=neurons * weights,
        additions=neurons * (weights - 1),
        bias_additions=neurons if bias else 0,
        weights_per_unit=weights + int(bias),
        accumulations_notes=neurons * channels_per_unit * (kernel_volume - 1),
    )


def _padding_before(size, out, kernel, stride, padding, dilation=1) -> int:
    """Zeros Keras puts before the first position: half the total for "same" (the odd one goes after)."""
    if isinstance(padding, str) and padding.lower() == "same":
        return max((out - 1) * stride + effective_kernel(kernel, dilation) - size, 0) // 2
    if isinstance(padding, str) and padding.lower() == "causal":
        return padding_amount(padding, kernel, dilation)
    return padding_amount(padding, kernel, dilation) // 2


def _per_axis(value, axes: int, name: str) -> tuple:
    values = (value,) * axes if isinstance(value, int) else tuple(int(v) for v in value)
    if len(values) != axes:
        raise ValueError(f"{name} has {len(values)} values for {axes} axes: {value!r}")
    return values
