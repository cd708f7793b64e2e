"""Peak server memory for small hostile requests, with kcnn's limits off (as before) and on (the defaults).

Each request goes to a fresh `kcnn serve` process (peak RSS, VmHWM, only grows); the figure is its
peak RSS after the request minus its peak after a warm-up request. Requests (the issue's list):
- png8192: an all-black 8192x8192 PNG (~200 KB) to predict_image_bytes;
- png16384: the same at 16384x16384 (~800 KB), limits on only (limits off took 5 GB and 23 s);
- declared: a uint8 tensor declaring [1, 8192, 8192, 3] with no values (61 bytes) to serving_default;
- declared4096: the same declaring [1, 4096, 4096, 3], within the element limit (issue 28: 357 MB);
- png4096: an all-black 4096x4096 PNG, within the pixel limit (issue 28: 260 MB);
- strings: one 64x64 PNG in a string tensor declaring 20,000 images (issue 28: 3.5 GB);
each of the last three also four at once ("x4", one client thread each; goal: at most 200 MB), and
the first two four at once with kcnn's request memory bound off ("unbound").

    python benchmarks/bench_hostile.py            # prints a table and a final RESULT {json} line
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import grpc
import tensorflow as tf
from PIL import Image
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from serving.client import Client  # noqa: E402
from result import print_result  # noqa: E402 - the RESULT line with the wall time

UNLIMITED = 1 << 40


def black_png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (side, side)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def request(kind: str) -> predict_pb2.PredictRequest:
    if kind == "strings":
        message = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="m",
                                                                           signature_name="predict_image_bytes"))
        tensor = message.inputs["image_bytes"]
        tensor.dtype = tf.string.as_datatype_enum
        tensor.tensor_shape.dim.add(size=20_000)
        tensor.string_val.append(black_png(64))
        return message
    if kind.startswith("png"):
        message = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="m",
                                                                           signature_name="predict_image_bytes"))
        message.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([black_png(int(kind[3:]))], dtype=tf.string))
        return message
    message = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="m", signature_name="serving_default"))
    tensor = message.inputs["images"]
    tensor.dtype = tf.uint8.as_datatype_enum
    side = 4096 if kind == "declared4096" else 8192
    for size in (1, side, side, 3):
        tensor.tensor_shape.dim.add(size=size)
    return message


def peak_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        return next(int(line.split()[1]) / 1024 for line in handle if line.startswith("VmHWM:"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure(base: str, kind: str, limits: bool, concurrent: int = 1, bound: bool = True) -> dict:
    port = free_port()
    flags = [] if limits else [f"--max_request_elements={UNLIMITED}"]
    flags += [] if bound else ["--max_request_memory_mb=1000000"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    server = subprocess.Popen([sys.executable, "-m", "kcnn.cli", "serve", f"--port={port}", "--model_name=m",
                               f"--model_base_path={base}", "--file_system_poll_wait_seconds=0", *flags],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        with Client(f"localhost:{port}", "m", timeout=120) as client:
            client.wait_until_available(timeout=180)
            client.predict([black_png(64)])
        idle = peak_mb(server.pid)
        message = request(kind)
        start = time.perf_counter()
        codes = [None] * concurrent

        def call(index: int) -> None:
            with grpc.insecure_channel(f"localhost:{port}",
                                       options=[("grpc.max_send_message_length", 1 << 30)]) as channel:
                try:
                    prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(message, timeout=300)
                    codes[index] = "OK"
                except grpc.RpcError as error:
                    codes[index] = error.code().name

        threads = [threading.Thread(target=call, args=(i,)) for i in range(concurrent)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        label = kind + (f" x{concurrent}" if concurrent > 1 else "") + ("" if bound else " unbound")
        return {"request": label, "limits": "on" if limits else "off",
                "request_bytes": message.ByteSize(), "code": ",".join(sorted(set(codes))),
                "seconds": round(time.perf_counter() - start, 2),
                "peak_over_idle_mb": round(peak_mb(server.pid) - idle, 1)}
    finally:
        server.terminate()
        server.wait(timeout=60)


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        bases = {}
        for limits in (False, True):
            bases[limits] = os.path.join(directory, f"limits_{limits}")
            import keras

            keras.utils.set_random_seed(0)
            import kcnn
            from pipelines.preprocess import Preprocessing
            from serving.export import export

            model = kcnn.build("lenet5", num_classes=3, input_shape=(32, 32, 3))
            export(model, bases[limits], class_names=["a", "b", "c"], preprocessing=Preprocessing(32, 3),
                   max_image_pixels=4096 * 4096 if limits else UNLIMITED)
        cases = [("png8192", False, 1), ("png8192", True, 1), ("png16384", True, 1), ("declared", False, 1),
                 ("declared", True, 1)]
        cases = [case + (True,) for case in cases]
        cases += [(kind, True, n, True) for kind in ("declared4096", "png4096", "strings") for n in (1, 4)]
        cases += [(kind, True, 4, False) for kind in ("declared4096", "png4096")]  # --max_request_memory_mb off
        if len(sys.argv) > 1:  # a subset: python benchmarks/bench_hostile.py declared4096 png4096
            cases = [case for case in cases if case[0] in sys.argv[1:]]
        for kind, limits, concurrent, bound in cases:
            row = measure(bases[limits], kind, limits, concurrent, bound)
            rows.append(row)
            print(f"{row['request']:23s} limits {row['limits']:3s}: {row['request_bytes']:>8d} B request -> "
                  f"{row['code']:16s} {row['seconds']:6.2f} s, peak RSS +{row['peak_over_idle_mb']:.0f} MB", flush=True)
    print_result({"benchmark": "hostile_requests", "rows": rows})


if __name__ == "__main__":
    main()
