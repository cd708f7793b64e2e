"""Picking a backbone's outputs: the deepest map at each stride."""

from __future__ import annotations


def last_map_per_stride(maps_with_strides: list) -> list:
    """From ``(tensor, stride of the layer that made it)`` in network order, keep the last map
    before each downsampling step and the final map: one output per effective stride."""
    features = []
    for i, (x, _) in enumerate(maps_with_strides):
        if i == len(maps_with_strides) - 1 or maps_with_strides[i + 1][1] > 1:
            features.append(x)
    return features
