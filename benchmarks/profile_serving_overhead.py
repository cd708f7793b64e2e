"""Where kcnn serve's gRPC overhead over an in-process call goes, step by step, for batch-1 digits Predict.

Times (medians over interleaved rounds, in ms) of each step a Predict takes, measured
one at a time in this process: building the request on the client, parsing and
checking it on the server, the signature call itself, building the response with
typed fields (and, for comparison, with tensor_content as before), serializing it,
and a full gRPC round trip of Predict and of a near-empty call (GetModelStatus: the
transport and thread hand-offs alone).

    python benchmarks/profile_serving_overhead.py      # about 30 s on 2 CPU cores

The last line printed is ``RESULT {json}``.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import get_model_status_pb2, predict_pb2  # noqa: E402

import kcnn  # noqa: E402
from pipelines.preprocess import Preprocessing  # noqa: E402
from serving.client import Client  # noqa: E402
from serving.config import ModelEntry  # noqa: E402
from serving.export import export  # noqa: E402
from serving.models import parse_inputs, run_signature  # noqa: E402
from serving.server import Server  # noqa: E402
from serving.tensors import to_typed_proto  # noqa: E402
from result import print_result  # noqa: E402 - the RESULT line with the wall time


def median_ms(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    work = tempfile.mkdtemp(prefix="kcnn-profile-serving-")
    base = os.path.join(work, "digits")
    model = kcnn.build("resnet18", num_classes=10, head="fully_conv", input_shape=(32, 32, 1))
    export(model, base, class_names=[str(i) for i in range(10)], preprocessing=Preprocessing(image_size=32,
                                                                                              channels=1), version=1)
    image = np.random.default_rng(0).integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)
    with Server([ModelEntry("digits", base)], port=0, poll_seconds=0) as server:
        client = Client(f"127.0.0.1:{server.port}", "digits", retries=0)
        request = client.predict_request(image)
        servable = server.manager.resolve(request.model_spec)
        function = servable.signature("serving_default")
        arrays = parse_inputs(servable, "serving_default", request.inputs, 1 << 28)
        outputs = run_signature(function, arrays)
        tensor = tf.constant(image)
        response = server.predictor.predict(request)
        status_request = get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "digits"})

        def typed_response():
            out = predict_pb2.PredictResponse()
            for name, array in outputs.items():
                out.outputs[name].CopyFrom(to_typed_proto(array))
            return out

        def content_response():
            out = predict_pb2.PredictResponse()
            for name, array in outputs.items():
                out.outputs[name].CopyFrom(tf.make_tensor_proto(array))
            return out

        steps = {
            "client_build_request": lambda: client.predict_request(image),
            "server_parse_and_check": lambda: parse_inputs(servable, "serving_default", request.inputs, 1 << 28),
            "signature_call_numpy_in_out": lambda: run_signature(function, arrays),
            "in_process_signature_call": lambda: function(images=tensor),
            "response_typed_fields": typed_response,
            "response_tensor_content": content_response,
            "response_serialize": lambda: response.SerializeToString(),
            "predictor_predict_no_grpc": lambda: server.predictor.predict(request),
            "grpc_predict_round_trip": lambda: client.prediction.Predict(request, timeout=30),
            "grpc_status_round_trip": lambda: client.models.GetModelStatus(status_request, timeout=30),
        }
        for call in steps.values():
            median_ms(call, 20)
        rounds = {name: [] for name in steps}
        for _ in range(5):
            for name, call in steps.items():
                rounds[name].append(median_ms(call, 60))
        client.close()
    results = {name: round(statistics.median(values), 4) for name, values in rounds.items()}
    for name, value in results.items():
        print(f"{name:32s} {value:8.3f} ms", flush=True)
    summary = {"benchmark": "profile_serving_overhead", "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
               "tensorflow": tf.__version__, "median_ms": results,
               "typed_minus_content_ms": results["response_typed_fields"] - results["response_tensor_content"],
               "grpc_overhead_ms": results["grpc_predict_round_trip"] - results["in_process_signature_call"]}
    print_result(summary, sort_keys=True)


if __name__ == "__main__":
    main()
