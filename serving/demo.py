"""kcnn's main job end to end: train the digits recipe, export it, serve it locally, query it over gRPC.

Training runs as the user would run it (``kcnn train`` in a subprocess), so the
serving package never imports the training code.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf

import pipelines
from pipelines.run_dir import RunDir
from pipelines.sources import digits_arrays
from serving.client import Client
from serving.config import ModelEntry
from serving.export import export_run
from serving.server import Server

CONFIG = os.path.join(os.path.dirname(pipelines.__file__), "configs", "digits.yaml")


def run_demo(workdir: str = ".", *, shown: int = 10, batch: int = 60, extra_train_args=()) -> dict:
    """Train, export version 1, serve exactly that version (not whichever is newest) and report its accuracy."""
    run_dir = os.path.join(workdir, "runs", "digits")
    base_path = os.path.abspath(os.path.join(workdir, "models", "digits"))
    started = time.perf_counter()
    print(f"[1/4] training {CONFIG} into {run_dir}", flush=True)
    command = [sys.executable, "-m", "kcnn.cli", "train", CONFIG, "--run-dir", run_dir, *extra_train_args]
    subprocess.run(command, check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    trained = time.perf_counter()

    run = RunDir(run_dir)
    trained_accuracy = run.read_json(RunDir.METRICS)["test_accuracy"]
    exported = export_run(run_dir, base_path, version=1, overwrite=True)
    print(f"[2/4] exported version {exported.version} to {exported.path}", flush=True)

    print(f"[3/4] starting the local TF-Serving-compatible server on a free port, serving version "
          f"{exported.version}", flush=True)
    entry = ModelEntry("digits", base_path, version_policy="specific", versions=(exported.version,))
    with Server([entry], port=0, poll_seconds=0) as server:
        target = f"127.0.0.1:{server.port}"
        print(f"[4/4] querying {target} over gRPC with the held-out test images as PNG bytes", flush=True)
        images, labels = digits_arrays("test")
        encoded = [tf.io.encode_png(image).numpy() for image in images]
        predictions = []
        with Client(target, "digits") as client:
            version = client.wait_until_available(timeout=60, version=exported.version)
            for start in range(0, len(encoded), batch):
                predictions += client.predict(encoded[start:start + batch], version=version)
    predicted = np.array([int(p.labels[0]) for p in predictions])
    accuracy = float(np.mean(predicted == labels))
    print(f"\n{'image':>5}  {'true':>4}  {'predicted':>9}  {'score':>6}")
    for i in range(min(shown, len(labels))):
        print(f"{i:5d}  {labels[i]:4d}  {predictions[i].labels[0]:>9}  {predictions[i].scores[0]:6.3f}")
    result = {"served_accuracy": accuracy, "test_images": int(len(labels)), "trained_test_accuracy": trained_accuracy,
              "served_version": version, "export_path": exported.path, "train_seconds": trained - started,
              "total_seconds": time.perf_counter() - started}
    print(f"\nserved accuracy {accuracy:.4f} on {len(labels)} test images (version {version}; the training run "
          f"measured {trained_accuracy:.4f}); total {result['total_seconds']:.0f} s")
    return result
