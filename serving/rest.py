"""TF Serving's REST API over the same Predictor as the gRPC front end.

``GET /v1/models/NAME[/versions/N|/labels/L]`` (status), ``GET .../metadata``,
``POST .../:predict`` (row ``instances`` or columnar ``inputs``; see serving/json_tensor.py)
and ``POST .../:classify|:regress``. Paths are matched case-insensitively after URL
decoding, anything else is 400 "Malformed request", and every error is a JSON
``{"error": "..."}``, as TF Serving's ``g3doc/api_rest.md`` describes.

As a production front end it is bounded: ``threads`` worker threads, at most
``max_connections`` open connections (more are answered 503 and closed), a socket
read timeout, a body-size limit, strict ``Content-Length`` handling, and error
messages that quote at most a short prefix of anything the client sent.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer

import grpc
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from serving.json_tensor import JsonTensorError, parse_predict, predict_response
from serving.models import ServingError, shown

V1_PREFIX = re.compile(r"/v1/", re.IGNORECASE)  # what reaches TF Serving's REST API handler
# --rest_api_enable_cors_support: the headers TF Serving's AddCORSHeaders adds (model_servers/http_rest_api_util.cc)
# to what its REST API handler answers.
CORS_HEADERS = (("Access-Control-Allow-Origin", "*"), ("Access-Control-Allow-Methods", "POST, GET"),
                ("Access-Control-Allow-Headers", "Content-Type"))
NOT_FOUND_PAGE = (b"<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n<H1>Not Found</H1>\n"
                  b"</BODY></HTML>\n")  # libevent's ERR_FORMAT for HTTP_NOTFOUND with no reason given
GET_ROUTE = re.compile(r"/v1/models(?:/(?P<name>[^/:]+))?(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
                       r"(?P<metadata>/metadata)?", re.IGNORECASE)
POST_ROUTE = re.compile(r"/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
                        r":(?P<verb>classify|regress|predict)", re.IGNORECASE)
HTTP_CODES = {  # gRPC status -> HTTP status, as TF Serving's REST handler maps them
    grpc.StatusCode.INVALID_ARGUMENT: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.FAILED_PRECONDITION: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.OUT_OF_RANGE: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.NOT_FOUND: HTTPStatus.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: HTTPStatus.CONFLICT,
    grpc.StatusCode.PERMISSION_DENIED: HTTPStatus.FORBIDDEN,
    grpc.StatusCode.UNAUTHENTICATED: HTTPStatus.UNAUTHORIZED,
    grpc.StatusCode.UNIMPLEMENTED: HTTPStatus.NOT_IMPLEMENTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: HTTPStatus.TOO_MANY_REQUESTS,
    grpc.StatusCode.UNAVAILABLE: HTTPStatus.SERVICE_UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: HTTPStatus.GATEWAY_TIMEOUT,
}
MAX_BODY = 64 * 1024 * 1024
INT64_MAX = (1 << 63) - 1
PRINT = {"preserving_proto_field_name": True, "always_print_fields_with_no_presence": True}


class HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


DEFAULT_MAX_CONNECTIONS = 1024


class RestServer:
    """An HTTP/1.1 server: a thread per open connection, the work itself on at most ``threads`` at once.

    A connection's thread only reads and writes, so idle keep-alive connections and slow senders hold a
    connection slot (at most ``max_connections``; one more gets 503 at once) but never a worker: a valid
    request beside 64 idle connections is answered as fast as alone. Each connection is closed after
    ``timeout_seconds`` without progress (TF Serving's --rest_api_timeout_in_ms). ``cors`` adds
    TF Serving's CORS headers to what the REST API (the ``/v1/`` paths) answers.
    """

    def __init__(self, predictor, host: str, port: int, *, threads: int = 16, timeout_seconds: float = 30.0,
                 max_connections: int | None = None, max_body: int = MAX_BODY, prometheus_path: str | None = None,
                 cors: bool = False):
        handler = type("Handler", (_Handler,), {"predictor": predictor, "timeout": timeout_seconds,
                                                 "max_body": max_body, "prometheus_path": prometheus_path,
                                                 "cors": cors})
        self.httpd = _ConnectionHTTPServer((host, port), handler, threads, max_connections or DEFAULT_MAX_CONNECTIONS)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="kcnn-rest", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()


class _ConnectionHTTPServer(HTTPServer):
    """A thread per connection up to ``max_connections`` (then 503 at once); ``workers`` bounds the work."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address, handler, threads: int, max_connections: int):
        super().__init__(address, handler)
        self.workers = threading.BoundedSemaphore(threads)
        self.slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            try:
                body = b'{"error": "too many open connections; retry later"}'
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
                                + body)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        threading.Thread(target=self._serve, args=(request, client_address), name="kcnn-rest-connection",
                         daemon=True).start()

    def _serve(self, request, client_address):
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - a broken connection must not reach the server
            pass
        finally:
            self.shutdown_request(request)
            self.slots.release()


class _Handler(BaseHTTPRequestHandler):
    predictor = None
    prometheus_path = None
    cors = False
    max_body = MAX_BODY
    protocol_version = "HTTP/1.1"
    server_version = "kcnn-serve"
    sys_version = ""

    def log_message(self, *args):  # quiet by default; errors go through the JSON body
        pass

    def end_headers(self):
        if self.cors and V1_PREFIX.match(urllib.parse.unquote(getattr(self, "path", "").split("?", 1)[0])):
            for name, value in CORS_HEADERS:
                self.send_header(name, value)
        super().end_headers()

    def _send(self, status: int, data: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _reply(self, status: int, body: dict) -> None:
        self._send(status, json.dumps(body, indent=1).encode())

    def send_error(self, code, message=None, explain=None):
        """The http.server's own rejections (bad request line, unknown method...) as JSON, 400 for 501."""
        status = HTTPStatus.BAD_REQUEST if code == HTTPStatus.NOT_IMPLEMENTED else code
        self.close_connection = True
        # A request line of one word ("GARBAGE") reads as HTTP/0.9, for which http.server writes no status line
        # and no headers; every reply here carries both (libevent answers such a line with a 400 status line).
        self.request_version = "HTTP/1.1"
        try:
            self._reply(status, {"error": f"Malformed request: {message or HTTPStatus(code).phrase}"[:200]})
        except OSError:
            pass

    # ------------------------------------------------------------------ dispatch
    def _handle(self, method: str) -> None:
        started, model, api, status = time.perf_counter(), "", None, "OK"
        try:
            path = urllib.parse.unquote(self.path.split("?", 1)[0], errors="strict")
            if self.prometheus_path and path == self.prometheus_path:
                # TF Serving registers its handler on the exact path for every method and sends text/plain
                # (model_servers/http_server.cc, PrometheusExporter).
                self._drain()
                self._send(HTTPStatus.OK, self.predictor.metrics.render().encode(), "text/plain")
                return
            if not V1_PREFIX.match(path):
                # Only "(?i)/v1/.*" reaches TF Serving's REST handler (http_server.cc's RestApiRequestDispatcher);
                # anything else is libevent's 404 page, sent by evhttp_send_error (evhttp_server.cc), which also
                # closes the connection.
                self._drain()
                self.close_connection = True
                self.send_response(HTTPStatus.NOT_FOUND)
                self.send_header("Content-Type", "text/html; charset=ISO-8859-1")
                self.send_header("Connection", "close")
                self.send_header("Content-Length", str(len(NOT_FOUND_PAGE)))
                self.end_headers()
                self.wfile.write(NOT_FOUND_PAGE)
                return
            route = (GET_ROUTE if method == "GET" else POST_ROUTE).fullmatch(path) if method in ("GET", "POST") \
                else None
            # The path regexes are case-insensitive ("(?i)"), the dispatch on the verb is not: ":PREDICT" matches
            # and then stays "Malformed request" (http_rest_api_handler.cc, ProcessRequest).
            if not route or (method == "POST" and route["verb"] not in ("classify", "regress", "predict")):
                self._drain()
                raise HttpError(HTTPStatus.BAD_REQUEST, f"Malformed request: {method} {shown(self.path, 100)}")
            model = route["name"] or ""
            spec = self._spec(route)
            # Metered as TF Serving's REST server meters (http_server.cc): under the URL's verb for POSTs and
            # API "" for the GETs, whose parse leaves the method empty; the latency only when it succeeded.
            api = "" if method == "GET" else route["verb"]
            if method == "GET":
                self._drain()
                body = self._metadata(spec) if route["metadata"] else self._status(spec)
            else:
                body = self._predict(spec, self._body()) if api == "predict" else self._other(spec, api)
            self._reply(HTTPStatus.OK, body)
        except HttpError as error:
            status = HTTPStatus(error.status).phrase
            self._reply(error.status, {"error": error.message})
        except ServingError as error:
            status = error.code.name
            self._reply(HTTP_CODES.get(error.code, HTTPStatus.INTERNAL_SERVER_ERROR), {"error": error.message})
        except JsonTensorError as error:
            status = "INVALID_ARGUMENT"
            self._reply(HTTPStatus.BAD_REQUEST, {"error": str(error)})
        except (UnicodeDecodeError, ValueError) as error:  # undecodable URL escapes and the like
            status = "INVALID_ARGUMENT"
            self._reply(HTTPStatus.BAD_REQUEST, {"error": f"Malformed request: {type(error).__name__}"})
        except (socket.timeout, ConnectionError):
            self.close_connection = True
            status = "DEADLINE_EXCEEDED"
        except Exception as error:  # noqa: BLE001 - never take the server down, never echo internals
            status = "INTERNAL"
            self._reply(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"Internal error: {type(error).__name__}"})
        finally:
            if api is not None:
                self.predictor.metrics.request(shown(model, 64), api, "REST", status, time.perf_counter() - started)

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")

    def do_DELETE(self):
        self._handle("DELETE")

    def do_PATCH(self):
        self._handle("PATCH")

    def do_OPTIONS(self):
        self._handle("OPTIONS")

    # ------------------------------------------------------------------ request pieces
    def _content_length(self) -> int:
        values = self.headers.get_all("Content-Length") or []
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise HttpError(HTTPStatus.BAD_REQUEST, "Transfer-Encoding bodies are not supported; send Content-Length")
        if len(values) > 1:
            self.close_connection = True
            raise HttpError(HTTPStatus.BAD_REQUEST, "Malformed request: more than one Content-Length header")
        if not values:
            return 0
        text = values[0].strip()
        if not text.isdigit() or len(text) > 19:
            self.close_connection = True
            raise HttpError(HTTPStatus.BAD_REQUEST, "Malformed request: Content-Length is not a byte count")
        length = int(text)
        if length > self.max_body:
            self.close_connection = True
            raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                            f"request body of {length} bytes is over the {self.max_body} byte limit")
        return length

    def _body(self) -> bytes:
        length = self._content_length()
        data = self.rfile.read(length) if length else b""
        if len(data) != length:
            self.close_connection = True
            raise HttpError(HTTPStatus.BAD_REQUEST, "Malformed request: the body is shorter than its Content-Length")
        return data

    def _drain(self) -> None:
        """Read (and drop) a body sent with a request that takes none, so the connection stays in step."""
        self._body()

    def _spec(self, route) -> model_pb2.ModelSpec:
        if not route["name"]:
            raise HttpError(HTTPStatus.BAD_REQUEST, "Missing model name in request.")
        spec = model_pb2.ModelSpec(name=route["name"])
        if route["version"]:
            version = int(route["version"])
            if version > INT64_MAX:
                raise HttpError(HTTPStatus.BAD_REQUEST,
                                f"Failed to convert version: {shown(route['version'], 32)} to numeric.")
            spec.version.value = version
        elif route["label"]:
            spec.version_label = route["label"]
        return spec

    # ------------------------------------------------------------------ APIs
    def _status(self, spec) -> dict:
        response = self.predictor.status(get_model_status_pb2.GetModelStatusRequest(model_spec=spec))
        return json_format.MessageToDict(response, **PRINT)

    def _metadata(self, spec) -> dict:
        request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=spec, metadata_field=["signature_def"])
        response = self.predictor.metadata(request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return {"model_spec": json_format.MessageToDict(response.model_spec, **PRINT),
                "metadata": {"signature_def": json_format.MessageToDict(signature_map, **PRINT)}}

    def _predict(self, spec, body: bytes) -> dict:
        servable = self.predictor.manager.resolve(spec)

        def input_dtypes(signature: str) -> dict:
            name = signature or "serving_default"
            if not servable.has_signature(name):
                # The REST handler looks the signature up itself to read its inputs (http_rest_api_handler.cc
                # GetInfoMap) before the Predict call, with its own message and code.
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f'Serving signature name: "{shown(name)}" not found in signature def')
            return {alias: dtype for alias, (dtype, _) in servable.inputs[name].items()}

        with self.server.workers:  # the body is in: parse, run and answer on one of the bounded workers
            signature, arrays, form = parse_predict(body, input_dtypes, self.predictor.max_elements)
            outputs = self.predictor.run(servable, signature or "serving_default", arrays)
            return predict_response(outputs, form)

    def _other(self, spec, verb: str) -> dict:
        try:
            document = json.loads(self._body().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise HttpError(HTTPStatus.BAD_REQUEST, "JSON Parse error: the body is not a JSON document") from None
        signature = document.get("signature_name", "") if isinstance(document, dict) else ""
        if not isinstance(signature, str):
            raise HttpError(HTTPStatus.BAD_REQUEST, "'signature_name' key must be a string value.")
        spec.signature_name = signature
        self.predictor.check_method(spec, verb)
        return {}
