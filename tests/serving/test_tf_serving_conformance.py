"""kcnn serve against TF Serving's published behaviour, through clients kcnn did not write.

Two clients written here from TF Serving's documentation and protos only:
- ``grpc_predict``: builds a PredictRequest by filling the typed fields (``int_val``,
  ``float_val``, ``string_val``) and reads responses only from the typed fields, as TF
  Serving's example clients do (``mnist_client.py`` reads ``outputs['scores'].float_val``,
  ``resnet_client_grpc.py`` takes the argmax of ``float_val``); no TensorFlow helper.
- ``http``: the standard library's http.client, sending the bytes a curl user would.

Each table row names where its expectation comes from:
  [api_rest]    tensorflow/serving g3doc/api_rest.md (the REST API documentation)
  [json_tensor] tensorflow_serving/util/json_tensor.cc (REST JSON <-> tensors)
  [rest_handler] tensorflow_serving/model_servers/http_rest_api_handler.cc (REST routing)
  [predict_util] tensorflow_serving/servables/tensorflow/predict_util.cc (Predict checks, AsProtoField)
  [classifier]  tensorflow_serving/servables/tensorflow/classifier.cc and regressor.cc
  [multi_inference] tensorflow_serving/servables/tensorflow/multi_inference.cc
  [util]        tensorflow_serving/servables/tensorflow/util.cc (Input -> serialized tf.Examples)
  [model_service] tensorflow_serving/model_servers/model_service_impl.cc (HandleReloadConfigRequest)
  [metadata]    tensorflow_serving/model_servers/get_model_metadata_impl.cc
  [status]      tensorflow_serving/model_servers/get_model_status_impl.cc
  [server_core] tensorflow_serving/model_servers/server_core.cc
  [tensor]      tensorflow/core/framework/tensor.cc Tensor::FromProto / TensorShape::IsValid
  [proto3_json] protobuf's JSON mapping (int64 as a string, enums by name), which TF Serving's printer uses
  [rfc9110]     HTTP semantics (RFC 9110 §8.6: Content-Length must be one decimal count)
  [kcnn]        kcnn's own guard where TF Serving has none (said so in the row)
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import any_pb2, text_format
from serving_helpers import exported, images, png
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from toy_models import toy

from serving.config import ModelEntry, model_server_config
from serving.models import Lifecycle
from serving.server import Server

PROMETHEUS = "/monitoring/prometheus/metrics"
# toy's serving_default as C++ DebugString() prints it, which TF Serving's Classify and Regress errors quote.
TOY_SIGNATURE = ('inputs {\n  key: "x"\n  value {\n    name: "serving_default_x:0"\n    dtype: DT_FLOAT\n'
                 '    tensor_shape {\n      dim {\n        size: -1\n      }\n      dim {\n        size: 2\n      }\n'
                 '    }\n  }\n}\noutputs {\n  key: "y"\n  value {\n    name: "PartitionedCall_2:0"\n'
                 '    dtype: DT_FLOAT\n    tensor_shape {\n      dim {\n        size: -1\n      }\n      dim {\n'
                 '        size: 2\n      }\n    }\n  }\n}\nmethod_name: "tensorflow/serving/predict"\n')
MODELS = ("toy", "shapes", "examples")


@pytest.fixture(scope="module")
def model_root(tmp_path_factory):
    """toy, shapes and examples (below), written once for this module's servers."""
    root = tmp_path_factory.mktemp("conformance")
    toy(str(root / "toy"))
    exported(str(root / "shapes"), seed=1)
    examples(str(root / "examples"))
    return root


@pytest.fixture(scope="module")
def server(model_root):
    models = [ModelEntry(name, str(model_root / name)) for name in MODELS]
    with Server(models, port=0, rest_api_port=0, poll_seconds=0, prometheus_path=PROMETHEUS,
                max_elements=1_000_000) as running:
        yield running


# ---------------------------------------------------------------------- the two clients
def typed_tensor(values, dtype: int, shape) -> tensor_pb2.TensorProto:
    """A TensorProto with its values in the typed field, as a client without TensorFlow builds it."""
    proto = tensor_pb2.TensorProto(dtype=dtype)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    field = {types_pb2.DT_FLOAT: "float_val", types_pb2.DT_INT32: "int_val", types_pb2.DT_UINT8: "int_val",
             types_pb2.DT_INT64: "int64_val", types_pb2.DT_STRING: "string_val"}[dtype]
    getattr(proto, field).extend(values)
    return proto


def grpc_call(server, method: str, request, stub_class=prediction_service_pb2_grpc.PredictionServiceStub):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        return getattr(stub_class(channel), method)(request, timeout=20)


def grpc_error(server, method: str, request, stub_class=prediction_service_pb2_grpc.PredictionServiceStub):
    with pytest.raises(grpc.RpcError) as info:
        grpc_call(server, method, request, stub_class)
    return info.value.code(), info.value.details()


def predict_request(model="toy", signature="", **inputs) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    for name, proto in inputs.items():
        request.inputs[name].CopyFrom(proto)
    return request


def rest(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """One request with http.client; returns (status, parsed JSON body or raw text)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=20)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        headers = dict(headers or {})
        if body is not None and "Content-Length" not in headers:
            headers["Content-Length"] = str(len(body))
        for name, value in headers.items():
            for one in value if isinstance(value, list) else [value]:
                connection.putheader(name, one)
        connection.endheaders(body)
        response = connection.getresponse()
        text = response.read().decode("utf-8")
        try:
            return response.status, json.loads(text)
        except json.JSONDecodeError:
            return response.status, text
    finally:
        connection.close()


def post(server, path: str, document) -> tuple:
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    return rest(server, "POST", path, body)


# ---------------------------------------------------------------------- gRPC: typed fields
def test_predict_answers_in_typed_fields_a_minimal_client_can_read(server):
    # [predict_util] RunPredict serializes with kAsProtoField by default: float_val, not tensor_content.
    response = grpc_call(server, "Predict", predict_request(x=typed_tensor([1.0, 2.5, -3.0, 0.25],
                                                                            types_pb2.DT_FLOAT, [2, 2])))
    y = response.outputs["y"]
    assert y.tensor_content == b"" and list(y.float_val) == [2.0, 5.0, -6.0, 0.5]
    assert [d.size for d in y.tensor_shape.dim] == [2, 2] and y.dtype == types_pb2.DT_FLOAT
    assert (response.model_spec.name, response.model_spec.version.value) == ("toy", 1)
    assert response.model_spec.signature_name == "serving_default"
    ints = grpc_call(server, "Predict", predict_request(signature="ints", n=typed_tensor([3, -4], types_pb2.DT_INT32,
                                                                                         [2])))
    assert list(ints.outputs["twice"].int_val) == [6, -8] and ints.outputs["twice"].tensor_content == b""


def test_an_image_client_in_the_style_of_resnet_client_grpc_gets_an_argmax(server):
    # resnet_client_grpc.py / mnist_client.py read outputs[...].float_val; labels travel in string_val.
    picture = images(1, seed=3)[0]
    request = predict_request("shapes", images=typed_tensor(picture.ravel().tolist(), types_pb2.DT_UINT8,
                                                            [1, 32, 32, 3]))
    outputs = grpc_call(server, "Predict", request).outputs
    probabilities = list(outputs["probabilities"].float_val)
    assert len(probabilities) == 3 and abs(sum(probabilities) - 1) < 1e-5
    best = int(np.argmax(probabilities))
    assert outputs["classes"].int_val[0] == best
    assert outputs["labels"].string_val[0] == [b"circle", b"square", b"triangle"][best]
    by_bytes = grpc_call(server, "Predict", predict_request("shapes", "predict_image_bytes", image_bytes=typed_tensor(
        [png(picture)], types_pb2.DT_STRING, [1])))
    assert list(by_bytes.outputs["probabilities"].float_val) == pytest.approx(probabilities, abs=1e-6)


def _shape(proto, dims, unknown_rank=False):
    proto.tensor_shape.Clear()
    proto.tensor_shape.unknown_rank = unknown_rank
    for size in dims:
        proto.tensor_shape.dim.add(size=size)
    return proto


GRPC_REJECTIONS = [
    # (name, request factory, method, code, exact details or a prefix ending in "...", source)
    ("negative dims with matching content",
     lambda: predict_request(x=_shape(typed_tensor([1.0, 2.0], types_pb2.DT_FLOAT, []), [-1, -2])), "Predict",
     grpc.StatusCode.INVALID_ARGUMENT, "tensor parsing error: x", "[tensor] dims must be >= 0"),
    ("unknown_rank with dims",
     lambda: predict_request(x=_shape(typed_tensor([1.0, 2.0], types_pb2.DT_FLOAT, []), [1, 2], True)), "Predict",
     grpc.StatusCode.INVALID_ARGUMENT, "tensor parsing error: x", "[tensor] unknown_rank excludes dims"),
    ("a declared size over the limit, no values sent",
     lambda: predict_request(x=_shape(tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT), [1 << 40, 2])), "Predict",
     grpc.StatusCode.INVALID_ARGUMENT, "tensor parsing error: x (it declares more than 1000000 elements...",
     "[kcnn] refused before allocating; TF Serving would try to allocate 8 TB"),
    ("tensor_content shorter than the shape",
     lambda: predict_request(x=_shape(tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=b"\0" * 12),
                                      [2, 2])), "Predict",
     grpc.StatusCode.INVALID_ARGUMENT, "tensor parsing error: x", "[tensor] content size must match the shape"),
    ("duplicate output filter",
     lambda: (lambda r: (r.output_filter.extend(["y", "y"]), r)[1])(
         predict_request(x=typed_tensor([1.0, 2.0], types_pb2.DT_FLOAT, [1, 2]))), "Predict",
     grpc.StatusCode.INVALID_ARGUMENT, "duplicate output tensor alias: y", "[predict_util] PreProcessPrediction"),
    ("unknown output filter",
     lambda: (lambda r: (r.output_filter.append("z"), r)[1])(
         predict_request(x=typed_tensor([1.0, 2.0], types_pb2.DT_FLOAT, [1, 2]))), "Predict",
     grpc.StatusCode.INVALID_ARGUMENT, "output tensor alias not found in signature: z Outputs expected to be in the "
                                       "set {y}.", "[predict_util] PreProcessPrediction"),
    ("an input alias the signature lacks",
     lambda: predict_request(w=typed_tensor([1.0, 2.0], types_pb2.DT_FLOAT, [1, 2])), "Predict",
     grpc.StatusCode.INVALID_ARGUMENT, "input tensor alias not found in signature: w. Inputs expected to be in the "
                                       "set {x}.", "[predict_util] PreProcessPrediction"),
    ("no ModelSpec at all", lambda: predict_pb2.PredictRequest(), "Predict", grpc.StatusCode.INVALID_ARGUMENT,
     "Missing ModelSpec", "[predict_impl] TensorflowPredictor::Predict: !has_model_spec()"),
    ("no ModelSpec in a metadata request",
     lambda: get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"]), "GetModelMetadata",
     grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec", "[metadata] GetModelMetadata: !has_model_spec()"),
    ("no model name", lambda: predict_request(""), "Predict", grpc.StatusCode.INVALID_ARGUMENT,
     "ModelSpec has no name specified.", "[server_core] ServableRequestFromModelSpec"),
    ("an unknown signature", lambda: predict_request(signature="nope"), "Predict",
     grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "nope" not found.', "[predict_util] RunPredict"),
    ("Classify on a predict signature",
     lambda: classification_pb2.ClassificationRequest(model_spec={"name": "toy"}), "Classify",
     grpc.StatusCode.INVALID_ARGUMENT, "No classification inputs found in SignatureDef: " + TOY_SIGNATURE,
     "[classifier] PreProcessClassification: the method_name is checked only under "
     "--enable_signature_method_name_check, so the input key fails"),
    ("Regress on a predict signature",
     lambda: regression_pb2.RegressionRequest(model_spec={"name": "toy"}), "Regress",
     grpc.StatusCode.INVALID_ARGUMENT, "No regression inputs found in SignatureDef: " + TOY_SIGNATURE,
     "[classifier] (regressor.cc) PreProcessRegression, as Classify"),
    ("metadata without a field",
     lambda: get_model_metadata_pb2.GetModelMetadataRequest(model_spec={"name": "toy"}), "GetModelMetadata",
     grpc.StatusCode.INVALID_ARGUMENT, "GetModelMetadataRequest must specify at least one metadata_field",
     "[metadata]"),
    ("a 20 KB model name", lambda: predict_request("m" * 20_000), "Predict", grpc.StatusCode.NOT_FOUND,
     "Servable not found for request: Latest(" + "m" * 128 + "...",
     "[server_core] message; [kcnn] the name is cut so the status fits gRPC's metadata limit"),
]


@pytest.mark.parametrize("name, make, method, code, details, source", GRPC_REJECTIONS,
                         ids=[row[0] for row in GRPC_REJECTIONS])
def test_grpc_rejections_are_tf_servings(server, name, make, method, code, details, source):
    got_code, got_details = grpc_error(server, method, make())
    assert got_code == code, source
    if details.endswith("..."):
        assert got_details.startswith(details[:-3]) and len(got_details) < 400, source
    else:
        assert got_details == details, source


def test_status_is_newest_first_and_metadata_lists_the_init_op(server):
    status = grpc_call(server, "GetModelStatus", get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "toy"}),
                       model_service_pb2_grpc.ModelServiceStub)
    assert [(s.version, s.state) for s in status.model_version_status] == [(1, 30)]  # 30: AVAILABLE [status]
    request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec={"name": "toy"},
                                                             metadata_field=["signature_def"])
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    grpc_call(server, "GetModelMetadata", request).metadata["signature_def"].Unpack(signature_map)
    assert set(signature_map.signature_def) == {"serving_default", "ints", "pair", "__saved_model_init_op"}


def test_grpc_server_reflection_lists_tf_servings_services(server):
    # TF Serving's server.cc registers grpc::reflection; grpcurl's `list` asks ListServices.
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        (answer,) = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                   timeout=20))
        names = {s.name for s in answer.list_services_response.service}
        assert {"tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"} <= names
        (described,) = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="tensorflow.serving.PredictionService")]), timeout=20))
        assert described.file_descriptor_response.file_descriptor_proto  # grpcurl can describe and call it


# ---------------------------------------------------------------------- REST: the table
STATUS_OK = {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                       "status": {"error_code": "OK", "error_message": ""}}]}
REST_ROWS = [
    # (name, method, path, body (None: no body), status, the JSON body or an "error:" prefix ending in "...", source)
    ("status", "GET", "/v1/models/toy", None, 200, STATUS_OK, "[api_rest] Model status API; [proto3_json]"),
    ("status of a version", "GET", "/v1/models/toy/versions/1", None, 200, STATUS_OK, "[api_rest]"),
    ("status by a label: the label is ignored", "GET", "/v1/models/toy/labels/anything", None, 200, STATUS_OK,
     "[status] GetModelStatusImpl reads only has_version()"),
    ("paths are case-insensitive", "GET", "/V1/Models/toy", None, 200, STATUS_OK, "[rest_handler] (?i) patterns"),
    ("paths are URL-decoded", "GET", "/v1/models/t%6Fy", None, 200, STATUS_OK, "[rest_handler] decodes the URI"),
    ("unknown model", "GET", "/v1/models/nope", None, 404, {"error": "Could not find any versions of model nope"},
     "[status]"),
    ("no model name", "GET", "/v1/models", None, 400, {"error": "Missing model name in request."}, "[rest_handler]"),
    ("version over int64", "GET", "/v1/models/toy/versions/99999999999999999999", None, 400,
     {"error": "Failed to convert version: 99999999999999999999 to numeric."}, "[rest_handler]"),
    ("unknown verb", "POST", "/v1/models/toy:explain", b"{}", 400,
     {"error": "Malformed request: POST /v1/models/toy:explain"}, "[rest_handler]"),
    ("PUT", "PUT", "/v1/models/toy", b"{}", 400, {"error": "Malformed request: PUT /v1/models/toy"}, "[rest_handler]"),
    ("row format, one output is unnamed", "POST", "/v1/models/toy:predict", {"instances": [[1.0, 2.0], [0.5, -1]]},
     200, {"predictions": [[2.0, 4.0], [1.0, -2.0]]}, "[api_rest] Response format (row); [json_tensor]"),
    ("columnar format, one output is unnamed", "POST", "/v1/models/toy:predict", {"inputs": [[1.0, 2.0]]}, 200,
     {"outputs": [[2.0, 4.0]]}, "[api_rest] Response format (columnar)"),
    ("float32 written as its shortest decimal", "POST", "/v1/models/toy:predict", {"inputs": [[0.1, 1e-5]]}, 200,
     {"outputs": [[0.2, 2e-05]]}, "[json_tensor] WriteDecimal"),
    ("NaN and Infinity", "POST", "/v1/models/toy:predict", b'{"instances": [[NaN, -Infinity]]}', 200,
     "NaN-Infinity", "[api_rest] 'NaN' and 'Infinity' are accepted and returned"),
    ("integers for an int32 input", "POST", "/v1/models/toy:predict", {"signature_name": "ints", "instances": [3, 4]},
     200, {"predictions": [6, 8]}, "[json_tensor]"),
    ("a decimal for an int32 input", "POST", "/v1/models/toy:predict",
     {"signature_name": "ints", "instances": [0.5]}, 400,
     {"error": "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: 0.5 Type: "
               "Number is not of expected type: int32"}, "[json_tensor] AddValueToTensor: IsInt()"),
    ("true for an int32 input", "POST", "/v1/models/toy:predict", {"signature_name": "ints", "inputs": [True]}, 400,
     {"error": "JSON Value: true Type: True is not of expected type: int32"}, "[json_tensor]"),
    ("a string for an int32 input", "POST", "/v1/models/toy:predict", {"signature_name": "ints", "inputs": ["7"]},
     400, {"error": 'JSON Value: "7" Type: String is not of expected type: int32'}, "[json_tensor]"),
    ("a string for a float input", "POST", "/v1/models/toy:predict", {"inputs": [["1.5", 1.0]]}, 400,
     {"error": 'JSON Value: "1.5" Type: String is not of expected type: float'}, "[json_tensor]"),
    ("an integer a float32 cannot hold", "POST", "/v1/models/toy:predict", {"inputs": [[16777217, 1]]}, 400,
     {"error": "Cannot convert JSON value: 16777217 to float without loss of precision."},
     "[json_tensor] IsLosslessDecimal"),
    ("signature_name not a string", "POST", "/v1/models/toy:predict", {"signature_name": 5, "instances": [[1, 2]]},
     400, {"error": "JSON Value: {\"signature_name\":5,\"instances\":[[1,2]]} not formatted correctly. "
                    "'signature_name' key must be a string value."}, "[json_tensor] FormatSignatureError"),
    ("both instances and inputs", "POST", "/v1/models/toy:predict", {"instances": [[1, 2]], "inputs": [[1, 2]]}, 400,
     "error:JSON Value: {\"instances\":[[1,2]],\"inputs\":[[1,2]]} Not formatted correctly expecting only one of...",
     "[json_tensor]"),
    ("neither instances nor inputs", "POST", "/v1/models/toy:predict", {"signature_name": ""}, 400,
     {"error": "Missing 'inputs' or 'instances' key"}, "[json_tensor]"),
    ("an empty body", "POST", "/v1/models/toy:predict", b"", 400,
     {"error": "JSON Parse error: The document is empty"}, "[json_tensor] ParseJson"),
    ("not JSON", "POST", "/v1/models/toy:predict", b"{instances", 400, "error:JSON Parse error: ...",
     "[json_tensor] ParseJson"),
    ("invalid UTF-8", "POST", "/v1/models/toy:predict", b'{"instances": ["\xff"]}', 400,
     "error:JSON Parse error: Invalid encoding in string...", "[json_tensor] ParseJson (UTF-8 stream)"),
    ("deep nesting", "POST", "/v1/models/toy:predict", b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     400, "error:JSON Parse error: ...", "[kcnn] 400, where rapidjson's recursion is unbounded (its TODO)"),
    ("ragged instances", "POST", "/v1/models/toy:predict", {"instances": [[1.0, 2.0], [1.0]]}, 400,
     {"error": "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: 2 "
               "but got: 1"}, "[json_tensor] AddInstanceItem"),
    ("list deeper than the first element", "POST", "/v1/models/toy:predict", {"inputs": [[1.0, [2.0]]]}, 400,
     {"error": "Encountered list at unexpected level: 2 expected < 2"}, "[json_tensor] FillTensorProto"),
    ("named row inputs; _bytes outputs in b64", "POST", "/v1/models/toy:predict",
     {"signature_name": "pair", "instances": [{"a": 1.5, "b": 2, "s": "hi"}, {"a": 0, "b": -1, "s": {"b64": "AAE="}}]},
     200, {"predictions": [{"sum": 3.5, "tag": "hi", "tag_bytes": {"b64": "aGk="}},
                           {"sum": -1.0, "tag": "\x00\x01", "tag_bytes": {"b64": "AAE="}}]},
     "[json_tensor] MakeRowFormatJsonFromTensors, IsNamedTensorBytes"),
    ("named columnar inputs", "POST", "/v1/models/toy:predict",
     {"signature_name": "pair", "inputs": {"a": [1.0], "b": [2], "s": ["x"]}}, 200,
     {"outputs": {"sum": [3.0], "tag": ["x"], "tag_bytes": [{"b64": "eA=="}]}}, "[api_rest] columnar, several outputs"),
    ("a plain list for several inputs", "POST", "/v1/models/toy:predict", {"signature_name": "pair", "instances": [1]},
     400, {"error": "instances is a plain list, but expecting list of objects as multiple input tensors required as "
                    "per tensorinfo_map"}, "[json_tensor]"),
    ("a missing key in an instance", "POST", "/v1/models/toy:predict",
     {"signature_name": "pair", "instances": [{"a": 1.0, "b": 2}]}, 400,
     {"error": "Failed to process element: 0 of 'instances' list. JSON object: {\"a\":1.0,\"b\":2} must only have "
               "keys: a,b,s"}, "[json_tensor]"),
    ("a missing columnar input", "POST", "/v1/models/toy:predict",
     {"signature_name": "pair", "inputs": {"a": [1.0], "b": [2]}}, 400,
     {"error": "Missing named input: s in 'inputs' object."}, "[json_tensor]"),
    ("bad base64", "POST", "/v1/models/toy:predict",
     {"signature_name": "pair", "inputs": {"a": [1.0], "b": [2], "s": [{"b64": "!!"}]}}, 400,
     {"error": "Unable to base64 decode"}, "[json_tensor] JsonDecodeBase64Object"),
    (":classify on a predict signature", "POST", "/v1/models/toy:classify", {"examples": [{"x": 1.0}]}, 400,
     {"error": "No classification inputs found in SignatureDef: " + TOY_SIGNATURE},
     "[classifier] PreProcessClassification (no method_name check by default)"),
    (":regress on a four-output signature", "POST", "/v1/models/shapes:regress", {"examples": [{"x": 1.0}]}, 400,
     {"error": "Expected one output Tensor."}, "[classifier] (regressor.cc) PreProcessRegression"),
    ("an unknown signature in :predict", "POST", "/v1/models/toy:predict", {"signature_name": "nope",
                                                                             "instances": [[1.0, 2.0]]}, 400,
     {"error": 'Serving signature name: "nope" not found in signature def'}, "[rest_handler] GetInfoMap"),
    ("an unknown model in :predict", "POST", "/v1/models/nope:predict", {"instances": [1]}, 404,
     {"error": "Servable not found for request: Latest(nope)"}, "[server_core]"),
    ("the verb's case matters", "POST", "/v1/models/toy:PREDICT", {"instances": [[1.0, 2.0]]}, 400,
     {"error": "Malformed request: POST /v1/models/toy:PREDICT"},
     "[rest_handler] the (?i) pattern matches, the dispatch compares method == \"predict\""),
    ("a columnar key the signature lacks is left out", "POST", "/v1/models/toy:predict",
     {"inputs": {"x": [[1.0, 2.0]], "extra": [1]}}, 200, {"outputs": [[2.0, 4.0]]},
     "[json_tensor] FillTensorMapFromInputsMap looks up the signature's inputs only (gRPC refuses the alias)"),
]


@pytest.mark.parametrize("name, method, path, body, status, expected, source", REST_ROWS,
                         ids=[row[0] for row in REST_ROWS])
def test_rest_table(server, name, method, path, body, status, expected, source):
    data = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    got_status, got = rest(server, method, path, data)
    assert got_status == status, (source, got)
    if expected == "NaN-Infinity":
        assert np.isnan(got["predictions"][0][0]) and got["predictions"][0][1] == -np.inf, source
    elif isinstance(expected, str):
        prefix = expected[len("error:"):-3]
        assert set(got) == {"error"} and got["error"].startswith(prefix) and len(got["error"]) < 400, (source, got)
    else:
        assert got == expected, source


def test_uint8_inputs_take_any_32_bit_integer_and_wrap(server):
    """[json_tensor] FillTensorProto: DT_UINT8 checks only IsInt() and stores int_val; Tensor::FromProto's cast to
    uint8 wraps, so 300 is read as 44 and -1 as 255; a number beyond 32 bits is a type error."""
    base = images(1)[0].astype(np.int64)
    wrapped = base.copy()
    wrapped[0, 0] = [300, -1, 256 + 7]  # 44, 255, 7
    expected = base.copy()
    expected[0, 0] = [44, 255, 7]
    assert post(server, "/v1/models/shapes:predict", {"instances": [wrapped.tolist()]}) == \
        post(server, "/v1/models/shapes:predict", {"instances": [expected.tolist()]})
    beyond = base.copy()
    beyond[0, 0, 0] = 1 << 31
    status, body = post(server, "/v1/models/shapes:predict", {"instances": [beyond.tolist()]})
    assert status == 400 and body["error"].endswith("JSON Value: 2147483648 Type: Number is not of expected type: "
                                                    "uint8"), body


def test_a_request_over_64_mib_gets_its_own_error(server):
    """TF Serving's gRPC server takes messages up to INT32_MAX bytes (model_servers/server.cc:
    builder.SetMaxMessageSize(tensorflow::kint32max)): a 65 MiB request for an unknown model is NOT_FOUND, as a
    small one is, not RESOURCE_EXHAUSTED."""
    request = predict_request("nope")
    request.inputs["x"].dtype = types_pb2.DT_STRING
    request.inputs["x"].string_val.append(b"\0" * (65 << 20))
    with grpc.insecure_channel(f"127.0.0.1:{server.port}", options=[("grpc.max_send_message_length", -1)]) as channel:
        with pytest.raises(grpc.RpcError) as info:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
    assert (info.value.code(), info.value.details()) == (grpc.StatusCode.NOT_FOUND,
                                                         "Servable not found for request: Latest(nope)")


def test_grpc_status_ignores_a_version_label(server):
    """[status] get_model_status_impl.cc: only has_version() narrows the answer; a version_label (known or not)
    gets every version, as a request without either does."""
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        plain = get_model_status_pb2.GetModelStatusRequest()
        plain.model_spec.name = "toy"
        labelled = get_model_status_pb2.GetModelStatusRequest()
        labelled.model_spec.name = "toy"
        labelled.model_spec.version_label = "no-such-label"
        assert stub.GetModelStatus(labelled, timeout=20) == stub.GetModelStatus(plain, timeout=20)
        assert [v.version for v in stub.GetModelStatus(labelled, timeout=20).model_version_status] == [1]


def test_rest_metadata_is_printed_as_tf_serving_prints_it(server):
    # [api_rest] Model Metadata API: GetModelMetadataResponse as JSON with proto field names, defaults printed
    # [proto3_json]: int64 as strings, enums by name.
    status, body = rest(server, "GET", "/v1/models/toy/versions/1/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": "toy", "signature_name": "", "version": "1"}
    definitions = body["metadata"]["signature_def"]["signature_def"]
    assert set(definitions) == {"serving_default", "ints", "pair", "__saved_model_init_op"}
    x = definitions["serving_default"]["inputs"]["x"]
    assert x["dtype"] == "DT_FLOAT" and x["name"].startswith("serving_default_x")
    assert x["tensor_shape"] == {"dim": [{"size": "-1", "name": ""}, {"size": "2", "name": ""}],
                                 "unknown_rank": False}
    assert definitions["serving_default"]["method_name"] == "tensorflow/serving/predict"


def test_image_bytes_travel_as_b64_objects(server):
    # [api_rest] "Encoding binary values": {"b64": ...} for an input whose name ends in _bytes.
    picture = png(images(1, seed=4)[0])
    status, body = post(server, "/v1/models/shapes:predict", {"signature_name": "predict_image_bytes", "instances": [
        {"b64": base64.b64encode(picture).decode()}]})
    assert status == 200
    (row,) = body["predictions"]
    assert set(row) == {"classes", "labels", "probabilities", "scores"} and row["labels"][0] in ("circle", "square",
                                                                                                 "triangle")


@pytest.mark.parametrize("headers, status, error", [
    ({"Content-Length": ["2", "2"]}, 400, "Malformed request: more than one Content-Length header"),
    ({"Content-Length": "abc"}, 400, "Malformed request: Content-Length is not a byte count"),
    ({"Content-Length": "-1"}, 400, "Malformed request: Content-Length is not a byte count"),
    ({"Content-Length": str(1 << 40)}, 413, f"request body of {1 << 40} bytes is over the 67108864 byte limit"),
])
def test_content_length_is_checked(server, headers, status, error):
    # [rfc9110] §8.6; [kcnn] the body-size limit.
    assert rest(server, "POST", "/v1/models/toy:predict", b"{}", headers) == (status, {"error": error})


@pytest.mark.parametrize("method, path", [("GET", "/v2/x"), ("GET", "/healthz"), ("POST", "/v1"),
                                          ("GET", "/monitoring/other"), ("PUT", "/")])
def test_paths_outside_v1_get_libevents_404(server, method, path):
    """Only "(?i)/v1/.*" reaches TF Serving's REST handler (model_servers/http_server.cc, RestApiRequestDispatcher:
    HttpRestApiHandler::kPathRegex); EvHTTPServer::DispatchEvRequest answers the rest with
    evhttp_send_error(req, HTTP_NOTFOUND, nullptr) (util/net_http/server/internal/evhttp_server.cc): libevent's
    HTML error page, and the connection closed."""
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=20)
    try:
        connection.request(method, path, body=b"{}" if method != "GET" else None)
        response = connection.getresponse()
        body = response.read()
        assert response.status == 404 and response.reason == "Not Found"
        assert body == (b"<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n<H1>Not Found</H1>\n"
                        b"</BODY></HTML>\n")
        assert response.getheader("Connection") == "close"
    finally:
        connection.close()
    assert rest(server, "GET", "/v1/models/toy")[0] == 200  # and the server goes on serving


def test_a_garbage_request_line_gets_a_status_line(server):
    """A one-word request line parses as HTTP/0.9 in Python's http.server, which writes bare bodies; libevent (TF
    Serving's HTTP server) answers a request line it cannot parse with "400 Bad Request" and a status line."""
    import socket

    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=20) as raw:
        raw.sendall(b"GARBAGE\r\n\r\n")
        reply = b""
        while chunk := raw.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 400 ") or reply.startswith(b"HTTP/1.0 400 "), reply[:80]
    assert rest(server, "GET", "/v1/models/toy")[0] == 200


def test_prometheus_path_answers_every_method_as_text_plain(server):
    """TF Serving registers the monitoring handler on the exact path (http_server.cc: RegisterRequestHandler with
    the configured path) and writes its page with Content-Type text/plain, whatever the method."""
    for method in ("GET", "POST"):
        connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=20)
        try:
            connection.request(method, PROMETHEUS, body=b"" if method == "POST" else None)
            response = connection.getresponse()
            text = response.read().decode()
            assert response.status == 200 and response.getheader("Content-Type") == "text/plain"
            assert ":tensorflow:serving:request_count" in text
        finally:
            connection.close()


def metric_values(server) -> dict:
    """The Prometheus page as {series with labels: value}."""
    status, text = rest(server, "GET", PROMETHEUS)
    assert status == 200
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def test_prometheus_endpoint_meters_as_tf_serving(server):
    """Names and labels as TF Serving's: prediction_service_impl.cc counts gRPC Predict/Classify/Regress in
    request_count whatever the outcome and records request_latency (API "Predict"...) only under status.ok();
    GetModelMetadata and GetModelStatus are metered nowhere. The REST server (http_server.cc) records the latency
    of successful requests under the URL's verb, and API "" for the GETs; no model_version_state family."""
    latency = ':tensorflow:serving:request_latency_count{{model_name="toy",API="{}",entrypoint="{}"}}'
    count = ':tensorflow:serving:request_count{{model_name="toy",status="{}"}}'
    before = metric_values(server)
    post(server, "/v1/models/toy:predict", {"instances": [[1.0, 2.0]]})
    rest(server, "GET", "/v1/models/toy")
    grpc_call(server, "Predict", predict_request(x=typed_tensor([1.0, 2.0], types_pb2.DT_FLOAT, [1, 2])))
    grpc_error(server, "Predict", predict_request())  # no inputs: "input size does not match signature"
    grpc_call(server, "GetModelMetadata", get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=model_pb2.ModelSpec(name="toy"), metadata_field=["signature_def"]))
    after = metric_values(server)

    def grew(series: str) -> float:
        return after.get(series, 0) - before.get(series, 0)

    assert grew(latency.format("predict", "REST")) == 1
    assert grew(latency.format("", "REST")) == 1
    assert grew(latency.format("Predict", "GRPC")) == 1  # the failed Predict is counted, not timed
    assert grew(count.format("INVALID_ARGUMENT")) == 1
    assert not any("GetModelMetadata" in series or 'API="predict",entrypoint="GRPC"' in series for series in after)
    assert not any(series.startswith(":tensorflow:serving:model_version_state") for series in after)
    assert any(series.startswith(':tensorflow:cc:saved_model:load_attempt_count{model_path="') and
               series.endswith('status="success"}') for series in after)


# ---------------------------------------------------------------------- Classify, Regress, MultiInference
CLASSIFY, REGRESS, PREDICT = "tensorflow/serving/classify", "tensorflow/serving/regress", "tensorflow/serving/predict"


class Examples(tf.Module):
    """Signatures shaped as TF Serving's Classify and Regress want them: one string input "inputs" (serialized
    tf.Examples), outputs "classes" and "scores", or "outputs"."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(self, inputs):
        count = tf.shape(inputs)[0]
        return {"classes": tf.fill([count, 2], "a"), "scores": tf.ones([count, 2])}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress(self, inputs):
        return {"outputs": tf.zeros([tf.shape(inputs)[0]])}


def examples(base_path: str) -> None:
    """base_path/1: serving_default (classify with TF2's predict method_name), classify and regress (with the
    method_names a TF1 exporter writes, set in saved_model.pb)."""
    module = Examples()
    path = os.path.join(base_path, "1")
    tf.saved_model.save(module, path, signatures={"serving_default": module.classify, "classify": module.classify,
                                                  "regress": module.regress})
    with open(os.path.join(path, "saved_model.pb"), "rb") as handle:
        saved = saved_model_pb2.SavedModel.FromString(handle.read())
    for key, method in (("classify", CLASSIFY), ("regress", REGRESS)):
        saved.meta_graphs[0].signature_def[key].method_name = method
    with open(os.path.join(path, "saved_model.pb"), "wb") as handle:
        handle.write(saved.SerializeToString())


def with_examples(request, count: int):
    for _ in range(count):
        request.input.example_list.examples.add()
    return request


def classify(model="toy", signature="", count=0):
    return with_examples(classification_pb2.ClassificationRequest(
        model_spec={"name": model, "signature_name": signature}), count)


def regress(model="toy", signature="", count=0):
    return with_examples(regression_pb2.RegressionRequest(model_spec={"name": model, "signature_name": signature}),
                         count)


def multi(*tasks, count=0):
    """A MultiInferenceRequest of (model, signature, method_name) tasks and ``count`` empty tf.Examples."""
    request = inference_pb2.MultiInferenceRequest()
    for model, signature, method in tasks:
        request.tasks.add(model_spec={"name": model, "signature_name": signature}, method_name=method)
    return with_examples(request, count)


KCNN_UNIMPLEMENTED = "kcnn serve does not run ..."
EXAMPLE_API_ROWS = [
    # (name, request factory, method, code, exact details or a prefix ending in "...", source)
    ("Classify, four outputs", lambda: classify("shapes"), "Classify", grpc.StatusCode.INVALID_ARGUMENT,
     "Expected one or two output Tensors, found 4", "[classifier] PreProcessClassification: the output count"),
    ("Classify, three inputs", lambda: classify("toy", "pair"), "Classify", grpc.StatusCode.INVALID_ARGUMENT,
     "Expected one input Tensor.", "[classifier] PreProcessClassification: the input count comes first"),
    ("Classify, the init op's signature", lambda: classify("toy", "__saved_model_init_op"), "Classify",
     grpc.StatusCode.INVALID_ARGUMENT, "Expected one input Tensor.",
     "[classifier] GetClassificationSignatureDef looks among every SignatureDef of the MetaGraph"),
    ("Classify, an unknown signature", lambda: classify("toy", "nope"), "Classify", grpc.StatusCode.INVALID_ARGUMENT,
     "No signature was found with the name: nope", "[classifier] GetClassificationSignatureDef"),
    ("Classify, neither classes nor scores", lambda: classify("examples", "regress"), "Classify",
     grpc.StatusCode.INVALID_ARGUMENT, 'Expected classification signature outputs to contain at least one of '
                                       '"classes" or "scores". Signature was: inputs {\n  key: "inputs"...',
     "[classifier] PreProcessClassification: the output keys"),
    ("Classify, every check passes, no examples", lambda: classify("examples"), "Classify",
     grpc.StatusCode.INVALID_ARGUMENT, "Input is empty.", "[util] InputToSerializedExampleTensor"),
    ("Classify, a TF2 signature passes every check", lambda: classify("examples", count=1), "Classify",
     grpc.StatusCode.UNIMPLEMENTED, KCNN_UNIMPLEMENTED, "[kcnn] kcnn runs predict signatures only"),
    ("Regress, four outputs", lambda: regress("shapes"), "Regress", grpc.StatusCode.INVALID_ARGUMENT,
     "Expected one output Tensor.", "[classifier] (regressor.cc) PreProcessRegression: the output count"),
    ("Regress, three inputs", lambda: regress("toy", "pair"), "Regress", grpc.StatusCode.INVALID_ARGUMENT,
     "Expected one input Tensor.", "[classifier] (regressor.cc) PreProcessRegression: the input count first"),
    ("Regress, two outputs", lambda: regress("examples", "classify"), "Regress", grpc.StatusCode.INVALID_ARGUMENT,
     "Expected one output Tensor.", "[classifier] (regressor.cc) PreProcessRegression"),
    ("Regress, every check passes, no examples", lambda: regress("examples", "regress"), "Regress",
     grpc.StatusCode.INVALID_ARGUMENT, "Input is empty.", "[util] InputToSerializedExampleTensor"),
    ("Regress, every check passes", lambda: regress("examples", "regress", count=2), "Regress",
     grpc.StatusCode.UNIMPLEMENTED, KCNN_UNIMPLEMENTED, "[kcnn] kcnn runs predict signatures only"),
    ("MultiInference, a classify task on a predict signature", lambda: multi(("toy", "", CLASSIFY), count=1),
     "MultiInference", grpc.StatusCode.INVALID_ARGUMENT, "No classification inputs found in SignatureDef: " +
     TOY_SIGNATURE, "[multi_inference] Infer: each task's PreProcessClassification"),
    ("MultiInference, no tasks", lambda: multi(), "MultiInference", grpc.StatusCode.INVALID_ARGUMENT,
     "ModelSpec has no name specified.", "[multi_inference] RunMultiInference asks for the first task's "
                                         "ModelSpec, an empty one here; [server_core]"),
    ("MultiInference, a task without a model name",
     lambda: multi(("examples", "classify", CLASSIFY), ("", "regress", REGRESS)), "MultiInference",
     grpc.StatusCode.INVALID_ARGUMENT, "Found ModelSpec with an empty model name.", "[multi_inference] Infer"),
    ("MultiInference, two models",
     lambda: multi(("examples", "classify", CLASSIFY), ("toy", "regress", REGRESS)), "MultiInference",
     grpc.StatusCode.INVALID_ARGUMENT, "All ModelSpecs in a MultiInferenceRequest must access the same model name.",
     "[multi_inference] Infer"),
    ("MultiInference, one signature twice",
     lambda: multi(("examples", "classify", CLASSIFY), ("examples", "classify", REGRESS)), "MultiInference",
     grpc.StatusCode.INVALID_ARGUMENT, "Duplicate evaluation of signature: classify", "[multi_inference] Infer"),
    ("MultiInference, an unknown signature", lambda: multi(("examples", "nope", CLASSIFY)), "MultiInference",
     grpc.StatusCode.INVALID_ARGUMENT, "Requested signature not found in model graph: nope",
     "[multi_inference] Infer"),
    ("MultiInference, a predict task", lambda: multi(("examples", "", PREDICT)), "MultiInference",
     grpc.StatusCode.UNIMPLEMENTED, "Unsupported signature method_name: tensorflow/serving/predict",
     "[multi_inference] Infer: classify and regress tasks only"),
    ("MultiInference, tasks on different inputs",
     lambda: multi(("examples", "classify", CLASSIFY), ("examples", "regress", REGRESS)), "MultiInference",
     grpc.StatusCode.INVALID_ARGUMENT, "Input tensor must be the same for all Signatures.",
     "[multi_inference] Infer: one input tensor feeds every task"),
    ("MultiInference, every check passes, no examples", lambda: multi(("examples", "", CLASSIFY)), "MultiInference",
     grpc.StatusCode.INVALID_ARGUMENT, "Input is empty.", "[util] InputToSerializedExampleTensor"),
    ("MultiInference, every check passes", lambda: multi(("examples", "", CLASSIFY), count=1), "MultiInference",
     grpc.StatusCode.UNIMPLEMENTED, KCNN_UNIMPLEMENTED, "[kcnn] kcnn runs predict signatures only"),
]
# The same calls under --enable_signature_method_name_check: the method_name is checked first.
METHOD_CHECK_ROWS = [
    ("Classify on a predict signature", lambda: classify("toy"), "Classify", grpc.StatusCode.INVALID_ARGUMENT,
     "Expected classification signature method_name to be tensorflow/serving/classify. Was: "
     "tensorflow/serving/predict", "[classifier] GetClassificationSignatureDef"),
    ("Classify on a TF2 signature that passes the other checks", lambda: classify("examples", count=1), "Classify",
     grpc.StatusCode.INVALID_ARGUMENT, "Expected classification signature method_name to be "
                                       "tensorflow/serving/classify. Was: tensorflow/serving/predict",
     "[classifier] the flag's purpose: TF2 SavedModels have the predict method_name"),
    ("Classify on a classify signature", lambda: classify("examples", "classify", count=1), "Classify",
     grpc.StatusCode.UNIMPLEMENTED, KCNN_UNIMPLEMENTED, "[classifier] every check passes; [kcnn]"),
    ("Classify, three inputs", lambda: classify("toy", "pair"), "Classify", grpc.StatusCode.INVALID_ARGUMENT,
     "Expected classification signature method_name to be tensorflow/serving/classify. Was: "
     "tensorflow/serving/predict", "[classifier] the method_name before the counts"),
    ("Regress on a predict signature", lambda: regress("toy"), "Regress", grpc.StatusCode.INVALID_ARGUMENT,
     "Expected regression signature method_name to be tensorflow/serving/regress. Was: tensorflow/serving/predict",
     "[classifier] (regressor.cc) GetRegressionSignatureDef"),
    ("Regress on a classify signature", lambda: regress("examples", "classify"), "Regress",
     grpc.StatusCode.INVALID_ARGUMENT, "Expected regression signature method_name to be tensorflow/serving/regress. "
                                       "Was: tensorflow/serving/classify", "[classifier] (regressor.cc)"),
    ("Regress on a regress signature", lambda: regress("examples", "regress", count=1), "Regress",
     grpc.StatusCode.UNIMPLEMENTED, KCNN_UNIMPLEMENTED, "[classifier] (regressor.cc) every check passes; [kcnn]"),
    ("MultiInference, a classify task on a TF2 signature", lambda: multi(("examples", "", CLASSIFY), count=1),
     "MultiInference", grpc.StatusCode.INVALID_ARGUMENT, "Expected classification signature method_name to be "
                                                         "tensorflow/serving/classify. Was: tensorflow/serving/predict",
     "[multi_inference] PreProcessClassification checks the method_name under the flag"),
]


def assert_rejected(server, make, method, code, details, source):
    got_code, got_details = grpc_error(server, method, make())
    assert got_code == code, (source, got_details)
    if details.endswith("..."):
        assert got_details.startswith(details[:-3]), (source, got_details)
    else:
        assert got_details == details, source


@pytest.mark.parametrize("name, make, method, code, details, source", EXAMPLE_API_ROWS,
                         ids=[row[0] for row in EXAMPLE_API_ROWS])
def test_classify_regress_and_multi_inference_check_as_tf_serving(server, name, make, method, code, details,
                                                                   source):
    """TF Serving's checks with its default --enable_signature_method_name_check=false (model_servers/main.cc),
    in its order: GetClassificationSignatureDef / GetRegressionSignatureDef find the signature and run
    PreProcessClassification / PreProcessRegression (classifier.cc, regressor.cc); MultiInference runs
    TensorFlowMultiInferenceRunner::Infer's per-task checks (multi_inference.cc); then the request's Input must
    hold examples (util.cc). Past every check kcnn answers UNIMPLEMENTED, where TF Serving would run the graph."""
    assert_rejected(server, make, method, code, details, source)


@pytest.fixture(scope="module")
def checked(model_root):
    """toy and examples under --enable_signature_method_name_check."""
    models = [ModelEntry(name, str(model_root / name)) for name in ("toy", "examples")]
    with Server(models, port=0, rest_api_port=0, poll_seconds=0, enable_signature_method_name_check=True) as running:
        yield running


@pytest.mark.parametrize("name, make, method, code, details, source", METHOD_CHECK_ROWS,
                         ids=[row[0] for row in METHOD_CHECK_ROWS])
def test_the_method_name_check_comes_first_when_enabled(checked, name, make, method, code, details, source):
    """--enable_signature_method_name_check (model_servers/main.cc; util.cc SetSignatureMethodNameCheckFeature):
    GetClassificationSignatureDef / GetRegressionSignatureDef and PreProcess... then require the classify or
    regress method_name before any other check (classifier.cc, regressor.cc, multi_inference.cc)."""
    assert_rejected(checked, make, method, code, details, source)


def test_rest_classify_checks_the_method_name_when_enabled(checked):
    """The REST :classify reaches the same GetClassificationSignatureDef (http_rest_api_handler.cc
    ProcessClassifyRequest -> TensorflowClassificationServiceImpl::Classify), so the flag changes its answer too."""
    assert post(checked, "/v1/models/toy:classify", {"examples": [{"x": 1.0}]}) == (400, {
        "error": "Expected classification signature method_name to be tensorflow/serving/classify. Was: "
                 "tensorflow/serving/predict"})


def test_serve_takes_enable_signature_method_name_check(monkeypatch):
    """tensorflow_model_server's --enable_signature_method_name_check (model_servers/main.cc), a boolean flag,
    false by default (server.h Server::Options), reaches the server kcnn serve starts."""
    import argparse

    from serving import cli
    from serving.models import StartupError

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    seen = []

    class Stopped:
        def __init__(self, models, **options):
            seen.append(options["enable_signature_method_name_check"])

        def start(self):
            raise StartupError("not started")

    monkeypatch.setattr("serving.server.Server", Stopped)
    for flag in ([], ["--enable_signature_method_name_check=true"], ["--enable_signature_method_name_check"],
                 ["--enable_signature_method_name_check=false"]):
        args = parser.parse_args(["serve", "--model_base_path=/models/m", *flag])
        assert args.func(args) == 1
    assert seen == [False, True, True, False]


# ---------------------------------------------------------------------- HandleReloadConfigRequest
@pytest.fixture
def reloadable(model_root):
    """toy alone, on a server whose model list the test changes; a failed load is not retried."""
    with Server([ModelEntry("toy", str(model_root / "toy"))], port=0, poll_seconds=0,
                lifecycle=Lifecycle(max_num_load_retries=0)) as running:
        yield running


def reload_request(*models: ModelEntry) -> model_management_pb2.ReloadConfigRequest:
    return model_management_pb2.ReloadConfigRequest(config=model_server_config(list(models)))


def reload(server, request):
    return grpc_call(server, "HandleReloadConfigRequest", request, model_service_pb2_grpc.ModelServiceStub)


def model_status(server, name: str) -> list:
    request = get_model_status_pb2.GetModelStatusRequest(model_spec={"name": name})
    answer = grpc_call(server, "GetModelStatus", request, model_service_pb2_grpc.ModelServiceStub)
    return [(v.version, get_model_status_pb2.ModelVersionStatus.State.Name(v.state)) for v in
            answer.model_version_status]


def regress_zero(model="examples"):
    """Predict on examples' regress signature: one zero per input string."""
    return predict_request(model, "regress", inputs=typed_tensor([b"a", b"b"], types_pb2.DT_STRING, [2]))


def test_reload_serves_an_added_model_and_label_and_unloads_a_removed_one(reloadable, model_root):
    """model_service_impl.cc HandleReloadConfigRequest -> ServerCore::ReloadConfig (server_core.cc): a new model is
    loaded before the call returns (AddModelsViaModelConfigList waits on WaitUntilModelsAvailable); labels are
    replaced (UpdateModelVersionLabelMap); a model left out is torn down, its versions then END (the
    ServableStateMonitor keeps their last state). The response carries ToStatusProto(OK)."""
    toy_entry, examples_entry = (ModelEntry(name, str(model_root / name)) for name in ("toy", "examples"))
    assert grpc_error(reloadable, "Predict", regress_zero()) == (grpc.StatusCode.NOT_FOUND,
                                                                  "Servable not found for request: Latest(examples)")
    answer = reload(reloadable, reload_request(toy_entry, examples_entry))
    assert answer.HasField("status") and (answer.status.error_code, answer.status.error_message) == (0, "")
    assert model_status(reloadable, "examples") == [(1, "AVAILABLE")]
    assert list(grpc_call(reloadable, "Predict", regress_zero()).outputs["outputs"].float_val) == [0.0, 0.0]

    labelled = predict_request(x=typed_tensor([1.0, 2.0], types_pb2.DT_FLOAT, [1, 2]))
    labelled.model_spec.version_label = "stable"
    assert grpc_error(reloadable, "Predict", labelled) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                           "Unrecognized servable version label: stable")
    toy_labelled = ModelEntry("toy", toy_entry.base_path, version_labels={"stable": 1})
    reload(reloadable, reload_request(toy_labelled, examples_entry))
    answer = grpc_call(reloadable, "Predict", labelled)
    assert answer.model_spec.version.value == 1 and list(answer.outputs["y"].float_val) == [2.0, 4.0]

    reload(reloadable, reload_request(toy_labelled))
    assert model_status(reloadable, "examples") == [(1, "END")]
    assert grpc_error(reloadable, "Predict", regress_zero()) == (grpc.StatusCode.NOT_FOUND,
                                                                  "Servable not found for request: Latest(examples)")
    assert grpc_call(reloadable, "Predict", labelled).model_spec.version.value == 1


def _config(root, *models, **changes):
    """A ModelServerConfig of models (name, or (name, base_path)), then ``changes`` applied to the last one."""
    entries = [ModelEntry(m, str(root / m)) if isinstance(m, str) else ModelEntry(*m) for m in models]
    request = reload_request(*entries)
    last = request.config.model_config_list.config[-1]
    for field, value in changes.items():
        if field == "version_labels":
            last.version_labels.update(value)
        else:
            setattr(last, field, value)
    return request


def _broken(root):
    path = root / "broken" / "1"
    path.mkdir(parents=True, exist_ok=True)
    (path / "saved_model.pb").write_bytes(b"not a SavedModel")
    return _config(root, "toy", ("broken", str(root / "broken")))


RELOAD_REJECTIONS = [
    # (name, request factory (the model root), code, exact details or a prefix ending in "...", source)
    ("an empty ModelServerConfig", lambda root: model_management_pb2.ReloadConfigRequest(),
     grpc.StatusCode.INVALID_ARGUMENT, "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
                                       "ModelConfigList is currently supported",
     "[model_service] HandleReloadConfigRequest: only kModelConfigList goes on"),
    ("a custom_model_config", lambda root: model_management_pb2.ReloadConfigRequest(
        config={"custom_model_config": any_pb2.Any(type_url="type.googleapis.com/x.Config")}),
     grpc.StatusCode.INVALID_ARGUMENT, "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
                                       "ModelConfigList is currently supported", "[model_service]"),
    ("a model listed twice", lambda root: _config(root, "toy", "toy"), grpc.StatusCode.INVALID_ARGUMENT,
     "Illegal to list model toy multiple times in config list", "[server_core] ValidateModelConfigList"),
    ("a relative base path", lambda root: _config(root, "toy", ("examples", "models/examples")),
     grpc.StatusCode.INVALID_ARGUMENT, "Expected model examples to have an absolute path or URI; got "
                                       "base_path()=models/examples", "[server_core] ValidateModelConfigList"),
    ("a model without a platform", lambda root: _config(root, "toy", "examples", model_platform=""),
     grpc.StatusCode.INVALID_ARGUMENT, "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
                                       "ModelServerConfig::model_platform.", "[server_core] GetPlatform"),
    ("both model_type and model_platform", lambda root: _config(root, "toy", "examples", model_type=1),
     grpc.StatusCode.INVALID_ARGUMENT, "Illegal setting both ModelServerConfig::model_type (deprecated) and "
                                       "ModelServerConfig::model_platform.", "[server_core] GetPlatform"),
    ("a served model changing platform", lambda root: _config(root, "toy", model_platform="other"),
     grpc.StatusCode.INVALID_ARGUMENT, "Illegal to change a model's platform. For model toy platform was tensorflow "
                                       "and new platform requested is other",
     "[server_core] ValidateNoModelsChangePlatforms"),
    ("an unsupported platform", lambda root: _config(root, "toy", "examples", model_platform="other"),
     grpc.StatusCode.INVALID_ARGUMENT, "Model examples requests unsupported platform other",
     "[server_core] CreateStoragePathRoutes"),
    ("a label on a version not loaded", lambda root: _config(root, "toy", version_labels={"canary": 2}),
     grpc.StatusCode.FAILED_PRECONDITION, "Request to assign label to version 2 of model toy, which is not "
                                          "currently available for inference",
     "[server_core] UpdateModelVersionLabelMap"),
    ("a label on a model the same reload adds",
     lambda root: _config(root, "toy", "examples", version_labels={"stable": 1}), grpc.StatusCode.FAILED_PRECONDITION,
     "Request to assign label to version 1 of model examples, which is not currently available for inference",
     "[server_core] ReloadConfig checks labels before AddModelsViaModelConfigList loads"),
    ("a model that fails to load", _broken, grpc.StatusCode.UNKNOWN,
     "1 model(s) did not become available: {{{name: broken version: 1} due to error: ...",
     "[server_core] WaitUntilModelsAvailable"),
]


@pytest.mark.parametrize("name, make, code, details, source", RELOAD_REJECTIONS,
                         ids=[row[0] for row in RELOAD_REJECTIONS])
def test_bad_reloads_get_tf_servings_codes_and_the_server_keeps_serving(reloadable, model_root, name, make, code,
                                                                         details, source):
    """HandleReloadConfigRequest refuses what model_service_impl.cc and ServerCore::ReloadConfig (server_core.cc)
    refuse, with their codes and messages; toy goes on serving."""
    with pytest.raises(grpc.RpcError) as info:
        reload(reloadable, make(model_root))
    assert info.value.code() == code, (source, info.value.details())
    if details.endswith("..."):
        assert info.value.details().startswith(details[:-3]), (source, info.value.details())
    else:
        assert info.value.details() == details, source
    assert model_status(reloadable, "toy") == [(1, "AVAILABLE")]
    answer = grpc_call(reloadable, "Predict", predict_request(x=typed_tensor([1.0, 2.0], types_pb2.DT_FLOAT, [1, 2])))
    assert list(answer.outputs["y"].float_val) == [2.0, 4.0]
    assert grpc_error(reloadable, "Predict", regress_zero())[0] == grpc.StatusCode.NOT_FOUND  # examples not added


def test_the_config_file_poll_applies_a_config_as_the_reload_does(tmp_path, model_root, caplog):
    """TF Serving's PollFilesystemAndReloadConfig (model_servers/server.cc) hands the file to the same
    ServerCore::ReloadConfig: an empty file changes nothing ("Taking no action for empty config.", server_core.cc),
    and a label added to a served version becomes resolvable."""
    config = tmp_path / "models.config"

    def write(*entries):
        (tmp_path / "next").write_text(text_format.MessageToString(model_server_config(list(entries))) if entries
                                       else "")
        os.replace(tmp_path / "next", config)

    toy_entry = ModelEntry("toy", str(model_root / "toy"))
    write(toy_entry)
    labelled = predict_request(x=typed_tensor([1.0, 2.0], types_pb2.DT_FLOAT, [1, 2]))
    labelled.model_spec.version_label = "stable"
    caplog.set_level(logging.INFO, logger="serving.models")
    with Server([toy_entry], port=0, poll_seconds=0, model_config_file=str(config),
                config_poll_seconds=0.05) as running:
        write()
        deadline = time.monotonic() + 30
        while "Taking no action for empty config." not in caplog.text:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert model_status(running, "toy") == [(1, "AVAILABLE")]
        write(ModelEntry("toy", toy_entry.base_path, version_labels={"stable": 1}))
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = grpc_call(running, "Predict", labelled)
                break
            except grpc.RpcError as error:  # until the poll has read the label
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and time.monotonic() < deadline
                time.sleep(0.02)
        assert answer.model_spec.version.value == 1
