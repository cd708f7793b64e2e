"""Shared fixtures and assertions (in the spirit of KerasHub's run_backbone_test helpers)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import kcnn  # noqa: E402


def small_input_shape(name: str) -> tuple:
    """A small input for fast tests: the paper's size capped at 64 pixels (every backbone builds there)."""
    height, width, channels = kcnn.backbones.BACKBONES.entry(name).metadata["input_shape"]
    return (min(height, 64), min(width, 64), channels)


# The families added after the classic eight have many variants and some are large: a few representatives
# run in the fast suite, the rest with the slow tests (CI runs both), so registry-driven tests stay quick.
CLASSIC = {
    "lenet5", "alexnet", "vgg11", "vgg13", "vgg16", "vgg19", "squeezenet1_0", "squeezenet1_1",
    "mobilenet_v1", "mobilenet_v2", "resnet18", "resnet34", "resnet50", "densenet121", "googlenet",
}
FAST_NEWER = {"efficientnet_b0", "mobilenet_v3_small", "regnetx_002"}


# One more member of each newer family for the slow runs. The other variants of a family (EfficientNet B1-B7,
# RegNet 004-320, NFNet F1-F2, the MobileNet v3 minimalistic ones) are the same builder walking a bigger row of
# the same table: each is built at its paper size by the pinned-count tests, and the per-model forward, round-trip,
# mixed-precision, analysis and batch-norm tests run on these representatives, which keeps the suite near
# 15 minutes on two cores instead of the 40 that every variant at every test would cost.
SLOW_NEWER = {"mobilenet_v3_large", "regnety_002", "nfnet_f0", "fractalnet_cifar"}


def fast_or_slow(names) -> list:
    """Per-model parametrisation: classic networks and FAST_NEWER as they are, one more representative of each
    newer family marked slow, the other scaled variants left to the pinned-count tests."""
    return [n if n in CLASSIC or n in FAST_NEWER else pytest.param(n, marks=pytest.mark.slow)
            for n in names if n in CLASSIC or n in FAST_NEWER or n in SLOW_NEWER]


def every_variant(names) -> list:
    """Parametrisation over every variant (pinned counts): the newer families' variants marked slow."""
    return [n if n in CLASSIC or n in FAST_NEWER else pytest.param(n, marks=pytest.mark.slow) for n in names]


def random_images(shape: tuple, batch: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, *shape), dtype=np.float32)


def assert_probabilities(outputs: np.ndarray, expected_shape: tuple) -> None:
    assert outputs.shape == expected_shape
    assert np.all(np.isfinite(outputs))
    np.testing.assert_allclose(outputs.sum(axis=-1), 1.0, rtol=1e-4)


def assert_save_load_round_trip(model: keras.Model, inputs: np.ndarray, directory) -> None:
    """Saving as .keras and loading with safe_mode=True gives identical outputs."""
    path = os.path.join(directory, f"{model.name}.keras")
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(model.predict(inputs, verbose=0), restored.predict(inputs, verbose=0))
    assert [layer.name for layer in restored.layers] == [layer.name for layer in model.layers]


@pytest.fixture
def mixed_precision():
    """Set the global mixed_float16 policy for one test and restore float32 after it."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
