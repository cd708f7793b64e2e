"""Small requests must not cost the server large memory: oversized images and declared shapes are refused.

The issue's measurements before the fix: an all-black 8192x8192 PNG (about 200 KB) sent to
predict_image_bytes cost the server 1.26 GB; a uint8 request declaring [1, 8192, 8192, 3] with no
values (61 bytes) cost 1.45 GB. TF Serving answers both with INVALID_ARGUMENT (the first from the
exported graph's own check, which travels with the SavedModel; the second is kcnn serve's). Within
the limits, a [1, 4096, 4096, 3] declared tensor cost 357 MB (four at once 856 MB): now about 54 MB,
and kcnn serve's request memory bound (``--max_request_memory_mb``) keeps four at once near 100 MB.
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


def test_preprocessing_resizes_the_raw_pixels_first_with_the_same_inputs():
    # The serving graph used to scale a uint8 image to [0, 1] floats (and to grey) at full size before resizing:
    # a 4096x4096 RGB request then held 200 MB of floats per step. Every step after the resize is per pixel,
    # so resizing first must give the inputs of the float-first order (written out here) to float rounding.
    from pipelines.preprocess import LUMA, Preprocessing, preprocess_images, stretched_inputs

    rng = np.random.default_rng(0)
    for shape, channels, crop in (((2, 37, 53, 3), 1, 0.875), ((1, 90, 200, 1), 3, 1.0), ((1, 64, 64, 4), 3, 1.0)):
        raw = rng.integers(0, 256, shape).astype(np.uint8)
        unit = raw[..., :3].astype(np.float32) / 255 if shape[-1] == 4 else raw.astype(np.float32) / 255
        if unit.shape[-1] == 3 and channels == 1:
            unit = (unit * np.array(LUMA, np.float32)).sum(-1, keepdims=True)
        if unit.shape[-1] == 1 and channels == 3:
            unit = np.repeat(unit, 3, -1)
        spec = Preprocessing(32, channels, crop_fraction=crop, mean=(0.5,) * channels, std=(0.25,) * channels)
        scale = np.float32(32 / crop) / min(shape[1:3])  # the shorter side to 32 / crop_fraction
        size = [max(32, int(np.round(shape[1] * scale))), max(32, int(np.round(shape[2] * scale)))]
        resized = tf.image.resize(unit, size, antialias=True).numpy()
        top, left = (size[0] - 32) // 2, (size[1] - 32) // 2
        expected = (np.clip(resized[:, top:top + 32, left:left + 32], 0, 1) - 0.5) / 0.25
        np.testing.assert_allclose(preprocess_images(tf.constant(raw), spec).numpy(), expected, atol=1e-5)
        stretched = (np.clip(tf.image.resize(unit, [32, 32], antialias=True).numpy(), 0, 1) - 0.5) / 0.25
        np.testing.assert_allclose(stretched_inputs(tf.constant(raw), spec).numpy(), stretched, atol=1e-5)
    floats = rng.uniform(0, 255, (1, 40, 40, 3)).astype(np.float32)  # [0, 255] floats are read as pixels
    spec = Preprocessing(32, 3, mean=(0.0,) * 3, std=(1.0,) * 3)
    np.testing.assert_allclose(preprocess_images(tf.constant(floats), spec).numpy(),
                               preprocess_images(tf.constant(floats / 255), spec).numpy(), atol=1e-5)


def test_the_request_memory_bound_admits_what_fits_and_runs_an_oversized_request_alone():
    import threading

    from serving.memory import MemoryBusy, RequestMemory, decoded_bytes

    memory = RequestMemory(100)
    assert memory.acquire(60) == 60 and memory.acquire(40) == 40  # both fit
    with pytest.raises(MemoryBusy, match="kcnn serve is holding .* MB of requests and this one needs about .* --max_request_memory_mb="):
        memory.acquire(10, timeout=0.05)  # full: waits, then says so
    memory.release(40)
    released = threading.Timer(0.1, memory.release, (60,))
    released.start()
    assert memory.acquire(500, timeout=10) == 100  # larger than the bound: waits until alone, holds all of it
    released.join()
    assert memory.in_flight == 100 and memory.peak == 100
    memory.release(100)
    assert decoded_bytes(black_png(300)) == len(black_png(300)) + 300 * 300 * 3  # from the header alone
    assert decoded_bytes(b"not an image") == len(b"not an image")


def test_a_declared_tensor_of_one_value_is_filled_by_tensorflow_with_numpys_values():
    # A 61-byte request declaring [1, 4096, 4096, 3] and no values went through numpy and two conversion copies
    # (101 MB); such tensors are now filled by TensorFlow (50 MB) with exactly make_ndarray's values.
    from tensorflow.core.framework import tensor_pb2, types_pb2

    from serving.tensors import FILL_IN_TENSORFLOW, from_request_proto

    for dtype, field, values in ((types_pb2.DT_UINT8, "int_val", []), (types_pb2.DT_UINT8, "int_val", [7]),
                                 (types_pb2.DT_FLOAT, "float_val", [1.5]), (types_pb2.DT_HALF, "half_val", [15360]),
                                 (types_pb2.DT_BOOL, "bool_val", [True])):
        proto = tensor_pb2.TensorProto(dtype=dtype)
        for size in (1, FILL_IN_TENSORFLOW // 2, 2):
            proto.tensor_shape.dim.add(size=size)
        getattr(proto, field).extend(values)
        filled = from_request_proto(proto, "x")
        assert isinstance(filled, tf.Tensor)
        np.testing.assert_array_equal(filled.numpy(), tf.make_ndarray(proto))


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
            # Within the element limit: [1, 4096, 4096, 3] with no values (issue 28: 357 MB, four at once 856 MB).
            tensor = declared.inputs["images"]
            tensor.tensor_shape.dim[1].size = tensor.tensor_shape.dim[2].size = 4096
            assert len(stub.Predict(declared, timeout=60).outputs["classes"].int_val) == 3
        peak = _peak_rss_mb(server.pid)
        assert peak - idle < 100, f"peak RSS rose from {idle:.0f} MB to {peak:.0f} MB"
        import concurrent.futures

        with grpc.insecure_channel(f"localhost:{port}") as channel:  # four at once: the memory bound queues them
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(lambda _: stub.Predict(declared, timeout=120), range(4)))
            assert all(len(answer.outputs["classes"].int_val) == 3 for answer in answers)
        peak = _peak_rss_mb(server.pid)
        assert peak - idle < 200, f"four at once: peak RSS rose from {idle:.0f} MB to {peak:.0f} MB"
        with Client(f"localhost:{port}", "hostile", timeout=60) as client:
            assert len(client.predict([black_png(64)])) == 1  # still serving
    finally:
        server.terminate()
        server.wait(timeout=30)
