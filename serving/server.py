"""A local server that speaks TensorFlow Serving's gRPC API (and its REST API), for development and tests.

It implements ``tensorflow.serving.PredictionService`` (Predict, GetModelMetadata;
Classify and Regress answer as TF Serving does for prediction-only signatures;
MultiInference answers UNIMPLEMENTED) and ``tensorflow.serving.ModelService``
(GetModelStatus) with the messages of tensorflow-serving-api, registers gRPC server
reflection as TF Serving does, so a client tested here works unchanged against
``tensorflow_model_server``. Production serving is the real ``tensorflow/serving``
image (see the Dockerfile).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent import futures

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
)

from serving.batching import Batcher
from serving.config import Batching, ModelEntry
from serving.metrics import Metrics
from serving.models import Lifecycle, ModelManager, ServingError, check_arrays, parse_inputs, run_signature, shown
from serving.tensors import DEFAULT_MAX_ELEMENTS, to_typed_proto

log = logging.getLogger(__name__)
DEFAULT_SIGNATURE = "serving_default"
METHOD_NAMES = {"classify": "tensorflow/serving/classify", "regress": "tensorflow/serving/regress"}
SIGNATURE_KINDS = {"classify": "classification", "regress": "regression"}


class Predictor:
    """The request logic both front ends (gRPC and REST) share."""

    def __init__(self, manager: ModelManager, batching: Batching | None = None, *,
                 max_elements: int = DEFAULT_MAX_ELEMENTS, metrics: Metrics | None = None):
        self.manager = manager
        self.batcher = Batcher(batching) if batching else None
        self.max_elements = max_elements
        self.metrics = metrics or Metrics()

    def run(self, servable, signature: str, arrays: dict, output_filter=()) -> dict:
        """Numpy inputs -> the outputs ``output_filter`` asks for (all when empty), after TF Serving's checks."""
        function = servable.signature(signature)
        outputs_known = servable.signature_defs[signature].outputs
        seen = set()
        for alias in output_filter:
            if alias not in outputs_known:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"output tensor alias not found in signature: {shown(alias)} Outputs expected to be "
                                   f"in the set {{{','.join(sorted(outputs_known))}}}.")
            if alias in seen:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"duplicate output tensor alias: {alias}")
            seen.add(alias)
        check_arrays(servable, signature, arrays)
        if self.batcher:
            outputs = self.batcher.run((servable.name, servable.version, signature), function, arrays)
        else:
            outputs = run_signature(function, arrays)
        return {name: outputs[name] for name in (list(output_filter) or sorted(outputs))}

    def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        servable = self.manager.resolve(request.model_spec)
        signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
        servable.signature(signature)
        arrays = parse_inputs(servable, signature, request.inputs, self.max_elements)
        outputs = self.run(servable, signature, arrays, list(request.output_filter))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature
        for name, array in outputs.items():
            response.outputs[name].CopyFrom(to_typed_proto(array))
        return response

    def check_method(self, spec, kind: str) -> None:
        """Classify and Regress: TF Serving's signature checks, which a prediction-only signature fails."""
        servable = self.manager.resolve(spec)
        signature = spec.signature_name or DEFAULT_SIGNATURE
        if signature not in servable.signature_defs:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"No signature was found with the name: {shown(signature)}")
        method = servable.signature_defs[signature].method_name
        if method != METHOD_NAMES[kind]:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Expected {SIGNATURE_KINDS[kind]} signature method_name to be {METHOD_NAMES[kind]}. "
                               f"Was: {method}")
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED, f"{kind} signatures are not served by kcnn serve")

    def metadata(self, request) -> get_model_metadata_pb2.GetModelMetadataResponse:
        fields = list(request.metadata_field)
        if not fields:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               "GetModelMetadataRequest must specify at least one metadata_field")
        for name in fields:
            if name != "signature_def":
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field {shown(name)} is not supported")
        servable = self.manager.resolve(request.model_spec)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, definition in servable.all_signature_defs.items():
            signature_map.signature_def[key].CopyFrom(definition)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(signature_map)
        return response

    def status(self, request) -> get_model_status_pb2.GetModelStatusResponse:
        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        if spec.version_label:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has version_label set, which the model "
                                                                 "status API does not take; give a version")
        response = get_model_status_pb2.GetModelStatusResponse()
        for number, state in sorted(self.manager.status(spec.name, version).items(), reverse=True):  # newest first
            entry = response.model_version_status.add(version=number, state=state.state)
            entry.status.SetInParent()  # TF Serving always sets it: error_code OK when nothing failed
            if state.error:
                entry.status.error_code = grpc.StatusCode.UNKNOWN.value[0]
                entry.status.error_message = state.error
        return response

    def close(self) -> None:
        if self.batcher:
            self.batcher.close()


def _guarded(api: str):
    """ServingError -> its status code, anything unexpected -> INTERNAL; counted in the metrics either way."""

    def wrap(method):
        def handler(self, request, context):
            started = time.perf_counter()
            status = "OK"
            try:
                return method(self, request, context)
            except ServingError as error:
                status = error.code.name
                context.abort(error.code, error.message)
            except Exception as error:  # noqa: BLE001 - a request must never take the server down
                status = "INTERNAL"
                log.exception("unexpected error serving a request")
                context.abort(grpc.StatusCode.INTERNAL, f"{type(error).__name__}")
            finally:
                name = request.model_spec.name if request.HasField("model_spec") else ""
                self.predictor.metrics.request(shown(name, 64), api, "GRPC", status, time.perf_counter() - started)

        handler.__name__ = method.__name__
        return handler

    return wrap


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, predictor: Predictor):
        self.predictor = predictor

    @_guarded("predict")
    def Predict(self, request, context):
        return self.predictor.predict(request)

    @_guarded("GetModelMetadata")
    def GetModelMetadata(self, request, context):
        return self.predictor.metadata(request)

    @_guarded("classify")
    def Classify(self, request, context):
        self.predictor.check_method(request.model_spec, "classify")

    @_guarded("regress")
    def Regress(self, request, context):
        self.predictor.check_method(request.model_spec, "regress")

    def MultiInference(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED,
                      "MultiInference is not supported: kcnn models export prediction signatures only; use Predict")


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, predictor: Predictor):
        self.predictor = predictor

    @_guarded("GetModelStatus")
    def GetModelStatus(self, request, context):
        return self.predictor.status(request)

    def HandleReloadConfigRequest(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED,
                      "HandleReloadConfigRequest is not supported by kcnn's local server; restart it with the new "
                      "--model_config_file")


class Server:
    """gRPC (and optionally REST) front ends over one ModelManager; ``start()`` then ``stop()`` or ``wait()``.

    ``port=0`` and ``rest_api_port=0`` pick free ports (read ``server.port`` and ``server.rest_port``).
    ``model_config_file`` with ``config_poll_seconds > 0`` re-reads the model list that often
    (TF Serving's --model_config_file_poll_wait_seconds); ``prometheus_path`` serves the
    metrics on the REST port.
    """

    def __init__(self, models: list[ModelEntry], *, port: int = 8500, rest_api_port: int | None = None,
                 host: str = "127.0.0.1", batching: Batching | None = None, poll_seconds: float = 1.0,
                 max_workers: int = 16, max_message_mb: int = 64, lifecycle: Lifecycle = Lifecycle(),
                 max_elements: int = DEFAULT_MAX_ELEMENTS, rest_threads: int = 16, rest_timeout_ms: int = 30000,
                 prometheus_path: str | None = None, model_config_file: str | None = None,
                 config_poll_seconds: float = 0.0):
        self.host = host
        self.metrics = Metrics()
        self.manager = ModelManager(models, poll_seconds, lifecycle, self.metrics)
        self.predictor = Predictor(self.manager, batching, max_elements=max_elements, metrics=self.metrics)
        limit = max_message_mb * 1024 * 1024
        self.grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="kcnn-grpc"),
                                options=[("grpc.max_receive_message_length", limit),
                                         ("grpc.max_send_message_length", limit)])
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(self.predictor),
                                                                            self.grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(self.predictor), self.grpc)
        from grpc_reflection.v1alpha import reflection

        reflection.enable_server_reflection((
            prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name,
            model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
            reflection.SERVICE_NAME), self.grpc)
        self.port = self.grpc.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise OSError(f"cannot bind the gRPC port {host}:{port}; is another server using it?")
        self.rest = None
        if rest_api_port is not None:  # None: no REST front end (0 picks a free port)
            from serving.rest import RestServer

            self.rest = RestServer(self.predictor, host, rest_api_port, threads=rest_threads,
                                   timeout_seconds=rest_timeout_ms / 1000, prometheus_path=prometheus_path)
        self.rest_port = self.rest.port if self.rest else None
        self.model_config_file, self.config_poll_seconds = model_config_file, config_poll_seconds
        self._stopped = threading.Event()

    def start(self) -> "Server":
        """Load every model (StartupError if one never becomes available, as TF Serving exits), then serve."""
        try:
            self.manager.start()
        except BaseException:
            self.stop(0)
            raise
        self.grpc.start()
        if self.rest:
            self.rest.start()
        if self.model_config_file and self.config_poll_seconds > 0:
            threading.Thread(target=self._poll_config, name="kcnn-config-poller", daemon=True).start()
        log.info("gRPC on %s:%d%s", self.host, self.port, f", REST on {self.rest_port}" if self.rest else "")
        return self

    def _poll_config(self) -> None:
        from serving.config import models_from_config

        while not self._stopped.wait(self.config_poll_seconds):
            try:
                self.manager.set_models(models_from_config(self.model_config_file))
            except Exception as error:  # noqa: BLE001 - a bad edit keeps the models being served
                log.error("could not re-read %s, keeping the current models: %s", self.model_config_file, error)

    def stop(self, grace: float = 10.0) -> None:
        """Stop accepting requests, let in-flight ones finish (up to ``grace`` seconds), then shut down."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self.rest:
            self.rest.stop()
        self.grpc.stop(grace).wait()
        self.manager.stop()
        self.predictor.close()

    def wait(self) -> None:
        """Serve until SIGTERM or SIGINT, then stop gracefully (in-flight requests finish first)."""
        stopper = threading.Thread(target=self.stop, name="kcnn-stop", daemon=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stopper.start() if not stopper.is_alive() and not self._stopped.is_set()
                          else None)
        self._stopped.wait()
        self.grpc.wait_for_termination()
        if stopper.ident is not None:
            stopper.join()  # the model poller and batch threads are closed before the process exits

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
