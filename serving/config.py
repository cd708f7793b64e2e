"""TensorFlow Serving configuration files in its text-protobuf format.

``models.config`` comes from ``ModelServerConfig``, the proto tensorflow-serving-api
ships. ``batching.config`` (``BatchingParameters``) and ``monitoring.config``
(``MonitoringConfig``) are defined in TF Serving's source but not shipped in the
pip package, so kcnn declares the same messages (same names, fields and numbers)
with protobuf's descriptor API; text_format then writes and parses all three.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from google.protobuf import descriptor_pb2, descriptor_pool, text_format, wrappers_pb2
from google.protobuf import message_factory
from tensorflow_serving.config import model_server_config_pb2

# The TF Serving image kcnn's Dockerfile and manifests pin: the TensorFlow kcnn exports with.
TF_SERVING_VERSION = "2.21.0"
GRPC_PORT = 8500
REST_PORT = 8501
MODELS_ROOT = "/models"
PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
VERSION_POLICIES = ("latest", "all", "specific")


def _declare_messages():
    """BatchingParameters and MonitoringConfig, as TF Serving's session_bundle_config.proto and
    monitoring_config.proto define them."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(descriptor_pb2.FileDescriptorProto.FromString(
        wrappers_pb2.DESCRIPTOR.serialized_pb).SerializeToString())
    proto = descriptor_pb2.FileDescriptorProto(name="kcnn/serving_configs.proto", package="tensorflow.serving",
                                               syntax="proto3", dependency=["google/protobuf/wrappers.proto"])
    F = descriptor_pb2.FieldDescriptorProto
    batching = proto.message_type.add(name="BatchingParameters")
    for number, name, kind in ((1, "max_batch_size", ".google.protobuf.Int64Value"),
                               (2, "batch_timeout_micros", ".google.protobuf.Int64Value"),
                               (3, "max_enqueued_batches", ".google.protobuf.Int64Value"),
                               (4, "num_batch_threads", ".google.protobuf.Int64Value"),
                               (5, "thread_pool_name", ".google.protobuf.StringValue")):
        batching.field.add(name=name, number=number, type=F.TYPE_MESSAGE, type_name=kind, label=F.LABEL_OPTIONAL)
    batching.field.add(name="allowed_batch_sizes", number=6, type=F.TYPE_INT64, label=F.LABEL_REPEATED)
    batching.field.add(name="pad_variable_length_inputs", number=7, type=F.TYPE_BOOL, label=F.LABEL_OPTIONAL)
    prometheus = proto.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=F.TYPE_BOOL, label=F.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    monitoring = proto.message_type.add(name="MonitoringConfig")
    monitoring.field.add(name="prometheus_config", number=1, type=F.TYPE_MESSAGE,
                         type_name=".tensorflow.serving.PrometheusConfig", label=F.LABEL_OPTIONAL)
    pool.Add(proto)
    return (message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")),
            message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")))


BatchingParameters, MonitoringConfig = _declare_messages()


@dataclass(frozen=True)
class ModelEntry:
    """One model of ``models.config``: where its versions live and which are served."""

    name: str
    base_path: str
    version_policy: str = "latest"
    versions: tuple = ()  # for "specific", or how many for "latest" (one number)
    version_labels: dict = field(default_factory=dict)  # label -> version, e.g. {"stable": 1, "canary": 2}

    def __post_init__(self):
        if self.version_policy not in VERSION_POLICIES:
            raise ValueError(f"version_policy must be one of {', '.join(VERSION_POLICIES)}, "
                             f"got {self.version_policy!r}")
        if self.version_policy == "specific" and not self.versions:
            raise ValueError(f"model {self.name!r}: version_policy 'specific' needs the versions to serve")
        for label, version in self.version_labels.items():
            if self.version_policy == "specific" and version not in self.versions:
                raise ValueError(f"model {self.name!r}: label {label!r} points at version {version}, which the "
                                 f"specific policy does not serve ({list(self.versions)})")


@dataclass(frozen=True)
class Batching:
    """Server-side batching (TF Serving's --enable_batching with --batching_parameters_file)."""

    max_batch_size: int = 32
    batch_timeout_micros: int = 2000
    num_batch_threads: int = 4
    max_enqueued_batches: int = 100
    allowed_batch_sizes: tuple = ()

    def __post_init__(self):
        for name in ("max_batch_size", "num_batch_threads", "max_enqueued_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"batching {name} must be >= 1, got {getattr(self, name)}")
        if self.batch_timeout_micros < 0:
            raise ValueError(f"batching batch_timeout_micros must be >= 0, got {self.batch_timeout_micros}")
        sizes = list(self.allowed_batch_sizes)
        if sizes and (sizes != sorted(sizes) or sizes[-1] != self.max_batch_size):
            raise ValueError("allowed_batch_sizes must increase and end with max_batch_size "
                             f"({self.max_batch_size}), as TF Serving requires; got {sizes}")


def model_server_config(models: list[ModelEntry]) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    for entry in models:
        model = config.model_config_list.config.add(name=entry.name, base_path=entry.base_path,
                                                    model_platform="tensorflow")
        policy = model.model_version_policy
        if entry.version_policy == "latest":
            policy.latest.num_versions = int(entry.versions[0]) if entry.versions else 1
        elif entry.version_policy == "all":
            policy.all.SetInParent()
        else:
            policy.specific.versions.extend(int(v) for v in entry.versions)
        for label, version in entry.version_labels.items():
            model.version_labels[label] = int(version)
    return config


def batching_parameters(batching: Batching):
    message = BatchingParameters()
    message.max_batch_size.value = batching.max_batch_size
    message.batch_timeout_micros.value = batching.batch_timeout_micros
    message.num_batch_threads.value = batching.num_batch_threads
    message.max_enqueued_batches.value = batching.max_enqueued_batches
    message.allowed_batch_sizes.extend(batching.allowed_batch_sizes)
    return message


def monitoring_config(path: str = PROMETHEUS_PATH):
    message = MonitoringConfig()
    message.prometheus_config.enable = True
    message.prometheus_config.path = path
    return message


def write_configs(directory: str, models: list[ModelEntry], batching: Batching | None = None,
                  monitoring: bool = True) -> dict:
    """Write models.config (and batching.config, monitoring.config) into ``directory``; returns their paths."""
    os.makedirs(directory, exist_ok=True)
    files = {"models.config": model_server_config(models)}
    if batching is not None:
        files["batching.config"] = batching_parameters(batching)
    if monitoring:
        files["monitoring.config"] = monitoring_config()
    paths = {}
    for name, message in files.items():
        paths[name] = os.path.join(directory, name)
        with open(paths[name], "w") as handle:
            handle.write(text_format.MessageToString(message))
    return paths


def read_models_config(path: str) -> model_server_config_pb2.ModelServerConfig:
    with open(path) as handle:
        return text_format.Parse(handle.read(), model_server_config_pb2.ModelServerConfig())


def read_batching_config(path: str) -> Batching:
    with open(path) as handle:
        message = text_format.Parse(handle.read(), BatchingParameters())
    return Batching(max_batch_size=message.max_batch_size.value or 32,
                    batch_timeout_micros=message.batch_timeout_micros.value,
                    num_batch_threads=message.num_batch_threads.value or 4,
                    max_enqueued_batches=message.max_enqueued_batches.value or 100,
                    allowed_batch_sizes=tuple(message.allowed_batch_sizes))


def read_monitoring_config(path: str):
    with open(path) as handle:
        return text_format.Parse(handle.read(), MonitoringConfig())
