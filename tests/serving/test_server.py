"""End to end through real gRPC and HTTP on 127.0.0.1: kcnn's client against kcnn's TF-Serving-compatible server."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from serving_helpers import CLASSES, exported, images, png, served  # noqa: F401 (served is a fixture)
from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_service_pb2_grpc

from serving.client import Client, RestClient, ServingClientError
from serving.config import Batching, ModelEntry
from serving.server import Server


def in_process_top1(loaded, batch):
    return loaded.signatures["serving_default"](images=tf.constant(batch))["classes"].numpy()[:, 0]


def test_predict_with_tensors_and_image_bytes_matches_the_saved_model(served):
    server, loaded, _ = served
    batch = images(5)
    with Client(f"127.0.0.1:{server.port}", "shapes") as client:
        from_arrays = client.predict(batch)
        from_png = client.predict([png(i) for i in batch])
        from_jpeg = client.predict([tf.io.encode_jpeg(i, quality=100).numpy() for i in batch])
    expected = in_process_top1(loaded, batch)
    assert [p.classes[0] for p in from_arrays] == list(expected)
    assert [p.classes[0] for p in from_png] == list(expected)  # PNG is lossless: same pixels, same answer
    assert all(p.labels[0] == CLASSES[p.classes[0]] for p in from_jpeg)
    assert len(from_arrays[0].labels) == 3 and from_arrays[0].probabilities.shape == (3,)
    np.testing.assert_allclose(sum(from_arrays[0].probabilities), 1.0, rtol=1e-5)


def test_metadata_lists_both_signatures_and_status_is_available(served):
    server, _, _ = served
    with Client(f"127.0.0.1:{server.port}", "shapes") as client:
        signatures = client.metadata()
        # TF Serving's metadata lists every SignatureDef of the MetaGraph, the init op's included.
        assert set(signatures) == {"serving_default", "predict_image_bytes", "__saved_model_init_op"}
        assert set(signatures["serving_default"].inputs) == {"images"}
        assert set(signatures["predict_image_bytes"].inputs) == {"image_bytes"}
        for name in ("serving_default", "predict_image_bytes"):
            assert set(signatures[name].outputs) == {"probabilities", "classes", "scores", "labels"}
        assert client.status() == {1: "AVAILABLE"}


def raw_predict(port, request):
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=10)


def request_for(signature="serving_default", name="shapes", **inputs):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(value)
    return request


def error_of(port, request):
    with pytest.raises(grpc.RpcError) as info:
        raw_predict(port, request)
    return info.value.code(), info.value.details()


UINT8 = tf.make_tensor_proto(images(1))


@pytest.mark.parametrize("make, code, details", [
    (lambda: request_for(name="nope", images=UINT8), grpc.StatusCode.NOT_FOUND,
     "Servable not found for request: Latest(nope)"),
    (lambda: request_for(signature="nope", images=UINT8), grpc.StatusCode.FAILED_PRECONDITION,
     'Serving signature key "nope" not found.'),
    # Same count, wrong name: predict_util.cc's PreProcessPrediction checks each alias after the count.
    (lambda: request_for(image_bytes=tf.make_tensor_proto([b"x"])), grpc.StatusCode.INVALID_ARGUMENT,
     "input tensor alias not found in signature: image_bytes. Inputs expected to be in the set {images}."),
    (lambda: request_for(images=UINT8, extra=UINT8), grpc.StatusCode.INVALID_ARGUMENT,
     "input size does not match signature: 2!=1 len({extra,images}) != len({images}). Sent extra: {extra}. "
     "Missing but required: {}."),
    (lambda: request_for(images=tf.make_tensor_proto(images(1).astype(np.float32))),
     grpc.StatusCode.INVALID_ARGUMENT, "Expects arg[0] to be uint8 but float32 is provided"),
    (lambda: request_for(images=tf.make_tensor_proto(images(1)[0])), grpc.StatusCode.INVALID_ARGUMENT,
     "input 'images' must have rank 4, got shape [32, 32, 3]"),
    (lambda: request_for("predict_image_bytes", image_bytes=tf.make_tensor_proto([b"not an image"])),
     grpc.StatusCode.INVALID_ARGUMENT, "Unknown image file format"),
])
def test_bad_requests_get_tf_servings_codes_and_the_server_keeps_serving(served, make, code, details):
    server, loaded, _ = served
    got_code, got_details = error_of(server.port, make())
    assert got_code == code
    assert details in got_details
    good = raw_predict(server.port, request_for(images=UINT8))  # still serving
    assert good.model_spec.version.value == 1


def test_malformed_tensor_and_specific_version_errors(served):
    server, _, _ = served
    broken = tf.make_tensor_proto(images(1))
    broken.tensor_content = broken.tensor_content[:-7]  # bytes missing for the declared shape
    code, details = error_of(server.port, request_for(images=broken))
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "tensor parsing error: images")
    request = request_for(images=UINT8)
    request.model_spec.version.value = 9
    assert error_of(server.port, request) == (grpc.StatusCode.NOT_FOUND,
                                              "Servable not found for request: Specific(shapes, 9)")
    labelled = request_for(images=UINT8)
    labelled.model_spec.version_label = "canary"
    assert error_of(server.port, labelled) == (grpc.StatusCode.INVALID_ARGUMENT,
                                               "Unrecognized servable version label: canary")


def test_classify_on_a_predict_signature_is_invalid_argument_as_in_tf_serving(served):
    """TF Serving's GetClassificationSignatureDef (servables/tensorflow/classifier.cc) checks the method_name only
    under --enable_signature_method_name_check (off by default); otherwise PreProcessClassification counts the
    outputs, and kcnn's serving_default has four."""
    server, _, _ = served
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "shapes"
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Classify(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "Expected one or two output Tensors, found 4"


def test_client_errors_carry_code_message_and_hint(served):
    server, _, _ = served
    with Client(f"127.0.0.1:{server.port}", "nope") as client:
        with pytest.raises(ServingClientError) as info:
            client.predict(images(1))
    error = info.value
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.details == "Servable not found for request: Latest(nope)"
    assert "is the model name 'nope' right" in error.hint


def test_messages_over_the_limit_are_resource_exhausted(tmp_path, served):
    _, _, base = served
    with Server([ModelEntry("shapes", base)], port=0, poll_seconds=0, max_message_mb=1) as small:
        with Client(f"127.0.0.1:{small.port}", "shapes", retries=0) as client:
            with pytest.raises(ServingClientError) as info:
                client.predict(images(1, size=700))  # 1.5 MB of pixels
            assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "send fewer or smaller images" in info.value.hint
            assert client.predict(images(1))[0].labels  # and it keeps serving


def test_sixteen_concurrent_clients_get_correct_answers_without_errors(served):
    server, loaded, _ = served
    batch = images(16, seed=5)
    expected = in_process_top1(loaded, batch)

    def work(i):
        with Client(f"127.0.0.1:{server.port}", "shapes") as client:
            return [client.predict(batch[i:i + 1])[0].classes[0] for _ in range(8)]

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(work, range(16)))
    assert answers == [[expected[i]] * 8 for i in range(16)]


def test_rest_status_metadata_predict_and_errors(served):
    server, loaded, _ = served
    rest = RestClient(f"127.0.0.1:{server.rest_port}", "shapes")
    assert rest.status() == {1: "AVAILABLE"}
    metadata = rest.metadata()
    assert metadata["model_spec"] == {"name": "shapes", "version": "1", "signature_name": ""}
    assert set(metadata["metadata"]["signature_def"]["signature_def"]) >= {"serving_default", "predict_image_bytes"}
    batch = images(3, seed=2)
    predictions = rest.predict([png(i) for i in batch])
    assert [p.classes[0] for p in predictions] == list(in_process_top1(loaded, batch))
    assert predictions[0].labels[0] in CLASSES
    with pytest.raises(ServingClientError) as info:
        RestClient(f"127.0.0.1:{server.rest_port}", "nope").status()
    assert info.value.code == 404 and "Could not find any versions of model nope" in info.value.details


def test_hot_swap_under_load_fails_no_request_and_moves_to_version_2(tmp_path):
    base = str(tmp_path / "swap")
    exported(base, seed=1, version=1)
    batch = images(2, seed=7)
    with Server([ModelEntry("swap", base)], port=0, poll_seconds=0.1) as server:
        versions, failures, stop = [], [], threading.Event()

        def loop():
            with Client(f"127.0.0.1:{server.port}", "swap", retries=0) as client:
                request = client.predict_request(batch)
                while not stop.is_set():
                    try:
                        response = client.prediction.Predict(request, timeout=10)
                        versions.append(response.model_spec.version.value)
                    except grpc.RpcError as error:
                        failures.append(error)

        threads = [threading.Thread(target=loop) for _ in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        exported(base, seed=2)  # version 2, written atomically while requests flow
        deadline = time.time() + 60
        while (not versions or versions[-1] != 2) and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        stop.set()
        for thread in threads:
            thread.join()
        with Client(f"127.0.0.1:{server.port}", "swap") as client:
            status = client.status()
    assert failures == []
    assert versions[0] == 1 and versions[-1] == 2
    first_two = versions.index(2)
    assert set(versions[first_two:]) == {2} or versions[-20:] == [2] * 20  # once moved, it stays on version 2
    assert status == {1: "END", 2: "AVAILABLE"}


def test_batching_gives_the_same_answers_refuses_oversized_batches_and_isolates_bad_requests(served):
    _, loaded, base = served
    batching = Batching(max_batch_size=8, batch_timeout_micros=20000, num_batch_threads=2, max_enqueued_batches=10,
                        allowed_batch_sizes=(4, 8))
    batch = images(12, seed=9)
    expected = in_process_top1(loaded, batch)
    with Server([ModelEntry("shapes", base)], port=0, poll_seconds=0, batching=batching) as server:
        target = f"127.0.0.1:{server.port}"

        def one(i):
            with Client(target, "shapes") as client:
                if i == 3:  # one undecodable image among good requests batched with it
                    with pytest.raises(ServingClientError) as info:
                        client.predict([b"garbage"])
                    return info.value.code
                return client.predict([png(batch[i])])[0].classes[0]

        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(one, range(12)))
        assert answers[3] == grpc.StatusCode.INVALID_ARGUMENT
        batcher = server.predictor.batcher
        assert batcher.batches_run < batcher.requests_run  # requests really were run together
        assert [a for i, a in enumerate(answers) if i != 3] == [e for i, e in enumerate(expected) if i != 3]
        with Client(target, "shapes") as client:
            with pytest.raises(ServingClientError) as info:
                client.predict(images(9))
            assert info.value.details == "Task size 9 is larger than maximum input batch size 8"
            assert [p.classes[0] for p in client.predict(batch[:8])] == list(expected[:8])
