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
from pipelines.run_dir import atomic_write

# The TF Serving image kcnn's Dockerfile and manifests pin: the TensorFlow kcnn exports with.
TF_SERVING_VERSION = "2.21.0"
GRPC_PORT = 8500
REST_PORT = 8501
MODELS_ROOT = "/models"
PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
VERSION_POLICIES = ("latest", "all", "specific")


INT64, BOOL, STRING = ".google.protobuf.Int64Value", ".google.protobuf.BoolValue", ".google.protobuf.StringValue"
# The fields of TF Serving's BatchingParameters (servables/tensorflow/session_bundle_config.proto), and no others:
# a --batching_parameters_file naming another field is refused, as TF Serving's text-format parser refuses it.
BATCHING_FIELDS = (
    (1, "max_batch_size", INT64), (2, "batch_timeout_micros", INT64), (3, "max_enqueued_batches", INT64),
    (4, "num_batch_threads", INT64), (5, "thread_pool_name", STRING), (6, "allowed_batch_sizes", "repeated int64"),
    (7, "pad_variable_length_inputs", "bool"), (8, "enable_large_batch_splitting", BOOL),
    (9, "max_execution_batch_size", INT64),
)


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
    for number, name, kind in BATCHING_FIELDS:
        if kind.startswith("."):
            batching.field.add(name=name, number=number, type=F.TYPE_MESSAGE, type_name=kind, label=F.LABEL_OPTIONAL)
        elif kind == "repeated int64":
            batching.field.add(name=name, number=number, type=F.TYPE_INT64, label=F.LABEL_REPEATED)
        else:
            batching.field.add(name=name, number=number, type=F.TYPE_BOOL, label=F.LABEL_OPTIONAL)
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
    # TF Serving's large-batch splitting: a request of up to max_batch_size rows is cut into
    # batches of at most max_execution_batch_size (default: the largest allowed size, else max_batch_size).
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int = 0
    # Accepted for compatibility; kcnn runs batches on its own threads and needs no padding, so these change nothing.
    thread_pool_name: str = ""
    pad_variable_length_inputs: bool = False

    @property
    def execution_batch_size(self) -> int:
        if not self.enable_large_batch_splitting:
            return self.max_batch_size
        if self.max_execution_batch_size:
            return self.max_execution_batch_size
        return self.allowed_batch_sizes[-1] if self.allowed_batch_sizes else self.max_batch_size

    def __post_init__(self):
        for name in ("max_batch_size", "num_batch_threads", "max_enqueued_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"batching {name} must be >= 1, got {getattr(self, name)}")
        if self.batch_timeout_micros < 0:
            raise ValueError(f"batching batch_timeout_micros must be >= 0, got {self.batch_timeout_micros}")
        sizes = list(self.allowed_batch_sizes)
        if self.enable_large_batch_splitting:
            limit, what = self.execution_batch_size, "max_execution_batch_size"
        else:
            limit, what = self.max_batch_size, "max_batch_size"
        if sizes and (sizes != sorted(sizes) or sizes[-1] != limit):
            raise ValueError(f"allowed_batch_sizes must increase and end with {what} ({limit}), as TF Serving "
                             f"requires; got {sizes}")
        if self.enable_large_batch_splitting and self.execution_batch_size > self.max_batch_size:
            raise ValueError(f"max_execution_batch_size ({self.execution_batch_size}) must not exceed max_batch_size "
                             f"({self.max_batch_size})")


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
    if batching.enable_large_batch_splitting:
        message.enable_large_batch_splitting.value = True
        if batching.max_execution_batch_size:
            message.max_execution_batch_size.value = batching.max_execution_batch_size
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
        atomic_write(paths[name], text_format.MessageToString(message))
    return paths


def read_text_proto(path: str, message):
    """``message`` read from a text-format file, or ValueError naming the file and the first problem (an unknown
    field, a bad value), as TF Serving's ParseProtoTextFile refuses it with "Invalid protobuf file"."""
    with open(path) as handle:
        text = handle.read()
    try:
        return text_format.Parse(text, message)
    except text_format.ParseError as error:
        raise ValueError(f"Invalid protobuf file: '{path}': {error}") from None


def read_models_config(path: str) -> model_server_config_pb2.ModelServerConfig:
    return read_text_proto(path, model_server_config_pb2.ModelServerConfig())


def read_batching_config(path: str) -> Batching:
    """A --batching_parameters_file; unset fields take TF Serving's defaults (BatchingSessionOptions)."""
    message = read_text_proto(path, BatchingParameters())
    return Batching(max_batch_size=message.max_batch_size.value if message.HasField("max_batch_size") else 1000,
                    batch_timeout_micros=message.batch_timeout_micros.value,
                    num_batch_threads=message.num_batch_threads.value or 4,
                    max_enqueued_batches=message.max_enqueued_batches.value or 10,
                    allowed_batch_sizes=tuple(message.allowed_batch_sizes),
                    enable_large_batch_splitting=message.enable_large_batch_splitting.value,
                    max_execution_batch_size=message.max_execution_batch_size.value,
                    thread_pool_name=message.thread_pool_name.value,
                    pad_variable_length_inputs=message.pad_variable_length_inputs)


def model_entry(model) -> ModelEntry:
    """One ModelConfig of a ModelServerConfig as the ModelEntry the server serves."""
    policy = model.model_version_policy.WhichOneof("policy_choice") or VERSION_POLICIES[0]
    numbers = (tuple(model.model_version_policy.specific.versions) if policy == "specific" else
               (model.model_version_policy.latest.num_versions or 1,) if policy == "latest" else ())
    return ModelEntry(model.name, model.base_path, policy, numbers, dict(model.version_labels))


def models_from_config(path: str) -> list[ModelEntry]:
    """The models of a --model_config_file (ModelServerConfig in text format)."""
    return [model_entry(model) for model in read_models_config(path).model_config_list.config]


def read_monitoring_config(path: str):
    return read_text_proto(path, MonitoringConfig())
