"""Shared fixtures and assertions (in the spirit of KerasHub's run_backbone_test helpers)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

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
FAST_NEWER = {"convnet", "efficientnet_b0", "mobilenet_v3_small", "regnetx_002"}


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


# --- one JAX process for every backend-agnostic check ------------------------------------------------

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKEND_CHECKS = os.path.join(REPO, "tests", "backend_checks.py")


class JaxChecks:
    """The results of tests/backend_checks.py's checks, run in one JAX process with TensorFlow blocked."""

    def __init__(self, out_dir, done: subprocess.CompletedProcess):
        self.out_dir, self.done = out_dir, done

    def result(self, name: str) -> dict:
        """The arrays check ``name`` returned on JAX; fails the test with its traceback if it did not pass."""
        assert self.done.returncode == 0, self.done.stderr[-3000:]
        with open(os.path.join(self.out_dir, "status.json")) as handle:
            status = json.load(handle)
        assert status["backend"] == "jax"
        assert name in status["checks"], f"{name} was not run: mark its test @pytest.mark.on_jax({name!r})"
        assert status["checks"][name]["ok"], status["checks"][name]["error"]
        with np.load(os.path.join(self.out_dir, f"{name}.npz")) as arrays:
            return dict(arrays)


@pytest.fixture(scope="session")
def on_jax(request, tmp_path_factory) -> JaxChecks:
    """Every check that this session's selected tests name with ``@pytest.mark.on_jax(NAME)``, in one subprocess.

    A JAX process takes seconds to start and compiles each initializer shape anew, so one process runs them
    all (about 55 s for the five on two cores; five processes took about 80 s).
    """
    names = sorted({mark.args[0] for item in request.session.items for mark in item.iter_markers("on_jax")})
    out_dir = str(tmp_path_factory.mktemp("jax"))
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": REPO}
    done = subprocess.run([sys.executable, BACKEND_CHECKS, out_dir, *names], capture_output=True, text=True,
                          timeout=600, env=env, cwd=REPO)
    return JaxChecks(out_dir, done)


# --- one tiny trained run for every test that reads a run directory ---------------------------------

@pytest.fixture(scope="session")
def shared_tiny_run(tmp_path_factory):
    """tiny_run.TINY trained once per session (per pytest-xdist worker): (run directory, metrics). Read only."""
    from tiny_run import tiny

    from pipelines.train import train

    path = str(tmp_path_factory.mktemp("tiny-run") / "run")
    return path, train(tiny(), path, verbose=False)


@pytest.fixture
def tiny_run(shared_tiny_run, tmp_path):
    """A private copy of the shared tiny run, for a test that writes into it: (run directory, metrics)."""
    path, metrics = shared_tiny_run
    copy = str(tmp_path / "run")
    shutil.copytree(path, copy)
    return copy, dict(metrics)


def randomise_statistics(model, seed=0):
    """Moving statistics and affine parameters far from their initial values, so folding has work to do."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            layer.moving_mean.assign(rng.normal(0, 0.5, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.3, 3.0, layer.moving_variance.shape))
            if layer.gamma is not None:
                layer.gamma.assign(rng.normal(1, 0.3, layer.gamma.shape))
            if layer.beta is not None:
                layer.beta.assign(rng.normal(0, 0.3, layer.beta.shape))
    return model
