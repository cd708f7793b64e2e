"""A local server that speaks TensorFlow Serving's gRPC API (and its REST API), for development and tests.

It implements ``tensorflow.serving.PredictionService`` (Predict, GetModelMetadata;
Classify, Regress and MultiInference run TF Serving's signature checks and then answer
UNIMPLEMENTED, kcnn exporting predict signatures only) and ``tensorflow.serving.ModelService``
(GetModelStatus, HandleReloadConfigRequest) with the messages of tensorflow-serving-api, registers gRPC server
reflection as TF Serving does, so a client tested here works unchanged against
``tensorflow_model_server``. Production serving is the real ``tensorflow/serving``
image (see the Dockerfile).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from concurrent import futures

import grpc
from google.protobuf import text_format
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
)

from serving.batching import Batcher
from serving.config import Batching, ModelEntry
from serving.memory import DEFAULT_MEMORY_MB, MemoryBusy, RequestMemory, array_bytes
from serving.metrics import Metrics
from serving.models import Lifecycle, ModelManager, ServingError, check_arrays, parse_inputs, run_signature, shown
from serving.tensors import DEFAULT_MAX_ELEMENTS, request_bytes, to_typed_proto

log = logging.getLogger(__name__)
DEFAULT_SIGNATURE = "serving_default"
CLASSIFY_METHOD, REGRESS_METHOD = "tensorflow/serving/classify", "tensorflow/serving/regress"


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _debug_string(message) -> str:
    """A proto as C++ DebugString() prints it, which TF Serving's signature errors quote (text format)."""
    return text_format.MessageToString(message)


def preprocess_classification(definition, check_method_name: bool) -> str:
    """TF Serving's PreProcessClassification (classifier.cc), in its order: the name of the signature's input
    tensor, or the INVALID_ARGUMENT of its first failed check."""
    if check_method_name and definition.method_name != CLASSIFY_METHOD:
        raise _invalid(f"Expected classification signature method_name to be {CLASSIFY_METHOD}. "
                       f"Was: {definition.method_name}")
    if len(definition.inputs) != 1:
        raise _invalid("Expected one input Tensor.")
    if len(definition.outputs) not in (1, 2):
        raise _invalid(f"Expected one or two output Tensors, found {len(definition.outputs)}")
    if "inputs" not in definition.inputs:
        raise _invalid(f"No classification inputs found in SignatureDef: {_debug_string(definition)}")
    if "classes" not in definition.outputs and "scores" not in definition.outputs:
        raise _invalid('Expected classification signature outputs to contain at least one of "classes" or '
                       f'"scores". Signature was: {_debug_string(definition)}')
    return definition.inputs["inputs"].name


def preprocess_regression(definition, check_method_name: bool) -> str:
    """TF Serving's PreProcessRegression (regressor.cc), in its order, as preprocess_classification."""
    if check_method_name and definition.method_name != REGRESS_METHOD:
        raise _invalid(f"Expected regression signature method_name to be {REGRESS_METHOD}. "
                       f"Was: {definition.method_name}")
    if len(definition.inputs) != 1:
        raise _invalid("Expected one input Tensor.")
    if len(definition.outputs) != 1:
        raise _invalid("Expected one output Tensor.")
    if "inputs" not in definition.inputs:
        raise _invalid(f"No regression inputs found in SignatureDef: {_debug_string(definition)}")
    if "outputs" not in definition.outputs:
        raise _invalid(f"No regression outputs found in SignatureDef: {_debug_string(definition)}")
    return definition.inputs["inputs"].name


# Classify, Regress and MultiInference's tasks by the method they ask for.
PREPROCESS = {"classify": preprocess_classification, "regress": preprocess_regression}
TASK_METHODS = {CLASSIFY_METHOD: "classify", REGRESS_METHOD: "regress"}


def input_examples(request_input) -> int:
    """How many tf.Examples an ``Input`` holds (util.cc NumInputExamples): 0 when its kind is unset."""
    kind = request_input.WhichOneof("kind")
    return len(getattr(request_input, kind).examples) if kind else 0


class Predictor:
    """The request logic both front ends (gRPC and REST) share."""

    def __init__(self, manager: ModelManager, batching: Batching | None = None, *,
                 max_elements: int = DEFAULT_MAX_ELEMENTS, metrics: Metrics | None = None,
                 method_name_check: bool = False, memory_mb: float = DEFAULT_MEMORY_MB):
        self.manager = manager
        self.memory = RequestMemory(memory_mb * 2**20)
        self.method_name_check = method_name_check  # TF Serving's --enable_signature_method_name_check
        self.batcher = Batcher(batching) if batching else None
        self.max_elements = max_elements
        self.metrics = metrics or Metrics()

    def run(self, servable, signature: str, arrays: dict, output_filter=()) -> dict:
        """Numpy inputs -> the outputs ``output_filter`` asks for (all when empty), after TF Serving's checks.

        Held against the request memory bound by the arrays' estimate (REST, whose JSON is parsed already).
        """
        with self._held(sum(array_bytes(array) for array in arrays.values())):
            return self._run(servable, signature, arrays, output_filter)

    @contextlib.contextmanager
    def _held(self, estimate: int):
        try:
            amount = self.memory.acquire(estimate)
        except MemoryBusy as error:
            raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error)) from None
        try:
            yield
        finally:
            self.memory.release(amount)

    def _run(self, servable, signature: str, arrays: dict, output_filter=()) -> dict:
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
        # Held from before the tensors are built: a 61-byte request may declare 50 MB of them.
        estimate = sum(request_bytes(proto, self.max_elements) for proto in request.inputs.values())
        with self._held(estimate):
            arrays = parse_inputs(servable, signature, request.inputs, self.max_elements)
            outputs = self._run(servable, signature, arrays, list(request.output_filter))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature
        for name, array in outputs.items():
            response.outputs[name].CopyFrom(to_typed_proto(array))
        return response

    def check_method(self, spec, kind: str, examples: int | None = None) -> None:
        """Classify (``kind`` "classify") and Regress ("regress"): TF Serving's checks in its order
        (GetClassificationSignatureDef / GetRegressionSignatureDef, then PreProcess..., then the request's
        ``examples``, counted by gRPC), then UNIMPLEMENTED: kcnn runs predict signatures only."""
        servable = self.manager.resolve(spec)
        signature = spec.signature_name or DEFAULT_SIGNATURE
        definition = servable.all_signature_defs.get(signature)  # the MetaGraph's, __saved_model_init_op too
        if definition is None:
            raise _invalid(f"No signature was found with the name: {shown(signature)}")
        PREPROCESS[kind](definition, self.method_name_check)
        if examples == 0:
            raise _invalid("Input is empty.")  # util.cc InputToSerializedExampleTensor
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED, f"kcnn serve does not run {kind} signatures; its models "
                                                          "export predict signatures only: use Predict")

    def multi_inference(self, request) -> None:
        """TF Serving's MultiInference checks (multi_inference.cc TensorFlowMultiInferenceRunner::Infer), task by
        task in its order, against the servable the first task names; then UNIMPLEMENTED, as check_method."""
        first = request.tasks[0].model_spec if request.tasks and request.tasks[0].HasField("model_spec") else None
        servable = self.manager.resolve(first or model_pb2.ModelSpec())
        model_name, input_name, signatures = "", "", set()
        for task in request.tasks:
            name = task.model_spec.name
            if not name:
                raise _invalid("Found ModelSpec with an empty model name.")
            if model_name and name != model_name:
                raise _invalid("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
            model_name = name
            signature = task.model_spec.signature_name or DEFAULT_SIGNATURE
            if signature in signatures:
                raise _invalid(f"Duplicate evaluation of signature: {shown(signature)}")
            signatures.add(signature)
            definition = servable.all_signature_defs.get(signature)
            if definition is None:
                raise _invalid(f"Requested signature not found in model graph: {shown(signature)}")
            if task.method_name not in TASK_METHODS:
                raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                                   f"Unsupported signature method_name: {shown(task.method_name)}")
            task_input = PREPROCESS[TASK_METHODS[task.method_name]](definition, self.method_name_check)
            if input_name and task_input != input_name:
                raise _invalid("Input tensor must be the same for all Signatures.")
            input_name = task_input
        if input_examples(request.input) == 0:
            raise _invalid("Input is empty.")
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED, "kcnn serve does not run MultiInference; its models "
                                                          "export predict signatures only: use Predict")

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
        # TF Serving's GetModelStatusImpl reads only has_version(): a version_label is ignored and every version
        # is reported (get_model_status_impl.cc), for gRPC and for REST's /labels/L path alike.
        version = spec.version.value if spec.HasField("version") else None
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


def _guarded(api: str | None, *, spec: bool = True):
    """ServingError -> its status code, anything unexpected -> INTERNAL; metered under ``api`` as TF Serving meters.

    TF Serving's PredictionServiceImpl (prediction_service_impl.cc) counts Predict, Classify and Regress in
    request_count whatever the outcome and records their latency, as API "Predict", "Classify" or "Regress",
    only when they succeed; GetModelMetadata, GetModelStatus, MultiInference and HandleReloadConfigRequest
    are metered nowhere (``api=None``). ``spec=False`` is for the RPCs whose request names no single model
    (MultiInference, HandleReloadConfigRequest): no ModelSpec to check.
    """

    def wrap(method):
        def handler(self, request, context):
            started = time.perf_counter()
            status = "OK"
            try:
                if spec and not request.HasField("model_spec"):
                    # The first check of TF Serving's Predict, GetModelMetadata, GetModelStatus, Classify and
                    # Regress (predict_impl.cc, get_model_metadata_impl.cc, get_model_status_impl.cc,
                    # classification_service.cc, regression_service.cc).
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
                return method(self, request, context)
            except ServingError as error:
                status = error.code.name
                context.abort(error.code, error.message)
            except Exception as error:  # noqa: BLE001 - a request must never take the server down
                status = "INTERNAL"
                log.exception("unexpected error serving a request")
                context.abort(grpc.StatusCode.INTERNAL, f"{type(error).__name__}")
            finally:
                if api is not None:
                    name = shown(request.model_spec.name, 64)
                    self.predictor.metrics.request(name, api, "GRPC", status, time.perf_counter() - started)

        handler.__name__ = method.__name__
        return handler

    return wrap


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, predictor: Predictor):
        self.predictor = predictor

    @_guarded("Predict")
    def Predict(self, request, context):
        return self.predictor.predict(request)

    @_guarded(None)
    def GetModelMetadata(self, request, context):
        return self.predictor.metadata(request)

    @_guarded("Classify")
    def Classify(self, request, context):
        self.predictor.check_method(request.model_spec, "classify", input_examples(request.input))

    @_guarded("Regress")
    def Regress(self, request, context):
        self.predictor.check_method(request.model_spec, "regress", input_examples(request.input))

    @_guarded(None, spec=False)
    def MultiInference(self, request, context):
        self.predictor.multi_inference(request)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, predictor: Predictor):
        self.predictor = predictor

    @_guarded(None)
    def GetModelStatus(self, request, context):
        return self.predictor.status(request)

    @_guarded(None, spec=False)
    def HandleReloadConfigRequest(self, request, context):
        # model_service_impl.cc: only a model_config_list goes on to ServerCore::ReloadConfig (the manager's).
        if request.config.WhichOneof("config") != "model_config_list":
            raise _invalid("ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList "
                           "is currently supported")
        self.predictor.manager.reload_config(request.config)
        response = model_management_pb2.ReloadConfigResponse()
        response.status.SetInParent()  # ToStatusProto(OK): error_code 0, no message
        return response


INT32_MAX = (1 << 31) - 1


class Server:
    """gRPC (and optionally REST) front ends over one ModelManager; ``start()`` then ``stop()`` or ``wait()``.

    The ports are bound by ``start()`` once the models have loaded; ``port=0`` and ``rest_api_port=0`` pick
    free ones (read ``server.port`` and ``server.rest_port`` after ``start()``). ``grpc_channel_arguments``
    ((key, value) pairs, TF Serving's --grpc_channel_arguments) configure the gRPC server, ``grpc_socket_path``
    also serves gRPC on that UNIX socket, and ``rest_cors`` adds TF Serving's CORS headers to REST API answers.
    ``model_config_file`` with ``config_poll_seconds > 0`` re-reads the model list that often
    (TF Serving's --model_config_file_poll_wait_seconds); ``prometheus_path`` serves the
    metrics on the REST port; ``enable_signature_method_name_check`` is TF Serving's flag of that
    name (off: Classify and Regress check a signature's inputs and outputs, not its method_name).
    """

    def __init__(self, models: list[ModelEntry], *, port: int = 8500, rest_api_port: int | None = None,
                 host: str = "127.0.0.1", batching: Batching | None = None, poll_seconds: float = 1.0,
                 max_workers: int = 16, max_message_mb: int | None = None, lifecycle: Lifecycle = Lifecycle(),
                 max_elements: int = DEFAULT_MAX_ELEMENTS, memory_mb: float = DEFAULT_MEMORY_MB,
                 rest_threads: int = 16, rest_timeout_ms: int = 30000,
                 rest_max_connections: int | None = None,
                 prometheus_path: str | None = None, model_config_file: str | None = None,
                 config_poll_seconds: float = 0.0, enable_signature_method_name_check: bool = False,
                 grpc_channel_arguments=(), grpc_socket_path: str = "", rest_cors: bool = False):
        self.host = host
        self.metrics = Metrics()
        self.manager = ModelManager(models, poll_seconds, lifecycle, self.metrics)
        self.predictor = Predictor(self.manager, batching, max_elements=max_elements, metrics=self.metrics,
                                   method_name_check=enable_signature_method_name_check, memory_mb=memory_mb)
        # TF Serving's gRPC server takes messages up to INT32_MAX bytes (server.cc: SetMaxMessageSize(kint32max)),
        # so a large request gets its own error, not RESOURCE_EXHAUSTED; max_message_mb sets a lower cap.
        limit = INT32_MAX if max_message_mb is None else max_message_mb * 1024 * 1024
        # --grpc_channel_arguments (KEY, VALUE) pairs go to the server as TF Serving's AddChannelArgument calls do;
        # one naming a key set here replaces it.
        options = {"grpc.max_receive_message_length": limit, "grpc.max_send_message_length": limit,
                   **dict(grpc_channel_arguments)}
        self.grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="kcnn-grpc"),
                                options=list(options.items()))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(self.predictor),
                                                                            self.grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(self.predictor), self.grpc)
        from grpc_reflection.v1alpha import reflection

        reflection.enable_server_reflection((
            prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name,
            model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
            reflection.SERVICE_NAME), self.grpc)
        # The ports are bound in start(), once the models have loaded, as TF Serving's BuildAndStart (server.cc)
        # creates the ServerCore first: until then nothing listens, so a client cannot connect and wait.
        self._grpc_address, self._grpc_socket_path = f"{host}:{port}", grpc_socket_path
        self._rest_address = None if rest_api_port is None else (host, rest_api_port)  # None: no REST front end
        self._rest_options = {"threads": rest_threads, "timeout_seconds": rest_timeout_ms / 1000,
                              "prometheus_path": prometheus_path, "max_connections": rest_max_connections,
                              "cors": rest_cors}
        self.port = self.rest_port = self.rest = None  # known once start() has bound them (0 picks a free port)
        self.model_config_file, self.config_poll_seconds = model_config_file, config_poll_seconds
        self._stopped = threading.Event()

    def start(self) -> "Server":
        """Load every model (StartupError if one never becomes available, as TF Serving exits), then serve."""
        try:
            self.manager.start()
            self._bind()
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

    def _bind(self) -> None:
        """Bind (and listen on) the gRPC port, the optional UNIX socket (--grpc_socket_path) and the REST port."""
        self.port = self._add_grpc_port(self._grpc_address)
        if not self.port:
            raise OSError(f"cannot bind the gRPC port {self._grpc_address}; is another server using it?")
        if self._grpc_socket_path and not self._add_grpc_port(f"unix:{self._grpc_socket_path}"):
            raise OSError(f"cannot listen on the gRPC socket unix:{self._grpc_socket_path}")
        if self._rest_address is not None:
            from serving.rest import RestServer

            self.rest = RestServer(self.predictor, *self._rest_address, **self._rest_options)
            self.rest_port = self.rest.port

    def _add_grpc_port(self, address: str) -> int:
        try:
            return self.grpc.add_insecure_port(address)
        except RuntimeError:  # recent grpcio raises where older versions returned 0
            return 0

    def _poll_config(self) -> None:
        """TF Serving's PollFilesystemAndReloadConfig (server.cc): read the file, apply it as
        HandleReloadConfigRequest does (ModelManager.reload_config), log what fails and keep serving."""
        from serving.config import read_models_config

        while not self._stopped.wait(self.config_poll_seconds):
            try:
                config = read_models_config(self.model_config_file)
            except Exception as error:  # noqa: BLE001 - a bad edit keeps the models being served
                log.error("Failed to read ModelServerConfig file: %s: %s", self.model_config_file, error)
                continue
            try:
                self.manager.reload_config(config)
            except ServingError as error:
                log.error("PollFilesystemAndReloadConfig failed to ReloadConfig: %s", error.message)
            except Exception:  # noqa: BLE001
                log.exception("PollFilesystemAndReloadConfig failed to ReloadConfig")

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
