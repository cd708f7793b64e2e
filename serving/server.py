"""A local server that speaks TensorFlow Serving's gRPC API (and its REST API), for development and tests.

It implements ``tensorflow.serving.PredictionService`` (Predict, GetModelMetadata;
Classify, Regress and MultiInference answer UNIMPLEMENTED) and
``tensorflow.serving.ModelService`` (GetModelStatus) with the messages of
tensorflow-serving-api, so a client tested here works unchanged against
``tensorflow_model_server``. Production serving is the real ``tensorflow/serving``
image (see the Dockerfile).
"""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.batching import Batcher
from serving.config import Batching, ModelEntry
from serving.models import ModelManager, ServingError, check_inputs, run_signature

log = logging.getLogger(__name__)
DEFAULT_SIGNATURE = "serving_default"
UNIMPLEMENTED_HINT = ("kcnn models export prediction signatures only: use Predict (signature_name "
                      "'serving_default' with input 'images', or 'predict_image_bytes' with input 'image_bytes')")


class Predictor:
    """The request logic both front ends (gRPC and REST) share."""

    def __init__(self, manager: ModelManager, batching: Batching | None = None):
        self.manager = manager
        self.batcher = Batcher(batching) if batching else None

    def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        servable = self.manager.resolve(request.model_spec)
        signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
        function = servable.signature(signature)
        arrays = check_inputs(servable, signature, dict(request.inputs))
        if self.batcher:
            outputs = self.batcher.run((servable.name, servable.version, signature), function, arrays)
        else:
            outputs = run_signature(function, arrays)
        wanted = list(request.output_filter) or sorted(outputs)
        unknown = [name for name in wanted if name not in outputs]
        if unknown:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"output tensor alias not found in signature: {unknown[0]} Outputs expected to be in "
                               f"the set {{{','.join(sorted(outputs))}}}.")
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature
        for name in wanted:
            response.outputs[name].CopyFrom(tf.make_tensor_proto(outputs[name]))
        return response

    def metadata(self, request) -> get_model_metadata_pb2.GetModelMetadataResponse:
        fields = list(request.metadata_field)
        if fields != ["signature_def"]:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Metadata field {fields[0] if fields else '(none)'} is not supported; "
                               "ask for metadata_field 'signature_def'")
        servable = self.manager.resolve(request.model_spec)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, definition in servable.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(definition)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(signature_map)
        return response

    def status(self, request) -> get_model_status_pb2.GetModelStatusResponse:
        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        response = get_model_status_pb2.GetModelStatusResponse()
        for number, state in sorted(self.manager.status(spec.name, version).items()):
            entry = response.model_version_status.add(version=number, state=state.state)
            if state.error:
                entry.status.error_code = grpc.StatusCode.UNKNOWN.value[0]
                entry.status.error_message = state.error
        return response

    def close(self) -> None:
        if self.batcher:
            self.batcher.close()


def _guarded(method):
    """Turn ServingError into its status code, anything unexpected into INTERNAL; the server keeps serving."""

    def handler(self, request, context):
        try:
            return method(self, request, context)
        except ServingError as error:
            context.abort(error.code, error.message)
        except Exception as error:  # noqa: BLE001 - a request must never take the server down
            log.exception("unexpected error serving a request")
            context.abort(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")

    handler.__name__ = method.__name__
    return handler


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, predictor: Predictor):
        self.predictor = predictor

    @_guarded
    def Predict(self, request, context):
        return self.predictor.predict(request)

    @_guarded
    def GetModelMetadata(self, request, context):
        return self.predictor.metadata(request)

    def Classify(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, f"Classify is not supported: {UNIMPLEMENTED_HINT}")

    def Regress(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, f"Regress is not supported: {UNIMPLEMENTED_HINT}")

    def MultiInference(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, f"MultiInference is not supported: {UNIMPLEMENTED_HINT}")


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, predictor: Predictor):
        self.predictor = predictor

    @_guarded
    def GetModelStatus(self, request, context):
        return self.predictor.status(request)

    def HandleReloadConfigRequest(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED,
                      "HandleReloadConfigRequest is not supported by kcnn's local server; restart it with the new "
                      "--model_config_file")


class Server:
    """gRPC (and optionally REST) front ends over one ModelManager; ``start()`` then ``stop()`` or ``wait()``.

    ``port=0`` and ``rest_api_port=0`` pick free ports (read ``server.port`` and ``server.rest_port``).
    """

    def __init__(self, models: list[ModelEntry], *, port: int = 8500, rest_api_port: int | None = None,
                 host: str = "127.0.0.1", batching: Batching | None = None, poll_seconds: float = 1.0,
                 max_workers: int = 16, max_message_mb: int = 64):
        self.host = host
        self.manager = ModelManager(models, poll_seconds)
        self.predictor = Predictor(self.manager, batching)
        limit = max_message_mb * 1024 * 1024
        self.grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="kcnn-grpc"),
                                options=[("grpc.max_receive_message_length", limit),
                                         ("grpc.max_send_message_length", limit)])
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(self.predictor),
                                                                            self.grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(self.predictor), self.grpc)
        self.port = self.grpc.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise OSError(f"cannot bind the gRPC port {host}:{port}; is another server using it?")
        self.rest = None
        if rest_api_port is not None:  # None: no REST front end (0 picks a free port)
            from serving.rest import RestServer

            self.rest = RestServer(self.predictor, host, rest_api_port)
        self.rest_port = self.rest.port if self.rest else None
        self._stopped = threading.Event()

    def start(self) -> "Server":
        self.manager.start()
        self.grpc.start()
        if self.rest:
            self.rest.start()
        log.info("gRPC on %s:%d%s", self.host, self.port, f", REST on {self.rest_port}" if self.rest else "")
        return self

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
        """Serve until SIGTERM or SIGINT, then stop gracefully."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: threading.Thread(target=self.stop, daemon=True).start())
        self._stopped.wait()
        self.grpc.wait_for_termination()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
