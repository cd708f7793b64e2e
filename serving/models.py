"""Model lifecycle as TensorFlow Serving runs it: numeric version directories, version policies, labels,
file-system polling, and a new version loaded (and warmed up) before the old one is unloaded.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field

import grpc
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2, prediction_log_pb2

from serving.config import ModelEntry
from serving.export import WARMUP_FILE, signature_defs, versions

log = logging.getLogger(__name__)
State = get_model_status_pb2.ModelVersionStatus.State


class ServingError(Exception):
    """A request that cannot be served: a gRPC status code and TF Serving's message for it."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Servable:
    """One loaded version: its signatures (callables) and their SignatureDefs."""

    name: str
    version: int
    path: str
    module: object
    signature_defs: dict
    inputs: dict = field(default_factory=dict)  # signature -> {input: (dtype, rank)}

    def signature(self, name: str):
        if name not in self.signature_defs or name.startswith("__"):
            raise ServingError(grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{name}" not found.')
        return self.module.signatures[name]


def load_servable(name: str, version: int, path: str) -> Servable:
    module = tf.saved_model.load(path)
    defs = {k: v for k, v in signature_defs(path).items() if not k.startswith("__")}
    inputs = {}
    for key, definition in defs.items():
        inputs[key] = {alias: (tf.dtypes.as_dtype(info.dtype),
                               None if info.tensor_shape.unknown_rank else len(info.tensor_shape.dim))
                       for alias, info in definition.inputs.items()}
    servable = Servable(name, version, path, module, defs, inputs)
    _warm_up(servable)
    return servable


def _warm_up(servable: Servable) -> int:
    """Replay assets.extra/tf_serving_warmup_requests, as TF Serving does before a version goes AVAILABLE."""
    path = os.path.join(servable.path, WARMUP_FILE)
    if not os.path.exists(path):
        return 0
    count = 0
    for record in tf.data.TFRecordDataset(path):
        entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = entry.predict_log.request
        function = servable.signature(request.model_spec.signature_name or "serving_default")
        function(**{k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()})
        count += 1
    return count


@dataclass
class VersionStatus:
    state: int
    error: str = ""


class ModelManager:
    """Loads and unloads versions of each configured model and resolves a request's model_spec to one."""

    def __init__(self, models: list[ModelEntry], poll_seconds: float = 1.0):
        self.entries = {m.name: m for m in models}
        self.poll_seconds = poll_seconds
        self._servables: dict[str, dict[int, Servable]] = {m.name: {} for m in models}
        self._status: dict[str, dict[int, VersionStatus]] = {m.name: {} for m in models}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = None

    # -------------------------------------------------------------------- lifecycle
    def wanted_versions(self, entry: ModelEntry) -> list[int]:
        found = versions(entry.base_path)
        if entry.version_policy == "all":
            return found
        if entry.version_policy == "specific":
            return [v for v in found if v in set(entry.versions)]
        keep = int(entry.versions[0]) if entry.versions else 1
        return found[-keep:]

    def poll_once(self) -> None:
        for name, entry in self.entries.items():
            wanted = self.wanted_versions(entry)
            with self._lock:
                loaded = set(self._servables[name])
            for version in wanted:
                if version in loaded or self._status[name].get(version, VersionStatus(0)).state == State.END:
                    continue
                self._load(entry, version)
            with self._lock:
                for version in sorted(set(self._servables[name]) - set(wanted)):
                    # Unload only once a wanted version is serving, so no request finds nothing.
                    if any(v in self._servables[name] for v in wanted) or not wanted:
                        self._status[name][version] = VersionStatus(State.UNLOADING)
                        del self._servables[name][version]
                        self._status[name][version] = VersionStatus(State.END)
                        log.info("unloaded %s version %d", name, version)

    def _load(self, entry: ModelEntry, version: int) -> None:
        path = os.path.join(entry.base_path, str(version))
        with self._lock:
            self._status[entry.name][version] = VersionStatus(State.LOADING)
        try:
            servable = load_servable(entry.name, version, path)
        except Exception as error:  # a broken version must not take the server down
            log.error("could not load %s version %d from %s: %s", entry.name, version, path, error)
            with self._lock:
                self._status[entry.name][version] = VersionStatus(State.END, f"{type(error).__name__}: {error}")
            return
        with self._lock:
            self._servables[entry.name][version] = servable
            self._status[entry.name][version] = VersionStatus(State.AVAILABLE)
        log.info("serving %s version %d from %s", entry.name, version, path)

    def start(self) -> None:
        self.poll_once()
        if self.poll_seconds > 0:
            self._thread = threading.Thread(target=self._poll_loop, name="kcnn-model-poller", daemon=True)
            self._thread.start()

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll_once()
            except Exception:  # keep polling whatever one pass met
                log.exception("model poll failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    # -------------------------------------------------------------------- look-ups
    def resolve(self, spec) -> Servable:
        """The servable a ModelSpec names: a version, a version label, or the latest."""
        name = spec.name
        if name not in self.entries:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})")
        with self._lock:
            servables = dict(self._servables[name])
        which = spec.WhichOneof("version_choice")
        if which == "version":
            version = spec.version.value
            if version not in servables:
                raise ServingError(grpc.StatusCode.NOT_FOUND,
                                   f"Servable not found for request: Specific({name}, {version})")
            return servables[version]
        if which == "version_label":
            label = spec.version_label
            labels = self.entries[name].version_labels
            if label not in labels:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Unrecognized servable version label: {label}")
            if labels[label] not in servables:
                raise ServingError(grpc.StatusCode.NOT_FOUND,
                                   f"Servable not found for request: Specific({name}, {labels[label]})")
            return servables[labels[label]]
        if not servables:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})")
        return servables[max(servables)]

    def status(self, name: str, version: int | None = None) -> dict[int, VersionStatus]:
        if name not in self.entries:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}")
        with self._lock:
            status = dict(self._status[name])
        if version is not None:
            if version not in status:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find version {version} of model {name}")
            return {version: status[version]}
        return status


def check_inputs(servable: Servable, signature: str, inputs: dict) -> dict:
    """TF Serving's request checks: the input names, then each tensor's dtype and rank."""
    expected = servable.inputs[signature]
    if set(inputs) != set(expected):
        sent, wanted = sorted(inputs), sorted(expected)
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, (
            f"input size does not match signature: {len(sent)}!={len(wanted)} len({{{','.join(sent)}}}) != "
            f"len({{{','.join(wanted)}}}). Sent extra: {{{','.join(sorted(set(sent) - set(wanted)))}}}. "
            f"Missing but required: {{{','.join(sorted(set(wanted) - set(sent)))}}}."))
    arrays = {}
    for index, (alias, proto) in enumerate(sorted(inputs.items())):
        try:
            array = tf.make_ndarray(proto)
        except Exception:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"tensor parsing error: {alias}") from None
        dtype, rank = expected[alias]
        got = tf.dtypes.as_dtype(proto.dtype)
        if got != dtype:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Expects arg[{index}] to be {dtype.name} but {got.name} is provided")
        if rank is not None and array.ndim != rank:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"input '{alias}' must have rank {rank}, got shape {list(array.shape)}")
        if array.ndim == 0 or array.shape[0] == 0:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"input '{alias}' holds an empty batch")
        arrays[alias] = array
    return arrays


def run_signature(function, arrays: dict) -> dict:
    """Call a signature on numpy inputs; TensorFlow's own errors (bad image bytes...) become INVALID_ARGUMENT."""
    try:
        outputs = function(**{k: tf.constant(v) for k, v in arrays.items()})
    except tf.errors.InvalidArgumentError as error:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, tf_error_message(error)) from None
    return {k: v.numpy() for k, v in outputs.items()}


def tf_error_message(error: tf.errors.OpError) -> str:
    """The op's own complaint from a TensorFlow error, without graph-execution boilerplate and node names."""
    noise = ("Graph execution error:", "Detected at node", "<stack traces unavailable>", "[[", "File ")
    lines = [line.strip() for line in error.message.splitlines()]
    useful = [line for line in lines if line and not line.startswith(noise)]
    return useful[-1] if useful else lines[0]


def batch_size(arrays: dict) -> int:
    return int(next(iter(arrays.values())).shape[0])

