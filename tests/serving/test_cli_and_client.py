"""The serving command line (serve with SIGTERM, predict, export, serving-config, demo) and client retries."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest
from serving_helpers import CLASSES, exported, images, png

from kcnn import cli
from serving.client import Client, ServingClientError

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def kcnn(*args):
    return [sys.executable, "-m", "kcnn.cli", *args]


class FakeRpcError(grpc.RpcError):
    def __init__(self, code):
        self._code = code

    def code(self):
        return self._code

    def details(self):
        return f"fake {self._code.name}"


def test_client_retries_only_unavailable_and_deadline_exceeded():
    client = Client("127.0.0.1:1", "m", retries=3, backoff=0.001)
    calls = []

    def flaky(request, timeout):
        calls.append(timeout)
        if len(calls) < 3:
            raise FakeRpcError(grpc.StatusCode.UNAVAILABLE if len(calls) == 1 else grpc.StatusCode.DEADLINE_EXCEEDED)
        return "ok"

    assert client._call(flaky, None) == "ok" and len(calls) == 3
    calls.clear()

    def invalid(request, timeout):
        calls.append(timeout)
        raise FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT)

    with pytest.raises(ServingClientError) as info:
        client._call(invalid, None)
    assert len(calls) == 1 and info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ServingClientError) as info:  # nothing listens on port 1: UNAVAILABLE after the retries
        client.status()
    assert info.value.code == grpc.StatusCode.UNAVAILABLE and "is the server running" in info.value.hint
    client.close()


def test_serve_predict_and_graceful_sigterm(tmp_path, capsys):
    base = str(tmp_path / "models" / "shapes")
    exported(base, seed=1)
    server = subprocess.Popen(kcnn("serve", "--port", "0", "--model_name", "shapes", "--model_base_path", base),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    try:
        port = None
        deadline = time.time() + 120
        while port is None and time.time() < deadline:
            line = server.stdout.readline()
            if not line and server.poll() is not None:
                break
            match = re.search(r"on gRPC 127\.0\.0\.1:(\d+)", line)
            port = int(match.group(1)) if match else None
        assert port, "kcnn serve did not report its port"
        picture = tmp_path / "img.png"
        picture.write_bytes(png(images(1)[0]))
        # `kcnn predict` as its entry point runs it, in this process (the server is the separate process).
        assert cli.main(["predict", "--server", f"127.0.0.1:{port}", "--model", "shapes", str(picture), "--json",
                         "--top-k", "2"]) == 0
        (answer,) = json.loads(capsys.readouterr().out)
        assert answer["image"] == str(picture) and len(answer["labels"]) == 2 and answer["labels"][0] in CLASSES
        # A large request in flight when SIGTERM arrives still gets its answer: 512 smooth 512x512 PNGs
        # (small to send, about 1.4 s to decode and resize on two cores; SIGTERM comes after 0.5 s).
        ramp = np.broadcast_to(np.linspace(0, 255, 512, dtype=np.uint8)[None, :, None], (512, 512, 3))
        payload = [png(np.ascontiguousarray(np.roll(ramp, i, axis=1))) for i in range(512)]
        outcome = {}

        def slow_request():
            with Client(f"127.0.0.1:{port}", "shapes", timeout=120) as client:
                outcome["predictions"] = client.predict(payload)

        thread = threading.Thread(target=slow_request)
        thread.start()
        time.sleep(0.5)
        server.send_signal(signal.SIGTERM)
        thread.join(timeout=120)
        assert len(outcome.get("predictions", [])) == 512
        assert server.wait(timeout=60) == 0
    finally:
        if server.poll() is None:
            server.kill()


def test_export_and_serving_config_commands(tmp_path):
    assert cli.main(["export", str(tmp_path / "no-run"), "--base-path", str(tmp_path / "m")]) == 2
    assert cli.main(["serving-config", "--model-name", "digits", "--version-policy", "specific", "--versions", "1",
                     "2", "--label", "stable=1", "--out", str(tmp_path / "cfg")]) == 0
    from serving.config import read_models_config

    (config,) = read_models_config(str(tmp_path / "cfg" / "models.config")).model_config_list.config
    assert config.base_path == "/models/digits" and dict(config.version_labels) == {"stable": 1}
    assert cli.main(["serving-config", "--model-name", "d", "--label", "stable", "--out", str(tmp_path)]) == 2


def test_predict_against_no_server_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    picture = tmp_path / "img.png"
    picture.write_bytes(png(images(1)[0]))
    assert cli.main(["predict", "--server", "127.0.0.1:1", "--model", "m", str(picture), "--timeout", "2"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("kcnn predict: UNAVAILABLE: ") and "is the server running" in error
    assert cli.main(["predict", "--server", "127.0.0.1:1", "--model", "m", str(tmp_path / "missing.png")]) == 2


@pytest.mark.slow
def test_demo_trains_exports_serves_and_served_accuracy_equals_the_trained_one(tmp_path):
    import keras

    import kcnn
    from pipelines.preprocess import Preprocessing
    from serving.demo import run_demo
    from serving.export import export

    # A newer version already there (an untrained model): the demo must serve and report its own version 1.
    keras.utils.set_random_seed(0)
    untrained = kcnn.build("lenet5", num_classes=10, input_shape=(32, 32, 1))
    export(untrained, str(tmp_path / "models" / "digits"), class_names=[str(i) for i in range(10)],
           preprocessing=Preprocessing(32, 1), version=2, warmup=False)
    result = run_demo(str(tmp_path), extra_train_args=["--set", "train.epochs=1", "--set", "train.steps_per_epoch=5"])
    assert result["test_images"] == 360 and result["served_version"] == 1
    # Serving preprocesses in the graph with the training evaluation code: the same images, the same answers.
    assert abs(result["served_accuracy"] - result["trained_test_accuracy"]) <= 1 / 360
    assert os.path.exists(os.path.join(result["export_path"], "assets.extra", "tf_serving_warmup_requests"))


# tensorflow/serving's image runs tf_serving_entrypoint.sh (tensorflow_serving/tools/docker/Dockerfile):
#   tensorflow_model_server --port=8500 --rest_api_port=8501 --model_name=${MODEL_NAME} \
#       --model_base_path=${MODEL_BASE_PATH}/${MODEL_NAME} "$@"
# with the Dockerfile's CMD as "$@".
ENTRYPOINT_ARGS = ["--port=8500", "--rest_api_port=8501", "--model_name=${MODEL_NAME}",
                   "--model_base_path=${MODEL_BASE_PATH}/${MODEL_NAME}"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_kcnn_serve_runs_the_dockerfiles_exact_command_line(tmp_path):
    from serving_helpers import REPO

    dockerfile = open(os.path.join(REPO, "Dockerfile")).read()
    cmd = json.loads(re.search(r"^CMD (\[.*?\])", dockerfile, re.M | re.S).group(1).replace("\\\n", ""))
    model_name = re.search(r"^ARG MODEL_NAME=(\S+)$", dockerfile, re.M).group(1)
    # The container's paths and ports, moved to this machine: /config and /models under tmp_path, free ports.
    config_dir, models_root = tmp_path / "config", tmp_path / "models"
    config_dir.mkdir()
    for name in ("models.config", "batching.config", "monitoring.config"):
        text = open(os.path.join(REPO, "serving", "docker", name)).read()
        (config_dir / name).write_text(text.replace('"/models/', f'"{models_root}/'))
    exported(str(models_root / model_name), seed=1)
    grpc_port, rest_port = free_port(), free_port()
    env_values = {"${MODEL_NAME}": model_name, "${MODEL_BASE_PATH}": str(models_root)}
    args = []
    for arg in ENTRYPOINT_ARGS + cmd:
        for key, value in env_values.items():
            arg = arg.replace(key, value)
        args.append(arg.replace("=/config/", f"={config_dir}/").replace("=8500", f"={grpc_port}")
                    .replace("=8501", f"={rest_port}"))
    assert [a.split("=")[0] for a in args] == [a.split("=")[0] for a in ENTRYPOINT_ARGS + cmd]  # same flags
    server = subprocess.Popen(kcnn("serve", *args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=ENV)
    try:
        deadline, line = time.time() + 120, ""
        while "on gRPC" not in line and time.time() < deadline:
            line = server.stdout.readline()
            if not line and server.poll() is not None:
                break
        assert "on gRPC" in line, "kcnn serve did not start with the Dockerfile's command line"
        from serving.client import RestClient

        assert RestClient(f"127.0.0.1:{rest_port}", model_name).status() == {1: "AVAILABLE"}
        with Client(f"127.0.0.1:{grpc_port}", model_name) as client:
            assert client.predict(images(2))[0].labels[0] in CLASSES
        with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/monitoring/prometheus/metrics", timeout=10) as r:
            assert f':tensorflow:serving:request_count{{model_name="{model_name}",status="OK"}}' in r.read().decode()
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
    finally:
        if server.poll() is None:
            server.kill()


def test_serve_takes_tf_servings_boolean_syntax():
    def parsed(*flags):
        return cli.build_parser().parse_args(["serve", "--model_base_path=/m", *flags])

    assert parsed("--enable_batching=true").enable_batching is True
    assert parsed("--enable_batching=false").enable_batching is False
    assert parsed("--enable_batching").enable_batching is True
    assert parsed().enable_batching is False and parsed().enable_model_warmup is True
    assert parsed("--enable_model_warmup=false").enable_model_warmup is False
    with pytest.raises(SystemExit):
        parsed("--enable_batching=maybe")


@pytest.mark.slow
def test_predict_names_the_bad_file_and_still_answers_the_others(tmp_path, capsys):
    from serving.config import ModelEntry
    from serving.server import Server

    base = str(tmp_path / "shapes")
    exported(base, seed=1)
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    good.write_bytes(png(images(1)[0]))
    bad.write_bytes(b"not an image")
    with Server([ModelEntry("shapes", base)], port=0, poll_seconds=0) as server:
        target = f"127.0.0.1:{server.port}"
        assert cli.main(["predict", "--server", target, "--model", "shapes", str(good), str(bad), "--top-k", "1"]) == 1
        out, err = capsys.readouterr()
        assert out.startswith(f"{good}: ") and str(bad) not in out
        # checked before sending: the file is named and nothing reaches the server for it
        assert f"kcnn predict: {bad}: not a JPEG, PNG, GIF, BMP or WebP image" in err
        truncated = tmp_path / "truncated.png"
        truncated.write_bytes(png(images(1)[0])[:40])  # a PNG's header, then nothing: the server's decode says so
        assert cli.main(["predict", "--server", target, "--model", "shapes", str(good), str(truncated)]) == 1
        assert f"kcnn predict: {truncated}: INVALID_ARGUMENT: " in capsys.readouterr().err
        assert cli.main(["predict", "--server", target, "--model", "shapes", str(bad)]) == 1  # alone, too
        assert capsys.readouterr().err == (f"kcnn predict: {bad}: not a JPEG, PNG, GIF, BMP or WebP image (the "
                                           "formats the exported graph decodes); convert it or leave it out\n")
        assert cli.main(["predict", "--server", target, "--model", "nope", str(good)]) == 1
        assert "Check --model and --version" in capsys.readouterr().err  # CLI words, not Python methods
    import keras
    from serving_helpers import SPEC

    import kcnn as kcnn_package
    from serving.export import export

    keras.utils.set_random_seed(0)
    model = kcnn_package.build("lenet5", num_classes=4, input_shape=(32, 32, 3))
    export(model, str(tmp_path / "four"), class_names=["a", "b", "c", "d"], preprocessing=SPEC, top_k=2)
    with Server([ModelEntry("four", str(tmp_path / "four"))], port=0, poll_seconds=0) as server:
        assert cli.main(["predict", "--server", f"127.0.0.1:{server.port}", "--model", "four", str(good),
                         "--top-k", "3"]) == 2
    assert ("--top-k 3 is more than the 2 labels the model was exported to return; use --top-k 2 or less, or "
            "re-export with kcnn export --top-k 3") in capsys.readouterr().err
