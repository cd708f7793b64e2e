"""TF Serving configs round-trip through their protos; Dockerfile and manifests agree with them (checked statically)."""

from __future__ import annotations

import os
import re

import pytest
import yaml

from serving import config as sc

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_models_config_round_trips_every_version_policy_and_labels(tmp_path):
    models = [sc.ModelEntry("digits", "/models/digits"),
              sc.ModelEntry("shapes", "/models/shapes", "specific", (1, 2), {"stable": 1, "canary": 2}),
              sc.ModelEntry("all", "/models/all", "all")]
    paths = sc.write_configs(str(tmp_path), models, sc.Batching(16, 500, 2, 10, (4, 8, 16)))
    parsed = sc.read_models_config(paths["models.config"])
    assert parsed == sc.model_server_config(models)
    configs = {c.name: c for c in parsed.model_config_list.config}
    assert configs["digits"].model_version_policy.latest.num_versions == 1
    assert list(configs["shapes"].model_version_policy.specific.versions) == [1, 2]
    assert dict(configs["shapes"].version_labels) == {"stable": 1, "canary": 2}
    assert configs["all"].model_version_policy.HasField("all")
    assert all(c.model_platform == "tensorflow" for c in parsed.model_config_list.config)
    assert sc.read_batching_config(paths["batching.config"]) == sc.Batching(16, 500, 2, 10, (4, 8, 16))
    monitoring = sc.read_monitoring_config(paths["monitoring.config"])
    assert monitoring.prometheus_config.enable and monitoring.prometheus_config.path == sc.PROMETHEUS_PATH


def test_batching_config_text_is_tf_servings_wrapper_format(tmp_path):
    text = open(sc.write_configs(str(tmp_path), [sc.ModelEntry("m", "/models/m")],
                                 sc.Batching(8, 100, 1, 5, (2, 8)))["batching.config"]).read()
    assert "max_batch_size {\n  value: 8\n}" in text
    assert "batch_timeout_micros {\n  value: 100\n}" in text
    assert "allowed_batch_sizes: 2\nallowed_batch_sizes: 8" in text


@pytest.mark.parametrize("make, message", [
    (lambda: sc.ModelEntry("m", "/m", "newest"), "version_policy must be one of latest, all, specific"),
    (lambda: sc.ModelEntry("m", "/m", "specific"), "version_policy 'specific' needs the versions to serve"),
    (lambda: sc.ModelEntry("m", "/m", "specific", (1,), {"canary": 2}), "label 'canary' points at version 2"),
    (lambda: sc.Batching(8, allowed_batch_sizes=(2, 4)), "allowed_batch_sizes must increase and end with"),
    (lambda: sc.Batching(0), "batching max_batch_size must be >= 1, got 0"),
])
def test_bad_serving_configs_are_refused(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


def read(path):
    with open(os.path.join(REPO, path)) as handle:
        return handle.read()


def test_committed_docker_configs_are_what_serving_config_generates(tmp_path):
    expected = sc.write_configs(str(tmp_path), [sc.ModelEntry("digits", "/models/digits")],
                                sc.Batching(allowed_batch_sizes=(1, 2, 4, 8, 16, 32)))
    for name, path in expected.items():
        assert read(f"serving/docker/{name}") == open(path).read(), name


def test_dockerfile_pins_tf_serving_and_agrees_with_the_configs():
    dockerfile = read("Dockerfile")
    assert f"ARG TF_SERVING_VERSION={sc.TF_SERVING_VERSION}" in dockerfile
    assert "FROM tensorflow/serving:${TF_SERVING_VERSION}${VARIANT}" in dockerfile
    assert re.search(r"^EXPOSE 8500 8501$", dockerfile, re.M)
    assert (sc.GRPC_PORT, sc.REST_PORT) == (8500, 8501)
    model_name = re.search(r"^ARG MODEL_NAME=(\S+)$", dockerfile, re.M).group(1)
    models = sc.read_models_config(os.path.join(REPO, "serving/docker/models.config"))
    (entry,) = models.model_config_list.config
    assert entry.name == model_name and entry.base_path == f"{sc.MODELS_ROOT}/{model_name}"
    assert "COPY models/${MODEL_NAME} /models/${MODEL_NAME}" in dockerfile
    for flag in ("--model_config_file=/config/models.config", "--batching_parameters_file=/config/batching.config",
                 "--monitoring_config_file=/config/monitoring.config", "--enable_batching=true"):
        assert flag in dockerfile
    for name in ("models.config", "batching.config", "monitoring.config"):
        assert f"serving/docker/{name}" in dockerfile and os.path.exists(os.path.join(REPO, "serving/docker", name))


def test_kubernetes_manifests_parse_and_agree_with_the_image_and_ports():
    documents = list(yaml.safe_load_all(read("serving/deploy/gke.yaml")))
    kinds = {d["kind"]: d for d in documents}
    assert set(kinds) == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    (container,) = kinds["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["image"].endswith(f":{sc.TF_SERVING_VERSION}")
    assert {p["containerPort"] for p in container["ports"]} == {sc.GRPC_PORT, sc.REST_PORT}
    model = sc.read_models_config(os.path.join(REPO, "serving/docker/models.config")).model_config_list.config[0].name
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": f"/v1/models/{model}", "port": sc.REST_PORT}
    assert "cpu" in container["resources"]["requests"]
    assert {p["port"] for p in kinds["Service"]["spec"]["ports"]} == {sc.GRPC_PORT, sc.REST_PORT}
    selector = kinds["Deployment"]["spec"]["selector"]["matchLabels"]
    assert kinds["Service"]["spec"]["selector"] == selector
    assert kinds["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == kinds["Deployment"]["metadata"]["name"]
    guide = read("serving/deploy/vertex.md")
    assert f"/v1/models/{model}:predict" in guide and "predict_image_bytes" in guide


def test_batching_file_with_every_batching_parameters_field_is_read(tmp_path):
    # Every field of TF Serving's BatchingParameters (session_bundle_config.proto), in its text format.
    path = tmp_path / "batching.config"
    path.write_text("max_batch_size { value: 64 }\nbatch_timeout_micros { value: 500 }\n"
                    "max_enqueued_batches { value: 7 }\nnum_batch_threads { value: 2 }\n"
                    'thread_pool_name { value: "pool" }\nallowed_batch_sizes: 8\nallowed_batch_sizes: 16\n'
                    "pad_variable_length_inputs: true\nenable_large_batch_splitting { value: true }\n"
                    "max_execution_batch_size { value: 16 }\n")
    batching = sc.read_batching_config(str(path))
    assert (batching.max_batch_size, batching.batch_timeout_micros, batching.max_enqueued_batches,
            batching.num_batch_threads, batching.allowed_batch_sizes) == (64, 500, 7, 2, (8, 16))
    assert batching.enable_large_batch_splitting and batching.execution_batch_size == 16
    assert batching.thread_pool_name == "pool" and batching.pad_variable_length_inputs
    assert [f.name for f in sc.BatchingParameters.DESCRIPTOR.fields] == [name for _, name, _ in sc.BATCHING_FIELDS]
    with pytest.raises(ValueError, match="allowed_batch_sizes must increase and end with max_execution_batch_size"):
        sc.Batching(64, allowed_batch_sizes=(8, 32), enable_large_batch_splitting=True, max_execution_batch_size=16)


def test_model_config_file_is_re_read_when_polled(tmp_path):
    import time

    from toy_models import toy

    from serving.server import Server

    toy(str(tmp_path / "a"))
    toy(str(tmp_path / "b"))
    config = tmp_path / "models.config"
    sc.write_configs(str(tmp_path / "one"), [sc.ModelEntry("a", str(tmp_path / "a"))], monitoring=False)
    os.replace(tmp_path / "one" / "models.config", config)
    with Server(sc.models_from_config(str(config)), port=0, poll_seconds=0.1, model_config_file=str(config),
                config_poll_seconds=0.1) as server:
        assert set(server.manager.entries) == {"a"}
        sc.write_configs(str(tmp_path / "two"), [sc.ModelEntry("a", str(tmp_path / "a")),
                                                  sc.ModelEntry("b", str(tmp_path / "b"))], monitoring=False)
        os.replace(tmp_path / "two" / "models.config", config)
        deadline = time.monotonic() + 30
        while "b" not in server.manager.entries or server.manager.status("b").get(1, None) is None or \
                server.manager.status("b")[1].state != 30:  # 30: AVAILABLE
            assert time.monotonic() < deadline
            time.sleep(0.05)
