"""Shared building pieces: width rounding, activation look-up, conv-BN-activation."""

from __future__ import annotations

from typing import Callable, Union

import keras
from keras import layers

from kcnn.blocks import normalization

Activation = Union[str, Callable, None]
Padding = Union[str, int, tuple]

KERNEL_INIT = "he_normal"


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to the nearest multiple of ``divisor``, never below 90% of it.

    The rule MobileNet v2 and its successors use to keep widths hardware friendly
    after a width multiplier is applied.
    """
    if divisor < 1:
        raise ValueError(f"divisor must be >= 1, got {divisor}")
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return int(rounded)


def get_activation(activation: Activation) -> Callable | None:
    """Resolve an activation given by name (``"relu"``, ``"relu6"``, ``"swish"``...) or callable."""
    if activation is None or callable(activation):
        return activation
    if not isinstance(activation, str):
        raise ValueError(f"activation must be a name, a callable or None, got {activation!r}")
    try:
        return keras.activations.get(activation)
    except (ValueError, TypeError):
        raise ValueError(
            f"unknown activation {activation!r}; use a Keras activation name such as "
            "'relu', 'relu6', 'swish', 'hard_swish', 'gelu', 'tanh', 'sigmoid', or a callable"
        ) from None


def activation_layer(x, activation: Activation, name: str):
    """Apply ``activation`` as a named layer (no layer at all for ``None``)."""
    if activation is None:
        return x
    get_activation(activation)  # validate early with a readable message
    return layers.Activation(activation, name=name)(x)


def regularizer(weight_decay: float):
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    return keras.regularizers.L2(weight_decay) if weight_decay else None


def explicit_padding(x, padding: Padding, name: str) -> tuple:
    """Turn an integer padding into a ZeroPadding2D layer; return (tensor, keras padding mode)."""
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same', 'valid' or a number of pixels, got {padding!r}")
        return x, padding
    if padding:
        x = layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
    return x, "valid"


def max_pool(x, pool_size: int = 3, strides: int = 2, *, padding: str = "valid", ceil_mode: bool = False, name: str):
    """Max pooling; ``ceil_mode=True`` keeps the last partial window, as PyTorch's ``ceil_mode=True`` does.

    PyTorch (padding 0, ceil mode) gives ceil((W - k) / s) + 1 outputs, the extra window
    running off the bottom/right edge; here that edge gets the missing rows as zero
    padding, which acts as -inf because every map kcnn pools this way is a ReLU output.
    Keras' "same" is not the same thing: it may pad the top/left too and gives
    ceil(W / s) outputs. Needs a fixed input size.
    """
    if ceil_mode:
        if None in x.shape[1:3]:
            raise ValueError(f"{name}: ceil_mode needs a fixed input size; pass input_shape with height and width")
        extra = [-(-(size - pool_size) // strides) * strides + pool_size - size for size in x.shape[1:3]]
        if any(extra):
            x = layers.ZeroPadding2D(((0, extra[0]), (0, extra[1])), name=f"{name}_pad")(x)
        padding = "valid"
    return layers.MaxPooling2D(pool_size, strides=strides, padding=padding, name=name)(x)


def conv_bn_act(
    x,
    filters: int,
    kernel_size: int | tuple = 3,
    strides: int | tuple = 1,
    *,
    padding: Padding = "same",
    dilation: int = 1,
    groups: int = 1,
    activation: Activation = "relu",
    batch_norm: bool = True,
    use_bias: bool | None = None,
    weight_decay: float = 0.0,
    bn_momentum: float | None = None,
    bn_epsilon: float | None = None,
    name: str,
):
    """Convolution, optional batch norm, optional activation.

    Layers are named ``{name}_conv``, ``{name}_bn`` and ``{name}_act``. ``padding``
    is ``"same"``, ``"valid"`` or a pixel count (explicit zero padding, as papers
    state it). The bias defaults to off when batch norm follows, since BN's beta
    makes it redundant. ``bn_momentum`` and ``bn_epsilon`` default to the settings
    of the backbone being built (see :mod:`kcnn.blocks.normalization`).
    """
    x, mode = explicit_padding(x, padding, name)
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=mode,
        dilation_rate=dilation,
        groups=groups,
        use_bias=(not batch_norm) if use_bias is None else use_bias,
        kernel_initializer=KERNEL_INIT,
        kernel_regularizer=regularizer(weight_decay),
        name=f"{name}_conv",
    )(x)
    if batch_norm:
        x = normalization.batch_norm(x, f"{name}_bn", momentum=bn_momentum, epsilon=bn_epsilon)
    return activation_layer(x, activation, f"{name}_act")


def channels(x) -> int:
    """Static channel count of a channels-last tensor."""
    c = x.shape[-1]
    if c is None:
        raise ValueError("the channel dimension must be known when building a block")
    return int(c)
