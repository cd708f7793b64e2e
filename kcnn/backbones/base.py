"""The backbone registry and what every backbone builder shares."""

from __future__ import annotations

from typing import Sequence

import keras

from kcnn.registry import Registry

BACKBONES = Registry("backbone")


def register(
    name: str,
    *,
    input_shape: tuple,
    head: str,
    head_kwargs: dict | None = None,
    paper: str,
):
    """Register a backbone builder with its paper's input size and default head."""
    return BACKBONES.register(
        name, input_shape=tuple(input_shape), head=head, head_kwargs=dict(head_kwargs or {}), paper=paper
    )


def image_input(input_shape: Sequence, name: str = "images"):
    """A channels-last image input; spatial sizes may be ``None``."""
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise ValueError(
            f"input_shape must be (height, width, channels), got {input_shape!r}; "
            "spatial sizes may be None for a variable input size"
        )
    for dim in shape[:2]:
        if dim is not None and (not isinstance(dim, int) or dim < 1):
            raise ValueError(f"input_shape spatial sizes must be positive integers or None, got {input_shape!r}")
    if not isinstance(shape[2], int) or shape[2] < 1:
        raise ValueError(f"input_shape channels must be a positive integer, got {input_shape!r}")
    return keras.Input(shape=shape, name=name)


def check_width(width: float, name: str = "width", low: float = 0.0, high: float = 4.0) -> None:
    if not isinstance(width, (int, float)) or not low < width <= high:
        raise ValueError(f"{name} (width multiplier) must be in ({low}, {high}], got {width!r}")


def backbone_model(inputs, features: list, name: str) -> keras.Model:
    """A functional model whose outputs are the feature maps at each level, shallow to deep."""
    return keras.Model(inputs, list(features), name=name)
