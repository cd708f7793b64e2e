"""Small requests must not cost the server large memory: oversized images and declared shapes are refused.

The issue's measurements before the fix: an all-black 8192x8192 PNG (about 200 KB) sent to
predict_image_bytes cost the server 1.26 GB; a uint8 request declaring [1, 8192, 8192, 3] with no
values (61 bytes) cost 1.45 GB. TF Serving answers both with INVALID_ARGUMENT (the first from the
exported graph's own check, which travels with the SavedModel; the second is kcnn serve's).
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc

from pipelines.preprocess import preprocess_encoded
from serving.client import Client
from serving.export import SIGNATURE_BYTES, SIGNATURE_IMAGES
from tests.serving.serving_helpers import SPEC, exported

MAX_PIXELS = 4096 * 4096


def black_png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (side, side)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def jpeg(height: int, width: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_the_exported_graph_refuses_an_oversized_png_before_decoding(tmp_path):
    _, result = exported(str(tmp_path / "m"), seed=0)
    signature = tf.saved_model.load(result.path).signatures[SIGNATURE_BYTES]
    data = black_png(8192)
    assert len(data) < 300_000
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"limit of {MAX_PIXELS} pixels"):
        signature(image_bytes=tf.constant([data]))
    ok = signature(image_bytes=tf.constant([black_png(64)]))["probabilities"].numpy()
    assert ok.shape == (1, 3)


def test_large_jpegs_decode_at_a_reduced_scale_with_the_same_prediction():
    # 2000x1600 for a 32-pixel model: decoded at 1/8 (250x200), still more than twice the 32 pixels kept.
    data = jpeg(1600, 2000)
    reduced = preprocess_encoded(tf.constant(data), SPEC).numpy()
    full = tf.image.resize(tf.io.decode_jpeg(data, channels=3)[tf.newaxis] / 255, (32, 40), antialias=True)
    full = (full[0, :, 4:36, :].numpy() - 0.5) / 0.5
    assert reduced.shape == (32, 32, 3)
    assert np.abs(reduced - full).mean() < 0.02  # the DCT-scaled decode is a faithful downscale


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_the_server_stays_small_under_hostile_requests(tmp_path):
    base = str(tmp_path / "hostile")
    exported(base, seed=0)
    port = _free_port()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    server = subprocess.Popen([sys.executable, "-m", "kcnn.cli", "serve", f"--port={port}", "--model_name=hostile",
                               f"--model_base_path={base}", "--file_system_poll_wait_seconds=0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        with Client(f"localhost:{port}", "hostile", timeout=60) as client:
            client.wait_until_available(timeout=120)
            client.predict([black_png(64)])  # warm: graphs traced, arenas sized
        idle = _peak_rss_mb(server.pid)
        with grpc.insecure_channel(f"localhost:{port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name="hostile", signature_name=SIGNATURE_BYTES))
            request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([black_png(8192)], dtype=tf.string))
            with pytest.raises(grpc.RpcError) as error:
                stub.Predict(request, timeout=60)
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert f"limit of {MAX_PIXELS} pixels" in error.value.details()
            declared = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name="hostile", signature_name=SIGNATURE_IMAGES))
            tensor = declared.inputs["images"]
            tensor.dtype = tf.uint8.as_datatype_enum
            for size in (1, 8192, 8192, 3):
                tensor.tensor_shape.dim.add(size=size)
            assert declared.ByteSize() < 100
            with pytest.raises(grpc.RpcError) as error:
                stub.Predict(declared, timeout=60)
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            # One small PNG declared 20,000 times (a TensorProto repeats its last value): 3.5 GB before the guard.
            repeated = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name="hostile", signature_name=SIGNATURE_BYTES))
            tensor = repeated.inputs["image_bytes"]
            tensor.dtype = tf.string.as_datatype_enum
            tensor.tensor_shape.dim.add(size=20_000)
            tensor.string_val.append(black_png(64))
            assert repeated.ByteSize() < 1000
            with pytest.raises(grpc.RpcError) as error:
                stub.Predict(repeated, timeout=60)
            assert (error.value.code(), error.value.details()) == (
                grpc.StatusCode.INVALID_ARGUMENT, "tensor parsing error: image_bytes (it declares 20000 strings and "
                "sends 1; kcnn serve repeats the last one for at most 64 more, so send every value)")
            tensor.tensor_shape.dim[0].size = 65  # TensorFlow's fill, within the guard: served
            assert len(stub.Predict(repeated, timeout=60).outputs["classes"].int_val) == 65 * 3
        peak = _peak_rss_mb(server.pid)
        assert peak - idle < 100, f"peak RSS rose from {idle:.0f} MB to {peak:.0f} MB"
        with Client(f"localhost:{port}", "hostile", timeout=60) as client:
            assert len(client.predict([black_png(64)])) == 1  # still serving
    finally:
        server.terminate()
        server.wait(timeout=30)
