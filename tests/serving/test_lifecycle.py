"""Version lifecycle, start-up, warm-up, batching splits and REST hardening, as TF Serving runs them."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
import time

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc
from toy_models import toy

from serving.batching import Batcher
from serving.config import Batching, ModelEntry
from serving.models import Lifecycle, StartupError
from serving.server import Server
from serving.tensors import to_typed_proto

FAST_RETRIES = Lifecycle(max_num_load_retries=50, load_retry_interval_seconds=0.1)


def broken_version(base: str, version: int = 1) -> str:
    """A version directory caught half-copied: a truncated saved_model.pb and nothing else."""
    path = os.path.join(base, str(version))
    os.makedirs(path)
    with open(os.path.join(path, "saved_model.pb"), "wb") as handle:
        handle.write(b"\x0a\x05trunc")
    return path


def predict_version(server, x=((1.0, 2.0),)) -> int:
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="toy"))
    request.inputs["x"].CopyFrom(to_typed_proto(np.array(x, np.float32)))
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=20)
    return response.model_spec.version.value


def states(server, name="toy") -> list:
    from tensorflow_serving.apis import get_model_status_pb2

    response = server.predictor.status(get_model_status_pb2.GetModelStatusRequest(model_spec={"name": name}))
    names = get_model_status_pb2.ModelVersionStatus.State.Name
    return [(s.version, names(s.state)) for s in response.model_version_status]


def test_a_version_caught_mid_copy_is_retried_and_then_served(tmp_path):
    # TF Serving retries a failed load (--max_num_load_retries, --load_retry_interval_micros) before giving up.
    base = str(tmp_path / "toy")
    partial = broken_version(base)
    complete = toy(str(tmp_path / "staging"))
    server = Server([ModelEntry("toy", base)], port=0, poll_seconds=0.1, lifecycle=FAST_RETRIES)
    started = threading.Thread(target=server.start)
    started.start()
    time.sleep(0.4)  # a few failed attempts, then the copy completes in place, saved_model.pb last: version 1
    # never leaves the disk (removing it, even for a moment, would let a poll see no versions and end start-up)
    for entry in sorted(os.listdir(complete), key=lambda e: e == "saved_model.pb"):
        os.replace(os.path.join(complete, entry), os.path.join(partial, entry))
    started.join(timeout=60)
    try:
        assert not started.is_alive()
        assert states(server) == [(1, "AVAILABLE")] and predict_version(server) == 1
        metrics = server.metrics.render()
        assert 'status="fail"}' in metrics and 'status="success"} 1' in metrics
    finally:
        server.stop()


def test_a_model_that_never_becomes_available_fails_start_up_with_tf_servings_message(tmp_path, capsys):
    base = str(tmp_path / "toy")
    broken_version(base)
    server = Server([ModelEntry("toy", base)], port=0, poll_seconds=0,
                    lifecycle=Lifecycle(max_num_load_retries=1, load_retry_interval_seconds=0.05))
    with pytest.raises(StartupError) as info:
        server.start()
    message = str(info.value)
    assert message.startswith("1 servable(s) did not become available: {{{name: toy version: 1} due to error: ")
    assert states(server) == [(1, "END")]
    from kcnn import cli

    assert cli.main(["serve", "--port=0", "--model_name=toy", f"--model_base_path={base}",
                     "--max_num_load_retries=0"]) == 1
    assert ("Failed to start server. Error: UNKNOWN: 1 servable(s) did not become available: {{{name: toy version: 1}"
            in capsys.readouterr().err)


def test_status_is_newest_first_and_deleting_the_newest_serves_the_remaining_latest(tmp_path):
    base = str(tmp_path / "toy")
    toy(base, 1)
    toy(base, 2)
    with Server([ModelEntry("toy", base, "all")], port=0, poll_seconds=0) as server:
        assert states(server) == [(2, "AVAILABLE"), (1, "AVAILABLE")]  # TF Serving lists newest first
    with Server([ModelEntry("toy", base)], port=0, poll_seconds=0.1) as server:
        assert predict_version(server) == 2 and states(server) == [(2, "AVAILABLE")]
        shutil.rmtree(os.path.join(base, "2"))
        deadline = time.monotonic() + 60
        while states(server) != [(2, "END"), (1, "AVAILABLE")] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert states(server) == [(2, "END"), (1, "AVAILABLE")]
        assert predict_version(server) == 1


def test_warmup_records_are_replayed_before_a_version_serves_unless_disabled(tmp_path):
    base = str(tmp_path / "toy")
    toy(base, 1, warmup_records=3)
    spec = model_pb2.ModelSpec(name="toy")
    with Server([ModelEntry("toy", base)], port=0, poll_seconds=0) as server:
        assert server.manager.resolve(spec).warmup_records == 3
    with Server([ModelEntry("toy", base)], port=0, poll_seconds=0, lifecycle=Lifecycle(enable_warmup=False)) as server:
        assert server.manager.resolve(spec).warmup_records == 0


def test_an_empty_base_path_warns_at_start_and_keeps_serving_the_others(tmp_path, caplog):
    base = str(tmp_path / "toy")
    toy(base)
    with caplog.at_level(logging.WARNING, logger="serving.models"):
        with Server([ModelEntry("toy", base), ModelEntry("ghost", str(tmp_path / "nothing"))], port=0,
                    poll_seconds=0) as server:
            assert predict_version(server) == 1
    assert f"No versions of servable ghost found under base path {tmp_path / 'nothing'}" in caplog.text


def test_large_batch_splitting_cuts_a_request_into_execution_sized_batches():
    batching = Batching(max_batch_size=8, batch_timeout_micros=0, num_batch_threads=1, max_enqueued_batches=10,
                        allowed_batch_sizes=(1, 2), enable_large_batch_splitting=True, max_execution_batch_size=2)
    batcher = Batcher(batching)
    seen = []

    def double(x):
        seen.append(int(x.shape[0]))
        import tensorflow as tf

        return {"y": tf.identity(x) * 2}

    try:
        rows = np.arange(10, dtype=np.float32).reshape(5, 2)
        out = batcher.run(("m", 1, "s"), double, {"x": rows})
        np.testing.assert_array_equal(out["y"], rows * 2)
        assert seen and max(seen) <= 2 and sum(seen) >= 5  # pieces of at most 2 rows (the last padded to 2)
    finally:
        batcher.close()


def test_rest_front_end_drops_a_stalled_body_and_bounds_connections(tmp_path):
    base = str(tmp_path / "toy")
    toy(base)
    with Server([ModelEntry("toy", base)], port=0, rest_api_port=0, poll_seconds=0, rest_threads=2,
                rest_timeout_ms=300, rest_max_connections=8) as server:
        stalled = socket.create_connection(("127.0.0.1", server.rest_port), timeout=10)
        stalled.sendall(b"POST /v1/models/toy:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        started = time.monotonic()
        assert stalled.recv(1024) == b""  # closed by the read timeout, not held forever
        assert time.monotonic() - started < 5
        stalled.close()
        # Beyond max_connections open connections, a new one is answered 503 at once.
        idle = [socket.create_connection(("127.0.0.1", server.rest_port), timeout=10) for _ in range(8)]
        time.sleep(0.1)
        extra = socket.create_connection(("127.0.0.1", server.rest_port), timeout=10)
        extra.sendall(b"GET /v1/models/toy HTTP/1.1\r\nHost: x\r\n\r\n")
        assert extra.recv(1024).startswith(b"HTTP/1.1 503")
        for connection in idle + [extra]:
            connection.close()
        time.sleep(0.5)  # the idle ones time out; the server serves again
        from serving.client import RestClient

        assert RestClient(f"127.0.0.1:{server.rest_port}", "toy").status() == {1: "AVAILABLE"}


def test_idle_and_slow_rest_clients_do_not_hold_the_workers(tmp_path):
    """issue 28: with 16 idle keep-alive connections a valid request waited 29 s, and 64 got 503. Idle and slow
    connections now hold a connection thread each, never one of the (here 2) workers."""
    from serving.client import RestClient

    base = str(tmp_path / "toy")
    toy(base)
    with Server([ModelEntry("toy", base)], port=0, rest_api_port=0, poll_seconds=0, rest_threads=2) as server:
        idle = [socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) for _ in range(64)]
        slow = socket.create_connection(("127.0.0.1", server.rest_port), timeout=30)
        slow.sendall(b"POST /v1/models/toy:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"ins")
        try:
            client = RestClient(f"127.0.0.1:{server.rest_port}", "toy", timeout=10)  # it waited 29 s before
            assert client.status() == {1: "AVAILABLE"}
            for _ in range(3):
                body = b'{"instances": [[1.0, 2.0]]}'
                connection = socket.create_connection(("127.0.0.1", server.rest_port), timeout=10)
                connection.sendall(b"POST /v1/models/toy:predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                   b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
                reply = b""
                while chunk := connection.recv(65536):
                    reply += chunk
                connection.close()
                head, _, payload = reply.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200") and json.loads(payload) == {"predictions": [[2.0, 4.0]]}
        finally:
            for connection in idle + [slow]:
                connection.close()


def test_a_seeded_fuzz_of_malformed_rest_requests_never_gets_a_5xx(tmp_path):
    # 300 requests built from broken pieces (paths, bodies, headers); bounded in count and time.
    import http.client
    import json

    base = str(tmp_path / "toy")
    toy(base)
    rng = np.random.default_rng(13)
    paths = ["/v1/models/toy:predict", "/v1/models/toy/versions/1:predict", "/v1/models/toy/versions/" + "9" * 30,
             "/v1/models/%ff:predict", "/v1/models/toy/labels/x:predict", "/v1/models/" + "m" * 5000, "/v1//models",
             "/v1/models/toy/metadata", "/v1/models/toy:predict?x=%", "/%", "/v1/models/toy:PREDICT"]
    bodies = [b"", b"{", b"[]", b"null", b'{"instances": 5}', b'{"instances": []}', b'{"inputs": {"x": "a"}}',
              b'{"instances": [[1e400, 1]]}', b'{"instances": [[1, 2]], "signature_name": null}', b"\xff\xfe",
              b'{"instances": [' + b"[" * 5000 + b"]" * 5000 + b"]}", b'{"signature_name": "ints", "inputs": [1e3]}',
              b'{"signature_name": "pair", "instances": [{"a": [1], "b": 1, "s": "x"}]}', json.dumps(
                  {"instances": [[{"b64": "x"}, 1]]}).encode(), b'{"signature_name": "__saved_model_init_op", '
              b'"instances": [1]}', b'{"inputs": [[1, 2]], "instances": [[1, 2]]}']
    statuses = []
    with Server([ModelEntry("toy", base)], port=0, rest_api_port=0, poll_seconds=0, rest_timeout_ms=2000) as server:
        deadline = time.monotonic() + 60
        for _ in range(300):
            if time.monotonic() > deadline:
                break
            connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)
            body = bodies[rng.integers(len(bodies))]
            method = ["POST", "GET", "PUT", "DELETE"][rng.integers(4)]
            connection.putrequest(method, paths[rng.integers(len(paths))], skip_host=False)
            connection.putheader("Content-Length", str(len(body)) if rng.random() > 0.1 else "x")
            connection.endheaders(body)
            try:
                statuses.append(connection.getresponse().status)
            except (http.client.RemoteDisconnected, ConnectionResetError):
                statuses.append(0)  # closed on a malformed header: no answer, no crash
            finally:
                connection.close()
        from serving.client import RestClient

        assert RestClient(f"127.0.0.1:{server.rest_port}", "toy").status() == {1: "AVAILABLE"}
    assert len(statuses) >= 100 and not [s for s in statuses if s >= 500], sorted(set(statuses))
    assert {200, 400, 404} <= set(statuses)  # the fuzz reached the model, the checks and the router
    assert set(statuses) <= {0, 200, 400, 404, 413}


def test_a_failed_version_a_newer_one_supersedes_ends_with_its_error(tmp_path):
    # TF Serving un-aspires a version the policy no longer wants; one still retrying its load has its retries
    # cancelled and its harness ends in kError, which GetModelStatus reports as END with the load error
    # (core/loader_harness.cc, core/servable_state_monitor.cc). It used to stay LOADING for good.
    from tensorflow_serving.apis import get_model_status_pb2

    base = str(tmp_path / "toy")
    toy(base, version=1)
    slow_retries = Lifecycle(max_num_load_retries=50, load_retry_interval_seconds=60)
    with Server([ModelEntry("toy", base)], port=0, poll_seconds=0, lifecycle=slow_retries) as server:
        broken_version(base, 2)  # the newest now, and broken: version 1 keeps serving while 2 waits to retry
        server.manager.poll_once()
        assert states(server) == [(2, "LOADING"), (1, "AVAILABLE")] and predict_version(server) == 1
        toy(base, version=3)
        server.manager.poll_once()
        assert states(server) == [(3, "AVAILABLE"), (2, "END"), (1, "END")] and predict_version(server) == 3
        response = server.predictor.status(get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "toy"}))
        failed = response.model_version_status[1]
        assert failed.status.error_code == grpc.StatusCode.UNKNOWN.value[0] and failed.status.error_message
