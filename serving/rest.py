"""TF Serving's REST API over the same Predictor as the gRPC front end.

``GET /v1/models/NAME[/versions/N|/labels/L]`` (status), ``GET .../metadata`` and
``POST .../:predict`` with ``{"signature_name", "instances"}`` (row format) or
``{"inputs"}`` (columnar); binary values travel as ``{"b64": "..."}``.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2, predict_pb2

from serving.models import ServingError

ROUTE = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
                   r"(?P<action>/metadata|:predict)?$")
HTTP_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.FAILED_PRECONDITION: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.NOT_FOUND: HTTPStatus.NOT_FOUND,
    grpc.StatusCode.UNIMPLEMENTED: HTTPStatus.NOT_IMPLEMENTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    grpc.StatusCode.UNAVAILABLE: HTTPStatus.SERVICE_UNAVAILABLE,
}
STATE_NAMES = {number: name for name, number in get_model_status_pb2.ModelVersionStatus.State.items()}
MAX_BODY = 64 * 1024 * 1024


def _decode(value):
    """JSON value -> Python value with ``{"b64": ...}`` turned into bytes."""
    if isinstance(value, dict) and set(value) == {"b64"}:
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (ValueError, TypeError):
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "a 'b64' value is not valid base64") from None
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _tensor(values, dtype: tf.DType, name: str):
    try:
        array = np.array(values, dtype=object if dtype == tf.string else dtype.as_numpy_dtype)
        return tf.make_tensor_proto(array, dtype=dtype)
    except (ValueError, TypeError, OverflowError):
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input '{name}' cannot be read as a {dtype.name} tensor") from None


def _jsonable(array: np.ndarray):
    if array.dtype == object:
        return np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(array).tolist() \
            if array.size else array.tolist()
    return array.tolist()


class RestServer:
    def __init__(self, predictor, host: str, port: int):
        self.predictor = predictor
        handler = type("Handler", (_Handler,), {"predictor": predictor})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="kcnn-rest", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    predictor = None
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet by default; errors go through the JSON body
        pass

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self, method: str):
        match = ROUTE.match(self.path.split("?")[0])
        if not match:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Malformed request: {method} {self.path}")
        spec = model_pb2.ModelSpec(name=match["name"])
        if match["version"]:
            spec.version.value = int(match["version"])
        elif match["label"]:
            spec.version_label = match["label"]
        return spec, match["action"]

    def _handle(self, method: str) -> None:
        try:
            spec, action = self._route(method)
            if method == "GET" and action is None:
                body = self._status(spec)
            elif method == "GET" and action == "/metadata":
                body = self._metadata(spec)
            elif method == "POST" and action == ":predict":
                body = self._predict(spec)
            else:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Malformed request: {method} {self.path}")
            self._reply(HTTPStatus.OK, body)
        except ServingError as error:
            self._reply(HTTP_CODES.get(error.code, HTTPStatus.INTERNAL_SERVER_ERROR), {"error": error.message})
        except Exception as error:  # noqa: BLE001 - never take the server down
            self._reply(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(error).__name__}: {error}"})

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def _status(self, spec) -> dict:
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=spec)
        response = self.predictor.status(request)
        return {"model_version_status": [
            {"version": str(s.version), "state": STATE_NAMES[s.state],
             "status": {"error_code": "OK" if not s.status.error_message else "UNKNOWN",
                        "error_message": s.status.error_message}}
            for s in response.model_version_status]}

    def _metadata(self, spec) -> dict:
        request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=spec, metadata_field=["signature_def"])
        response = self.predictor.metadata(request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return {"model_spec": {"name": response.model_spec.name, "version": str(response.model_spec.version.value),
                               "signature_name": ""},
                "metadata": {"signature_def": json_format.MessageToDict(signature_map)}}

    def _predict(self, spec) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, f"request body of {length} bytes is over the "
                                                                   f"{MAX_BODY} byte limit")
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError as error:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"JSON Parse error: {error}") from None
        if not isinstance(body, dict) or ("instances" in body) == ("inputs" in body):
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               "Missing 'inputs' or 'instances' key: the request body needs exactly one of them")
        signature = body.get("signature_name") or "serving_default"
        spec.signature_name = signature
        servable = self.predictor.manager.resolve(spec)
        servable.signature(signature)
        expected = servable.inputs[signature]
        request = predict_pb2.PredictRequest(model_spec=spec)
        if "instances" in body:
            instances = _decode(body["instances"])
            if not isinstance(instances, list) or not instances:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "'instances' must be a non-empty list")
            if len(expected) == 1 and not isinstance(instances[0], dict):
                columns = {next(iter(expected)): instances}
            else:
                if not all(isinstance(i, dict) for i in instances):
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                       "each instance must be an object of named inputs")
                columns = {name: [i.get(name) for i in instances] for name in instances[0]}
        else:
            inputs = _decode(body["inputs"])
            columns = inputs if isinstance(inputs, dict) else {next(iter(expected)): inputs}
        for name, values in columns.items():
            dtype = expected.get(name, (tf.string, None))[0]
            request.inputs[name].CopyFrom(_tensor(values, dtype, name))
        response = self.predictor.predict(request)
        outputs = {name: _jsonable(tf.make_ndarray(proto)) for name, proto in response.outputs.items()}
        if "instances" in body:
            rows = len(next(iter(outputs.values())))
            return {"predictions": [{name: values[i] for name, values in outputs.items()} for i in range(rows)]}
        return {"outputs": outputs}
