"""Convolution arithmetic: output sizes, parameters, connections and multiply-accumulates.

Pure Python. Conventions follow Keras: ``"same"`` padding gives ceil(W / S) outputs
(any odd pixel of padding goes at the bottom/right), ``"valid"`` and explicit
paddings floor (W - F + 2P) / S + 1, dropping rows a filter cannot reach.
"""

from __future__ import annotations

import math
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
        if mode == "causal":  # Keras' Conv1D: F - 1 zeros, all before the sequence
            return effective_kernel(kernel, dilation) - 1
        raise ValueError(
            f"padding must be a number of pixels or 'valid', 'same', 'full' or 'causal', got {padding!r}")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be a non-negative integer or 'valid', 'same' or 'full', got {padding!r}")
    return 2 * padding


def fits(size: int, kernel: int, stride: int = 1, padding: PaddingSpec = 0, dilation: int = 1) -> bool:
    """True when (W - F + 2P) is a multiple of S, so no input row is left over."""
    if isinstance(padding, str) and padding.lower() in ("same", "causal"):
        return True
    span = size - effective_kernel(kernel, dilation) + padding_amount(padding, kernel, dilation)
    return span >= 0 and span % stride == 0


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: PaddingSpec = 0, dilation: int = 1,
                     *, strict: bool = False) -> int:
    """Output length along one axis: (W - F + 2P) / S + 1, with F the effective (dilated) kernel.

    ``padding`` is pixels per side or ``"valid"``, ``"same"`` (Keras: ceil(W / S)),
    ``"full"`` (F - 1 per side) or ``"causal"`` (F - 1 before, Keras' Conv1D: ceil(W / S)).
    When the filter does not tile the input, the default
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
                                output_padding: int | None = None, dilation: int = 1) -> int:
    """Transposed convolution output length, exactly as Keras builds it.

    With ``padding`` in pixels per side (Dumoulin & Visin, relationship 14):
    S(I - 1) + a + F - 2P, with F the effective (dilated) kernel and ``a`` the
    output padding (default 0). Keras' named paddings:

    - ``"valid"``: S(I - 1) + F + a; without ``output_padding``, S(I - 1) + max(F, S).
    - ``"same"``: S(I - 1) + (F mod 2) + a; without ``output_padding``, I * S.
    - ``"full"`` (P = F - 1, not a Keras layer option): S(I - 1) - F + 2 + a.
    """
    _positive(size=size, kernel=kernel, stride=stride, dilation=dilation)
    k = effective_kernel(kernel, dilation)
    if output_padding is not None and (isinstance(output_padding, bool) or not isinstance(output_padding, int)
                                       or not 0 <= output_padding < stride):
        raise ValueError(f"output_padding must be an integer from 0 to stride - 1 = {stride - 1} (as Keras "
                         f"requires), got {output_padding!r}")
    extra = output_padding or 0
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return (size - 1) * stride + (max(k, stride) if output_padding is None else k + extra)
        if mode == "same":
            return size * stride if output_padding is None else (size - 1) * stride + k % 2 + extra
    pixels = padding_amount(padding, kernel, dilation) // 2
    length = stride * (size - 1) + k - 2 * pixels + extra
    if length < 1:
        raise ValueError(f"padding {padding!r} crops a transposed convolution's {length + 2 * pixels}-long output "
                         f"to {length}; use less padding")
    return length


def transposed_conv_crop(size: int, kernel: int, stride: int = 1, padding: PaddingSpec = 0,
                         output_padding: int | None = None, dilation: int = 1) -> int:
    """How many positions of the full (uncropped) transposed output lie before the first output position.

    Keras' ``"same"`` crops ``total // 2`` before, total = S(I - 1) + F - output size,
    as the convolution whose gradient it is pads; ``"valid"`` crops nothing;
    pixel paddings crop P (``"full"``: F - 1).
    """
    out = transposed_conv_output_size(size, kernel, stride, padding, output_padding, dilation)
    if isinstance(padding, str) and padding.lower() == "same":
        return max((size - 1) * stride + effective_kernel(kernel, dilation) - out, 0) // 2
    return padding_amount(padding, kernel, dilation) // 2


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
