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

import grpc
import numpy as np
import pytest
from serving_helpers import exported, images, png
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from toy_models import toy

from serving.config import ModelEntry
from serving.server import Server

PROMETHEUS = "/monitoring/prometheus/metrics"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("conformance")
    toy(str(root / "toy"))
    exported(str(root / "shapes"), seed=1)
    models = [ModelEntry("toy", str(root / "toy")), ModelEntry("shapes", str(root / "shapes"))]
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
    ("no model name", lambda: predict_request(""), "Predict", grpc.StatusCode.INVALID_ARGUMENT,
     "ModelSpec has no name specified.", "[server_core] ServableRequestFromModelSpec"),
    ("an unknown signature", lambda: predict_request(signature="nope"), "Predict",
     grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "nope" not found.', "[predict_util] RunPredict"),
    ("Classify on a predict signature",
     lambda: classification_pb2.ClassificationRequest(model_spec={"name": "toy"}), "Classify",
     grpc.StatusCode.INVALID_ARGUMENT, "Expected classification signature method_name to be "
                                       "tensorflow/serving/classify. Was: tensorflow/serving/predict", "[classifier]"),
    ("Regress on a predict signature",
     lambda: regression_pb2.RegressionRequest(model_spec={"name": "toy"}), "Regress",
     grpc.StatusCode.INVALID_ARGUMENT, "Expected regression signature method_name to be tensorflow/serving/regress. "
                                       "Was: tensorflow/serving/predict", "[classifier] (regressor.cc)"),
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
     {"error": "Expected classification signature method_name to be tensorflow/serving/classify. Was: "
               "tensorflow/serving/predict"}, "[classifier]"),
    ("an unknown model in :predict", "POST", "/v1/models/nope:predict", {"instances": [1]}, 404,
     {"error": "Servable not found for request: Latest(nope)"}, "[server_core]"),
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


def test_prometheus_endpoint_exposes_tf_servings_metric_names(server):
    post(server, "/v1/models/toy:predict", {"instances": [[1.0, 2.0]]})
    grpc_call(server, "Predict", predict_request(x=typed_tensor([1.0, 2.0], types_pb2.DT_FLOAT, [1, 2])))
    status, text = rest(server, "GET", PROMETHEUS)
    assert status == 200
    assert ':tensorflow:serving:request_count{model_name="toy",status="OK"}' in text
    assert ':tensorflow:serving:request_latency_count{model_name="toy",API="predict",entrypoint="REST"}' in text
    assert ':tensorflow:serving:request_latency_count{model_name="toy",API="predict",entrypoint="GRPC"}' in text
    assert ':tensorflow:cc:saved_model:load_attempt_count{model_path="' in text and 'status="success"} 1' in text
    assert ':tensorflow:serving:model_version_state{model_name="toy",model_version="1"} 30' in text
