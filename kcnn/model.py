"""Composing backbones and heads: ``assemble`` (explicit) and ``build`` (by name)."""

from __future__ import annotations

import functools
from typing import Callable

import keras

from kcnn.analysis.report import feature_strides
from kcnn.backbones import BACKBONES
from kcnn.heads import HEADS
from kcnn.heads.base import check_num_classes


def list_backbones(pattern: str = "*") -> list[str]:
    """Registered backbone names matching an fnmatch ``pattern``."""
    return BACKBONES.list(pattern)


def list_heads(pattern: str = "*") -> list[str]:
    """Registered head names matching an fnmatch ``pattern``."""
    return HEADS.list(pattern)


def assemble(backbone: keras.Model, head: str | Callable, num_classes: int, *, head_kwargs: dict | None = None,
             name: str | None = None) -> keras.Model:
    """Put ``head`` on ``backbone`` and return one flat functional model.

    ``head`` is a registered name or a function ``head(backbone, num_classes,
    **head_kwargs) -> tensor``. The backbone's layers become the model's own, so
    layer names and the analysis report read straight through.

    >>> import kcnn
    >>> model = kcnn.assemble(kcnn.backbones.mobilenet_v1(input_shape=(64, 64, 3), width=0.25),
    ...                       "fully_conv", num_classes=10)
    >>> model.output_shape
    (None, 10)
    """
    check_num_classes(num_classes)
    if not isinstance(backbone, keras.Model):
        raise ValueError(f"backbone must be a keras.Model (e.g. kcnn.backbones.resnet18()), got {type(backbone)!r}")
    head_fn = HEADS.get(head) if isinstance(head, str) else head
    if not callable(head_fn):
        raise ValueError(f"head must be a registered name ({', '.join(HEADS.list())}) or a callable, got {head!r}")
    outputs = head_fn(backbone, num_classes, **(head_kwargs or {}))
    inputs = backbone.inputs[0] if len(backbone.inputs) == 1 else backbone.inputs
    return keras.Model(inputs, outputs, name=name or backbone.name)


def build(name: str, num_classes: int = 1000, head: str | Callable | None = None, input_shape: tuple | None = None,
          backbone_kwargs: dict | None = None, head_kwargs: dict | None = None, weights: str | None = None,
          weights_source: str | None = None) -> keras.Model:
    """Build a registered architecture with its paper's head and input size unless told otherwise.

    ``head=None`` picks the paper's own head and its settings (``head_kwargs``
    are merged over them); ``input_shape=None`` picks the paper's input size.
    ``weights="imagenet"`` (or a checkpoint file) builds the checkpoint's variant
    (see ``kcnn.weights.CHECKPOINTS``) and loads it; ``weights_source`` picks
    "keras" (keras.applications, the default where it has the model) or
    "torchvision". With another head or class count the head stays freshly
    initialised and only the backbone is loaded.

    >>> import kcnn
    >>> kcnn.build("squeezenet1_1", num_classes=10, input_shape=(64, 64, 3)).output_shape
    (None, 10)
    """
    entry = BACKBONES.entry(name)
    check_num_classes(num_classes)
    meta = entry.metadata
    input_shape = tuple(input_shape) if input_shape is not None else meta["input_shape"]
    pretrained = None
    if weights is not None:
        from kcnn.weights import checkpoint_for  # lazy: h5py and the mapping tables only when asked for

        pretrained, path = checkpoint_for(name, weights, weights_source)
        backbone_kwargs = {**pretrained.builder_kwargs, **(backbone_kwargs or {})}
    own_head = head is None
    if head is None:
        head, head_kwargs = meta["head"], {**meta["head_kwargs"], **(head_kwargs or {})}
    backbone = _build_backbone(name, input_shape, backbone_kwargs or {})
    model = assemble(backbone, head, num_classes, head_kwargs=head_kwargs, name=name)
    if pretrained is not None:
        from kcnn.weights import load_weights

        load_weights(model, path, skip_head=not own_head or num_classes != pretrained.classes)
    return model


def _build_backbone(name: str, input_shape: tuple, kwargs: dict) -> keras.Model:
    """Call the builder; turn Keras' "negative output size" failures into an actionable error."""
    builder = BACKBONES.get(name)
    try:
        backbone = builder(input_shape=input_shape, **kwargs)
    except TypeError as error:
        raise TypeError(f"{name}: {error}; see help(kcnn.backbones.{name}) for its arguments") from None
    except ValueError as error:
        if not _is_size_error(error) or None in input_shape[:2]:
            raise
        smallest = smallest_input_size(name, input_shape[2], tuple(sorted(kwargs.items())))
        raise ValueError(
            f"input_shape {input_shape} is too small for {name}: its downsampling needs at least "
            f"{smallest}x{smallest} pixels; pass input_shape=({smallest}, {smallest}, {input_shape[2]}) or larger"
        ) from None
    stride = max(max(s) for s in feature_strides(backbone))
    if any(d is not None and d < stride for d in input_shape[:2]):
        smallest = smallest_input_size(name, input_shape[2], tuple(sorted(kwargs.items())))
        raise ValueError(
            f"input_shape {input_shape} is too small for {name}: it downsamples by {stride}, so it needs at least "
            f"{smallest}x{smallest} pixels; pass input_shape=({smallest}, {smallest}, {input_shape[2]}) or larger"
        )
    return backbone


def _is_size_error(error: Exception) -> bool:
    text = str(error).lower()
    return "negative" in text or "output size" in text or "must be > 0" in text or "too small" in text


@functools.lru_cache(maxsize=64)
def smallest_input_size(name: str, channels: int = 3, kwargs: tuple = ()) -> int:
    """The smallest square input ``name`` takes: at least its total stride, and one that Keras can build.

    Found by bisection over builds, so it also covers valid paddings and pools
    that shrink the map faster than the strides alone.
    """
    builder = BACKBONES.get(name)

    def fits(size: int) -> bool:
        try:
            backbone = builder(input_shape=(size, size, channels), **dict(kwargs))
            return size >= max(max(s) for s in feature_strides(backbone))
        except ValueError as error:
            if _is_size_error(error):
                return False
            raise

    low, high = 1, 32
    while not fits(high):
        low, high = high, high * 2
        if high > 8192:
            raise ValueError(f"{name} does not build at any input size up to 8192")
    while low < high:
        middle = (low + high) // 2
        if fits(middle):
            high = middle
        else:
            low = middle + 1
    return high
