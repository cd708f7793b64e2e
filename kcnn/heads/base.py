"""The head registry and the float32 classifier ending every head shares."""

from __future__ import annotations

from keras import layers

from kcnn.registry import Registry

HEADS = Registry("head")


def softmax(x, name: str = "predictions"):
    """Softmax in float32 whatever the global mixed-precision policy (KerasHub's head_dtype idea)."""
    return layers.Activation("softmax", dtype="float32", name=name)(x)


def check_num_classes(num_classes) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    return num_classes


def check_dropout(rate, name: str = "dropout") -> float:
    if not isinstance(rate, (int, float)) or not 0 <= rate < 1:
        raise ValueError(f"{name} must be in [0, 1), got {rate!r}")
    return float(rate)
