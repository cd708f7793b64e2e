"""Exported models and a running local server, shared by the serving tests."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

import kcnn
from pipelines.preprocess import Preprocessing
from serving.config import ModelEntry
from serving.export import export
from serving.server import Server

CLASSES = ["circle", "square", "triangle"]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC = Preprocessing(image_size=32, channels=3)


def exported(base_path: str, seed: int, version: int | None = None):
    """A small untrained classifier with seeded weights, exported to base_path/<version>."""
    import keras

    keras.utils.set_random_seed(seed)
    model = kcnn.build("lenet5", num_classes=3, input_shape=(32, 32, 3))
    return model, export(model, base_path, class_names=CLASSES, preprocessing=SPEC, version=version)


def images(count=4, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def png(image) -> bytes:
    return tf.io.encode_png(image).numpy()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Version 1 of model 'shapes' behind a gRPC and REST server on free ports."""
    base = str(tmp_path_factory.mktemp("models") / "shapes")
    model, result = exported(base, seed=1)
    server = Server([ModelEntry("shapes", base)], port=0, rest_api_port=0, poll_seconds=0.2).start()
    try:
        yield server, tf.saved_model.load(result.path), base
    finally:
        server.stop()
