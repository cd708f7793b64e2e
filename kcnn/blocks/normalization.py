"""Batch norm settings, chosen once by the backbone builder and read by every block.

A backbone builder decorated with :func:`batch_norm_options` gains two keyword
options, ``bn_momentum`` and ``bn_epsilon``, defaulting to the values its paper or
reference implementation uses. While the builder runs, every batch-norm layer the
blocks create through :func:`batch_norm` takes those values, so no block has to
thread them through its own arguments:

>>> import kcnn
>>> model = kcnn.backbones.resnet18(input_shape=(32, 32, 3), bn_momentum=0.9, bn_epsilon=1e-5)
>>> {layer.momentum for layer in model.layers if "bn" in layer.name}
{0.9}

A new backbone inherits the options with one line under its ``@register``:
``@batch_norm_options(momentum=0.99, epsilon=1e-3)``. Blocks used outside any
builder get Keras' defaults (momentum 0.99, epsilon 1e-3) unless called inside
``with batch_norm_settings(momentum, epsilon):``.

The momentum is the weight of the old moving average: ``moving = momentum * moving
+ (1 - momentum) * batch`` (Keras' convention; PyTorch's ``momentum=0.1`` is 0.9
here). A short run with a momentum near 1 evaluates with statistics still close to
their initial values; ``pipelines.batchnorm`` recomputes them exactly instead.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
from dataclasses import dataclass

from keras import layers


@dataclass(frozen=True)
class BatchNormSettings:
    """Momentum and epsilon of the batch-norm layers a builder creates."""

    momentum: float = 0.99
    epsilon: float = 1e-3

    def __post_init__(self):
        if isinstance(self.momentum, bool) or not isinstance(self.momentum, (int, float)) \
                or not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"bn_momentum must be in [0, 1), got {self.momentum!r} (Keras' convention: the "
                             "weight of the old moving average, e.g. 0.9 or 0.99)")
        if isinstance(self.epsilon, bool) or not isinstance(self.epsilon, (int, float)) or not self.epsilon > 0:
            raise ValueError(f"bn_epsilon must be a number > 0, got {self.epsilon!r}")


KERAS_DEFAULT = BatchNormSettings()


class _Active(threading.local):
    def __init__(self):
        self.stack = [KERAS_DEFAULT]
        self.created = [0]


_ACTIVE = _Active()


def current_settings() -> BatchNormSettings:
    """The settings blocks use right now: the innermost builder's, else Keras' defaults."""
    return _ACTIVE.stack[-1]


@contextlib.contextmanager
def batch_norm_settings(momentum: float | None = None, epsilon: float | None = None):
    """Within the block, :func:`batch_norm` uses ``momentum`` and ``epsilon`` (``None`` keeps the outer value).

    Yields a one-item list that ends up holding how many batch-norm layers were
    created inside the block.
    """
    outer = current_settings()
    settings = BatchNormSettings(outer.momentum if momentum is None else momentum,
                                 outer.epsilon if epsilon is None else epsilon)
    counter = [0]
    _ACTIVE.stack.append(settings)
    _ACTIVE.created.append(0)
    try:
        yield counter
    finally:
        _ACTIVE.stack.pop()
        counter[0] = _ACTIVE.created.pop()
        _ACTIVE.created[-1] += counter[0]


def batch_norm(x, name: str, *, momentum: float | None = None, epsilon: float | None = None):
    """A ``BatchNormalization`` layer named ``name`` applied to ``x``, with the active settings.

    An explicit ``momentum`` or ``epsilon`` overrides the active setting for this layer only.
    """
    active = current_settings()
    settings = BatchNormSettings(active.momentum if momentum is None else momentum,
                                 active.epsilon if epsilon is None else epsilon)
    _ACTIVE.created[-1] += 1
    return layers.BatchNormalization(momentum=settings.momentum, epsilon=settings.epsilon, name=name)(x)


def batch_norm_options(*, momentum: float, epsilon: float):
    """Decorator for a backbone builder: add ``bn_momentum`` and ``bn_epsilon`` keyword options.

    ``momentum`` and ``epsilon`` are the builder's defaults (its paper's values).
    Passing either option to a builder call that creates no batch-norm layer (VGG
    or SqueezeNet without ``batch_norm=True``) is an error rather than an option
    silently ignored.
    """
    BatchNormSettings(momentum, epsilon)  # check the defaults once, at import

    def decorate(builder):
        @functools.wraps(builder)
        def with_options(*args, bn_momentum: float = momentum, bn_epsilon: float = epsilon, **kwargs):
            try:  # name the registered builder in a wrong call, not this wrapper's inner function
                inspect.signature(builder).bind(*args, **kwargs)
            except TypeError as error:
                raise TypeError(f"{with_options.__name__}() {error}") from None
            with batch_norm_settings(bn_momentum, bn_epsilon) as created:
                model = builder(*args, **kwargs)
            if not created[0] and (bn_momentum != momentum or bn_epsilon != epsilon):
                raise ValueError(f"{with_options.__name__} with these arguments has no batch norm, so bn_momentum and "
                                 "bn_epsilon do not apply; pass batch_norm=True to add it, or leave them unset")
            return model

        signature = inspect.signature(builder)
        extra = [inspect.Parameter("bn_momentum", inspect.Parameter.KEYWORD_ONLY, default=momentum),
                 inspect.Parameter("bn_epsilon", inspect.Parameter.KEYWORD_ONLY, default=epsilon)]
        params = list(signature.parameters.values())
        tail = [p for p in params if p.kind == inspect.Parameter.VAR_KEYWORD]
        head = [p for p in params if p.kind != inspect.Parameter.VAR_KEYWORD]
        with_options.__signature__ = signature.replace(parameters=head + extra + tail)
        with_options.batch_norm_defaults = BatchNormSettings(momentum, epsilon)
        return with_options

    return decorate


def batch_norm_defaults(builder) -> BatchNormSettings | None:
    """The default settings of a builder decorated with :func:`batch_norm_options`, else ``None``."""
    return getattr(builder, "batch_norm_defaults", None)
