"""LiteRT (TensorFlow Lite) export: int8 post-training quantisation with a representative data set.

``convert(model, representative_images)`` quantises weights and activations to int8 with
TensorFlow's converter (``tf.lite.TFLiteConverter``, still shipped in TF 2.21 though marked for
replacement by LiteRT), calibrating activation ranges on images from the training pipeline;
ops without an int8 kernel stay float (the converter's float fallback), and the model's input
and output stay float32 so callers feed the same preprocessed tensors as to the Keras model.
``export_run_litert(run_dir, out_dir)`` does this for a finished ``kcnn train`` run (or a
``kcnn compress`` output), then measures the test-split accuracy of both the float Keras model and
the ``.tflite`` file on the run's evaluation pipeline.

Running a ``.tflite`` file uses ``ai_edge_litert.interpreter.Interpreter`` when the
``ai-edge-litert`` package is installed, else TensorFlow's ``tf.lite.Interpreter`` (deprecated in
TF 2.20+, still present in 2.21).
"""

from __future__ import annotations

import contextlib
import io

import json
import os
import shutil
import warnings
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from kcnn.files import atomic_write

TFLITE_FILE = "model.tflite"


@dataclass(frozen=True)
class LiteRTResult:
    path: str
    bytes: int
    float_accuracy: float
    litert_accuracy: float
    examples: int


def convert(model, representative_images, *, int8: bool = True) -> bytes:
    """The ``.tflite`` flatbuffer of ``model``; int8 weights and activations where kernels exist."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        images = np.asarray(representative_images, dtype=np.float32)
        if not len(images):
            raise ValueError("int8 quantisation needs representative images to calibrate activation ranges")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[np.newaxis]] for image in images)
    # The converter saves the model through Keras' export first, which prints the artifact's endpoints and a
    # "Captures" line per variable (64 for a ResNet-18): the user asked for a .tflite file, not that listing.
    with contextlib.redirect_stdout(io.StringIO()):
        return converter.convert()


def interpreter(model_content: bytes):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
        runner = Interpreter(model_content=model_content)
    return runner


def predict(model_content: bytes, images) -> np.ndarray:
    """Run the ``.tflite`` model on a batch of preprocessed images, one image at a time."""
    runner = interpreter(model_content)
    runner.allocate_tensors()
    source, target = runner.get_input_details()[0], runner.get_output_details()[0]
    outputs = []
    for image in np.asarray(images, dtype=np.float32):
        runner.set_tensor(source["index"], image[np.newaxis])
        runner.invoke()
        outputs.append(runner.get_tensor(target["index"])[0])
    return np.stack(outputs)


def _datasets(config, run_dir: str):
    from pipelines.data import DataSpec, make_dataset
    from pipelines.run_dir import RunDir

    # The run's own evaluation pipeline, with the preprocessing it recorded.
    spec = DataSpec.from_config(config.data, preprocessing=RunDir(run_dir).preprocessing()).evaluation(cache=False)
    return make_dataset(spec, spec.train_split)[0], make_dataset(spec, spec.test_split)[0]


def representative_images(train_dataset, count: int) -> np.ndarray:
    """The first ``count`` images of the (evaluation-preprocessed) training split."""
    images = []
    for batch, _ in train_dataset:
        images.append(batch.numpy())
        if sum(len(b) for b in images) >= count:
            break
    return np.concatenate(images)[:count]


def export_run_litert(run_dir: str, out_dir: str, *, samples: int = 200, int8: bool = True) -> LiteRTResult:
    """Write ``out_dir/model.tflite`` (atomically) and ``out_dir/litert.json``; returns sizes and accuracies."""
    from pipelines.evaluate import load_run

    config, model = load_run(run_dir)
    if any(type(layer).__name__.startswith("Masked") for layer in model.layers):
        from kcnn.compress import strip_pruning

        model = strip_pruning(model)
    train, test = _datasets(config, run_dir)
    content = convert(model, representative_images(train, samples) if int8 else [], int8=int8)
    hits_float = hits_lite = examples = 0
    for images, labels in test:
        labels = labels.numpy()
        hits_float += int(np.sum(model.predict_on_batch(images).argmax(-1) == labels))
        hits_lite += int(np.sum(predict(content, images.numpy()).argmax(-1) == labels))
        examples += len(labels)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, TFLITE_FILE)
    atomic_write(path, content)
    result = LiteRTResult(path, len(content), hits_float / max(examples, 1), hits_lite / max(examples, 1), examples)
    for name in ("class_names.json", "preprocessing.json"):
        if os.path.exists(os.path.join(run_dir, name)):
            shutil.copyfile(os.path.join(run_dir, name), os.path.join(out_dir, name))
    atomic_write(os.path.join(out_dir, "litert.json"), json.dumps(
        {"int8": int8, "representative_images": samples if int8 else 0, "bytes": result.bytes,
         "test_examples": examples, "float_accuracy": result.float_accuracy,
         "litert_accuracy": result.litert_accuracy}, indent=2).encode())
    return result


def describe(result: LiteRTResult) -> str:
    return (f"wrote {result.path} ({result.bytes:,} bytes); test accuracy on {result.examples} images: "
            f"float {result.float_accuracy:.4f}, LiteRT {result.litert_accuracy:.4f}")
