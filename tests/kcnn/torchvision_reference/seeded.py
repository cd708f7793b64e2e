"""Deterministic state dicts and images from names and shapes alone (numpy only).

The torchvision side (``make_reference.py``, run where PyTorch is installed) fills
torchvision's own models with these values and records their outputs; the test
side regenerates the very same tensors from the recorded names and shapes, so the
fixture holds outputs and a digest, not hundreds of megabytes of weights.
Every draw depends only on (seed, tensor name), never on the order of the keys.
"""

from __future__ import annotations

import hashlib
import zlib

import numpy as np


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def tensor(seed: int, key: str, shape: tuple, dtype: str) -> np.ndarray:
    """One tensor of a randomised, numerically tame network.

    Convolution and linear weights: He normal (fan-in), so activations keep their
    scale through deep stacks; BatchNorm: gamma in [0.5, 1.5], beta and running mean
    N(0, 0.1), running variance in [0.5, 1.5] (non-trivial statistics, so a wrong
    epsilon or a swapped mean/variance shows); biases N(0, 0.1).
    """
    rng = _rng(seed, key)
    leaf = key.rsplit(".", 1)[-1]
    if dtype.startswith("int"):
        return np.zeros(shape, dtype=dtype)
    if leaf == "running_var" or (leaf == "weight" and len(shape) == 1):
        value = rng.uniform(0.5, 1.5, size=shape)
    elif leaf in ("bias", "running_mean") or len(shape) <= 1:
        value = rng.normal(0.0, 0.1, size=shape)
    else:
        fan_in = int(np.prod(shape[1:]))
        value = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)
    return value.astype(dtype)


def state_dict(seed: int, spec: list) -> dict[str, np.ndarray]:
    """``spec``: [[name, shape, dtype], ...] as recorded from ``model.state_dict()``."""
    return {name: tensor(seed, name, tuple(shape), dtype) for name, shape, dtype in spec}


def images(seed: int, batch: int, size: int) -> np.ndarray:
    """RGB uint8 images, NHWC, with some spatial structure (smoothed noise), not flat noise."""
    rng = _rng(seed, "images")
    coarse = rng.uniform(0, 255, size=(batch, size // 4 + 2, size // 4 + 2, 3))
    fine = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2)[:, :size, :size]
    noise = rng.normal(0, 20, size=fine.shape)
    return np.clip(fine + noise, 0, 255).astype(np.uint8)


def digest(tensors: dict[str, np.ndarray]) -> str:
    """sha256 over names, shapes and bytes in name order: proves both sides drew the same values."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        value = np.ascontiguousarray(tensors[name])
        h.update(name.encode())
        h.update(str(value.shape).encode())
        h.update(value.tobytes())
    return h.hexdigest()
