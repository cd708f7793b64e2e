"""kcnn serve's command line, batching.config and start-up order against TensorFlow Serving's sources.

Each test's docstring names the file its expectation comes from:
  [main.cc]   tensorflow_serving/model_servers/main.cc (flag_list, --version)
  [server.h]  tensorflow_serving/model_servers/server.h (Server::Options: types and defaults)
  [server.cc] tensorflow_serving/model_servers/server.cc (BuildAndStart, parseGrpcChannelArgs)
  [flags.cc]  tensorflow/core/util/command_line_flags.cc (how a flag's value is parsed)
  [rest_util] tensorflow_serving/model_servers/http_rest_api_util.cc (AddCORSHeaders)
  [bundle]    tensorflow_serving/servables/tensorflow/session_bundle_config.proto (BatchingParameters)
"""

from __future__ import annotations

import http.client
import os
import socket
import threading
import time

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import get_model_status_pb2, model_pb2, model_service_pb2_grpc, predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc
from toy_models import toy

from kcnn import cli as kcnn_cli
from serving import cli
from serving import config as sc
from serving.config import ModelEntry
from serving.rest import CORS_HEADERS
from serving.server import Server
from serving.tensors import to_typed_proto

# [main.cc] flag_list, in its order, with each flag's type and default ([server.h] Options, main.cc's locals).
CPUS = cli.CPUS
MAIN_CC_FLAGS = (
    ("port", "int32", 8500), ("grpc_socket_path", "string", ""), ("rest_api_port", "int32", 0),
    ("rest_api_num_threads", "int32", 4 * CPUS), ("rest_api_timeout_in_ms", "int32", 30000),
    ("rest_api_enable_cors_support", "bool", False), ("enable_batching", "bool", False),
    ("allow_version_labels_for_unavailable_models", "bool", False), ("batching_parameters_file", "string", ""),
    ("enable_per_model_batching_parameters", "bool", False), ("model_config_file", "string", ""),
    ("model_config_file_poll_wait_seconds", "int32", 0), ("model_name", "string", "default"),
    ("model_base_path", "string", ""), ("num_load_threads", "int32", 0), ("num_unload_threads", "int32", 0),
    ("max_num_load_retries", "int32", 5), ("load_retry_interval_micros", "int64", 60_000_000),
    ("file_system_poll_wait_seconds", "int32", 1), ("flush_filesystem_caches", "bool", True),
    ("tensorflow_session_parallelism", "int64", 0), ("tensorflow_session_config_file", "string", ""),
    ("tensorflow_intra_op_parallelism", "int64", 0), ("tensorflow_inter_op_parallelism", "int64", 0),
    ("use_alts_credentials", "bool", False), ("ssl_config_file", "string", ""),
    ("platform_config_file", "string", ""), ("per_process_gpu_memory_fraction", "float", 0.0),
    ("saved_model_tags", "string", "serve"), ("grpc_channel_arguments", "string", ""),
    ("grpc_max_threads", "int32", 4 * CPUS), ("enable_model_warmup", "bool", True),
    ("num_request_iterations_for_warmup", "int32", 0), ("version", "bool", False),
    ("monitoring_config_file", "string", ""), ("remove_unused_fields_from_bundle_metagraph", "bool", True),
    ("prefer_tflite_model", "bool", False), ("num_tflite_pools", "int32", CPUS),
    ("num_tflite_interpreters_per_pool", "int32", 1), ("enable_signature_method_name_check", "bool", False),
    ("xla_cpu_compilation_enabled", "bool", False), ("xla_gpu_compilation_enabled", "bool", False),
    ("enable_profiler", "bool", True), ("thread_pool_factory_config_file", "string", ""),
    ("mixed_precision", "string", ""), ("skip_initialize_tpu", "bool", False),
    ("enable_grpc_healthcheck_service", "bool", False), ("enable_serialization_as_tensor_content", "bool", False),
)
# A value of each type other than any default, written as TF Serving's flags take it.
OTHER_VALUE = {"int32": "7", "int64": str(1 << 40), "float": "0.5", "string": "x"}


def parsed(*flags):
    return kcnn_cli.build_parser().parse_args(["serve", *flags])


def test_every_main_cc_flag_is_accepted_with_tf_servings_type_and_default():
    """[main.cc] [server.h] all 48 flags parse, in both forms, and default as TF Serving's do."""
    assert len(MAIN_CC_FLAGS) == 48
    defaults = parsed()
    for name, kind, default in MAIN_CC_FLAGS:
        assert getattr(defaults, name) == default, name
        if name == "version":
            continue  # it exits; see test_version_prints_the_versions_and_exits_zero
        value = OTHER_VALUE.get(kind, "false" if default else "true")
        expected = {"int32": 7, "int64": 1 << 40, "float": 0.5, "string": "x"}.get(kind, not default)
        assert getattr(parsed(f"--{name}={value}"), name) == expected, name
        assert getattr(parsed(f"--{name}", value), name) == expected, name


def test_flag_values_parse_as_tf_servings_flags_do():
    """[flags.cc] a bool is bare, =true or =false only; an int32 is a signed decimal with nothing after it and
    in range; an int64 takes 64-bit values; names are never abbreviated."""
    assert parsed("--enable_batching").enable_batching is True
    assert parsed("--enable_model_warmup=false").enable_model_warmup is False
    assert parsed("--port= 8600").port == 8600
    assert parsed("--load_retry_interval_micros=-1").load_retry_interval_micros == -1
    for bad in ("--enable_batching=True", "--enable_batching=1", "--enable_batching=yes", "--port=85.5",
                "--port=8500 ", "--port=0x10", f"--port={1 << 31}", "--file_system_poll_wait_seconds=0.5",
                "--per_process_gpu_memory_fraction=0.5x", "--model_base", "--rest_api"):
        with pytest.raises(SystemExit):
            parsed("--model_base_path=/m", bad)


def test_version_prints_the_versions_and_exits_zero(capsys):
    """[main.cc] --version prints the server's and TensorFlow's versions and returns 0, loading nothing."""
    with pytest.raises(SystemExit) as info:
        kcnn_cli.main(["serve", "--version"])
    assert info.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("kcnn ModelServer: ") and f"TensorFlow Serving {sc.TF_SERVING_VERSION}" in lines[0]
    assert lines[1].startswith("TensorFlow Library: ")
    assert parsed("--version=false").version is False


def test_a_setting_kcnn_cannot_honour_is_refused_with_one_line_naming_the_flag(capsys):
    """[main.cc] every flag is accepted at its default; kcnn refuses another value where it lacks the behaviour
    (TLS, ALTS, TF Lite, XLA, per-model batching...) instead of ignoring it; [server.cc] BuildAndStart refuses
    --batching_parameters_file without --enable_batching and the three thread flags together."""
    kinds = {name: (kind, default) for name, kind, default in MAIN_CC_FLAGS}
    cases = []
    for name in cli.REFUSED_FLAGS:
        kind, default = kinds[name]
        cases.append((name, f"--{name}={OTHER_VALUE.get(kind, 'false' if default else 'true')}"))
    cases += [("batching_parameters_file", "--batching_parameters_file=/b.config"),
              ("tensorflow_session_parallelism", "--tensorflow_session_parallelism=1"),
              ("grpc_channel_arguments", "--grpc_channel_arguments=grpc.some_flag")]
    for name, flag in cases:
        extra = ["--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=1"] \
            if name == "tensorflow_session_parallelism" else []
        assert kcnn_cli.main(["serve", "--model_base_path=/nowhere", flag, *extra]) == 2, flag
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"--{name}" in err, (flag, err)


def test_grpc_channel_arguments_parse_as_tf_serving_parses_them():
    """[server.cc] parseGrpcChannelArgs splits on ',' then '=', and BuildAndStart passes a value that
    safe_strto32 reads as an integer, any other as a string."""
    assert cli.grpc_channel_arguments("") == []
    assert cli.grpc_channel_arguments("grpc.max_connection_age_ms=2000,grpc.primary_user_agent=kcnn") == [
        ("grpc.max_connection_age_ms", 2000), ("grpc.primary_user_agent", "kcnn")]
    assert cli.grpc_channel_arguments("a= -12 ,b=4294967296,c=x=y") == [("a", -12), ("b", "4294967296"), ("c", "x")]
    with pytest.raises(ValueError, match="'lonely' is not KEY=VALUE"):
        cli.grpc_channel_arguments("a=1,lonely")


@pytest.fixture(scope="module")
def toy_base(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("flags") / "toy")
    toy(base)
    return base


def predict_request(rows: int) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "toy"
    request.inputs["x"].CopyFrom(to_typed_proto(np.ones((rows, 2), np.float32)))
    return request


def test_grpc_channel_arguments_reach_the_grpc_server(toy_base):
    """[server.cc] the arguments are the gRPC server's: a receive limit of 200 bytes refuses a larger request."""
    small, large = predict_request(1), predict_request(100)
    assert small.ByteSize() < 200 < large.ByteSize()
    with Server([ModelEntry("toy", toy_base)], port=0, poll_seconds=0,
                grpc_channel_arguments=[("grpc.max_receive_message_length", 200)]) as server:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            assert list(stub.Predict(small, timeout=20).outputs["y"].float_val) == [2.0, 2.0]
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(large, timeout=20)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def rest_get(port: int, path: str):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", path)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response.status, response.getheaders()


def test_cors_support_adds_tf_servings_headers_to_rest_api_answers(toy_base):
    """[rest_util] AddCORSHeaders' three headers, on REST API answers (errors too) and only with the flag."""
    with Server([ModelEntry("toy", toy_base)], port=0, rest_api_port=0, poll_seconds=0, rest_cors=True) as server:
        for path, status in (("/v1/models/toy", 200), ("/v1/models/nope", 404)):
            got, headers = rest_get(server.rest_port, path)
            assert got == status and set(CORS_HEADERS) <= set(headers), path
    assert CORS_HEADERS == (("Access-Control-Allow-Origin", "*"), ("Access-Control-Allow-Methods", "POST, GET"),
                            ("Access-Control-Allow-Headers", "Content-Type"))
    with Server([ModelEntry("toy", toy_base)], port=0, rest_api_port=0, poll_seconds=0) as server:
        _, headers = rest_get(server.rest_port, "/v1/models/toy")
        assert not {name for name, _ in headers} & {name for name, _ in CORS_HEADERS}


def test_grpc_socket_path_serves_grpc_on_a_unix_socket(toy_base, tmp_path):
    """[server.cc] --grpc_socket_path adds a listening port "unix:PATH" beside the TCP one."""
    path = tmp_path / "serving.sock"
    with Server([ModelEntry("toy", toy_base)], port=0, poll_seconds=0, grpc_socket_path=str(path)):
        with grpc.insecure_channel(f"unix:{path}") as channel:
            status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
                get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "toy"}), timeout=20)
    assert [s.version for s in status.model_version_status] == [1]


class RecordingServer:
    """Stands in for serving.server.Server in kcnn serve: records what it was given and when it started."""

    events: list = []

    def __init__(self, models, **options):
        self.options, self.port, self.rest = options, 1, None
        RecordingServer.events.append(("server", options))

    def start(self):
        RecordingServer.events.append(("start", None))
        raise KeyboardInterrupt  # kcnn serve stops here, having done everything before the models load


def test_serve_sets_tensorflows_threads_before_models_load_and_passes_the_flags(monkeypatch):
    """[server.cc] BuildAndStart: intra- and inter-op threads when either is given, else
    --tensorflow_session_parallelism for both, all before the ServerCore loads models; CORS, the channel
    arguments and the UNIX socket reach the server."""
    import tensorflow as tf

    import serving.server

    events = RecordingServer.events = []
    monkeypatch.setattr(serving.server, "Server", RecordingServer)
    monkeypatch.setattr(tf.config.threading, "set_intra_op_parallelism_threads", lambda n: events.append(("intra", n)))
    monkeypatch.setattr(tf.config.threading, "set_inter_op_parallelism_threads", lambda n: events.append(("inter", n)))
    for flags, threads in ((["--tensorflow_intra_op_parallelism=3"], [("intra", 3), ("inter", 0)]),
                           (["--tensorflow_session_parallelism=2"], [("intra", 2), ("inter", 2)]),
                           ([], [])):
        events.clear()
        with pytest.raises(KeyboardInterrupt):
            kcnn_cli.main(["serve", "--model_base_path=/m", "--rest_api_enable_cors_support",
                           "--grpc_channel_arguments=grpc.max_connection_age_ms=2000", "--grpc_socket_path=/s",
                           *flags])
        assert [e for e in events if e[0] != "server"] == threads + [("start", None)]
        options = next(o for kind, o in events if kind == "server")
        assert options["rest_cors"] is True and options["grpc_socket_path"] == "/s"
        assert options["grpc_channel_arguments"] == [("grpc.max_connection_age_ms", 2000)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_ports_open_only_after_the_models_load_and_answer_at_once(toy_base):
    """[server.cc] BuildAndStart creates the ServerCore (models loaded) before it starts the gRPC and HTTP
    servers: while models load nothing listens, and the first request once a port opens is answered."""
    grpc_port, rest_port = free_port(), free_port()
    server = Server([ModelEntry("toy", toy_base)], port=grpc_port, rest_api_port=rest_port, poll_seconds=0)
    release, load = threading.Event(), server.manager.start

    def slow_load():
        release.wait(30)
        load()

    server.manager.start = slow_load
    starting = threading.Thread(target=server.start)
    starting.start()
    try:
        time.sleep(0.3)
        assert not accepts(grpc_port) and not accepts(rest_port)  # loading: connections are refused
        release.set()
        deadline = time.monotonic() + 30
        while not accepts(rest_port) and time.monotonic() < deadline:
            time.sleep(0.01)
        asked = time.monotonic()
        assert rest_get(rest_port, "/v1/models/toy")[0] == 200
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
                get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "toy"}), timeout=20)
        assert status.model_version_status[0].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
        assert time.monotonic() - asked < 2  # answered, not queued behind the load
    finally:
        release.set()
        starting.join(timeout=30)
        server.stop()


def test_batching_config_takes_exactly_the_protos_fields(tmp_path, capsys):
    """[bundle] BatchingParameters has fields 1-9 (max_batch_size ... max_execution_batch_size); a field it lacks
    (low_priority_*, mixed_priority_batching_policy, batch_padding_policy) fails the text-format parse, and
    kcnn serve says so in one line naming the field and the file."""
    assert [f.name for f in sc.BatchingParameters.DESCRIPTOR.fields] == [
        "max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads", "thread_pool_name",
        "allowed_batch_sizes", "pad_variable_length_inputs", "enable_large_batch_splitting",
        "max_execution_batch_size"]
    for field in ("low_priority_max_batch_size { value: 8 }", "low_priority_allowed_batch_sizes: 8",
                  "mixed_priority_batching_policy: PRIORITY_ISOLATION", 'batch_padding_policy { value: "PAD_UP" }'):
        path = tmp_path / "batching.config"
        path.write_text(f"max_batch_size {{ value: 8 }}\n{field}\n")
        name = field.split()[0].rstrip(":")
        with pytest.raises(ValueError, match=f'Invalid protobuf file: .*has no field named "{name}"'):
            sc.read_batching_config(str(path))
        assert kcnn_cli.main(["serve", "--model_base_path=/nowhere", "--enable_batching",
                              f"--batching_parameters_file={path}"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and name in err and str(path) in err


def test_saved_model_tags_choose_the_metagraph_to_load(tmp_path):
    """[main.cc] --saved_model_tags is split on ',' into the tag-set of the MetaGraph to load; TensorFlow's
    loader (cc/saved_model/reader.cc FindMetaGraphDef) fails a SavedModel without it, in these words."""
    from tensorflow.core.protobuf import saved_model_pb2

    from serving.models import Lifecycle, load_servable
    from serving.server import Server

    base = str(tmp_path / "toy")
    path = toy(base)
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as handle:
        proto.ParseFromString(handle.read())
    proto.meta_graphs[0].meta_info_def.tags[:] = ["serve", "gpu"]  # as a GPU build tags its MetaGraph
    with open(os.path.join(path, "saved_model.pb"), "wb") as handle:
        handle.write(proto.SerializeToString())
    with pytest.raises(ValueError, match=r"^Could not find meta graph def matching supplied tags: \{ serve \}\. "
                                         r"To inspect available tag-sets in the SavedModel, please use the "
                                         r"SavedModel CLI: `saved_model_cli`$"):
        load_servable("toy", 1, path)
    assert cli.saved_model_tags("serve,gpu") == cli.saved_model_tags("gpu,serve,gpu") == ("gpu", "serve")
    lifecycle = Lifecycle(max_num_load_retries=0, saved_model_tags=cli.saved_model_tags("gpu,serve"))
    with Server([ModelEntry("toy", base)], port=0, poll_seconds=0, lifecycle=lifecycle) as server:
        assert server.manager.resolve(model_pb2.ModelSpec(name="toy")).version == 1
