"""Model lifecycle as TensorFlow Serving runs it: numeric version directories, version policies, labels,
file-system polling, and a new version loaded (and warmed up) before the old one is unloaded.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field

import grpc
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2, prediction_log_pb2

from serving.config import ModelEntry, model_entry
from serving.export import WARMUP_FILE, signature_defs, versions
from serving.tensors import TensorParseError, from_request_proto

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
    all_signature_defs: dict = field(default_factory=dict)  # with __saved_model_init_op, as metadata lists them
    warmup_records: int = 0

    def has_signature(self, name: str) -> bool:
        """Whether ``name`` is a serving signature (the SavedModel's ``__saved_model_init_op`` is not)."""
        return name in self.signature_defs and not name.startswith("__")

    def signature(self, name: str):
        if not self.has_signature(name):
            raise ServingError(grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{shown(name)}" not found.')
        return self.module.signatures[name]


def load_servable(name: str, version: int, path: str, warm_up: bool = True, tags=("serve",)) -> Servable:
    all_defs = signature_defs(path, tags)  # first: a SavedModel without that tag-set fails with TF's message
    module = tf.saved_model.load(path, tags=list(tags))
    defs = {k: v for k, v in all_defs.items() if not k.startswith("__")}
    inputs = {}
    for key, definition in defs.items():
        inputs[key] = {alias: (tf.dtypes.as_dtype(info.dtype),
                               None if info.tensor_shape.unknown_rank else len(info.tensor_shape.dim))
                       for alias, info in definition.inputs.items()}
    servable = Servable(name, version, path, module, defs, inputs, all_defs)
    if warm_up:
        servable.warmup_records = _warm_up(servable)
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


@dataclass(frozen=True)
class Lifecycle:
    """How versions load: TF Serving's --enable_model_warmup, --max_num_load_retries and
    --load_retry_interval_micros (defaults as TF Serving's: warm-up on, 5 retries, 60 s apart)."""

    enable_warmup: bool = True
    max_num_load_retries: int = 5
    load_retry_interval_seconds: float = 60.0
    saved_model_tags: tuple = ("serve",)  # --saved_model_tags: the tag-set of the MetaGraph to load


@dataclass
class _Failure:
    attempts: int
    retry_at: float
    error: str


class StartupError(RuntimeError):
    """Some model had versions to serve and none of them became available (TF Serving then exits)."""


def shown(name: str, limit: int = 128) -> str:
    """A client-supplied name as error messages quote it: never more than ``limit`` characters."""
    return name if len(name) <= limit else name[:limit] + f"...({len(name)} characters)"


class ModelManager:
    """Loads and unloads versions of each configured model and resolves a request's model_spec to one.

    As TF Serving's aspired-versions manager: the versions a policy wants are loaded (a
    failed load is retried ``max_num_load_retries`` times, ``load_retry_interval`` apart),
    a version leaves only once a wanted one serves, and when the newest version
    disappears from disk the remaining latest is loaded again.
    """

    def __init__(self, models: list[ModelEntry], poll_seconds: float = 1.0, lifecycle: Lifecycle = Lifecycle(),
                 metrics=None):
        self.poll_seconds = poll_seconds
        self.lifecycle = lifecycle
        self.metrics = metrics
        self.entries: dict[str, ModelEntry] = {}
        self._servables: dict[str, dict[int, Servable]] = {}
        self._status: dict[str, dict[int, VersionStatus]] = {}
        self._failures: dict[tuple[str, int], _Failure] = {}
        self._lock = threading.RLock()
        self._polling = threading.Lock()  # one pass at a time: the poller's, a reload's or the startup's
        self._reloading = threading.Lock()  # ServerCore's config_mu_: one config applied at a time
        self._stop = threading.Event()
        self._thread = None
        self.set_models(models)

    def set_models(self, models: list[ModelEntry]) -> None:
        """Serve this model list from now on (reload_config); dropped models are unloaded, and their versions
        keep their last state (END), as TF Serving's ServableStateMonitor keeps them."""
        with self._lock:
            self.entries = {m.name: m for m in models}
            for name in list(self._servables):
                if name not in self.entries:
                    for version in sorted(self._servables.pop(name)):
                        self._set_state(name, version, State.UNLOADING)
                        self._set_state(name, version, State.END)
                        log.info("unloaded %s version %d", name, version)
            for key in [k for k in self._failures if k[0] not in self.entries]:
                del self._failures[key]
            for name in self.entries:
                self._servables.setdefault(name, {})
                self._status.setdefault(name, {})

    # -------------------------------------------------------------------- lifecycle
    def wanted_versions(self, entry: ModelEntry) -> list[int]:
        found = versions(entry.base_path)
        if entry.version_policy == "all":
            return found
        if entry.version_policy == "specific":
            return [v for v in found if v in set(entry.versions)]
        keep = int(entry.versions[0]) if entry.versions else 1
        return found[-keep:]

    def _set_state(self, name: str, version: int, state: int, error: str = "") -> None:
        self._status[name][version] = VersionStatus(state, error)

    def poll_once(self) -> None:
        with self._polling:
            self._poll_once()

    def _poll_once(self) -> None:
        now = time.monotonic()
        for name, entry in list(self.entries.items()):
            wanted = self.wanted_versions(entry)
            if not wanted and not self._status.get(name):
                log.warning("No versions of servable %s found under base path %s", name, entry.base_path)
            for key in [k for k in self._failures if k[0] == name and k[1] not in wanted]:
                del self._failures[key]  # gone from disk: a new copy starts with fresh retries
            with self._lock:
                loaded = set(self._servables.get(name, {}))
            for version in wanted:
                failure = self._failures.get((name, version))
                if version in loaded or (failure and (failure.attempts > self.lifecycle.max_num_load_retries
                                                      or now < failure.retry_at)):
                    continue
                self._load(entry, version)
            with self._lock:
                serving = self._servables.get(name, {})
                for version, status in sorted(self._status.get(name, {}).items()):
                    if version not in wanted and version not in serving and status.state == State.LOADING:
                        # A failed version still retrying that the policy no longer wants (a newer one came):
                        # TF Serving cancels the retries and its harness ends in kError, reported as END with
                        # the last load error (loader_harness.cc, servable_state_monitor.cc).
                        self._set_state(name, version, State.END, status.error)
                for version in sorted(set(serving) - set(wanted)):
                    # Unload only once a wanted version is serving, so no request finds nothing.
                    if any(v in serving for v in wanted) or not wanted:
                        self._set_state(name, version, State.UNLOADING)
                        del serving[version]
                        self._set_state(name, version, State.END)
                        log.info("unloaded %s version %d", name, version)

    def _load(self, entry: ModelEntry, version: int) -> None:
        path = os.path.join(entry.base_path, str(version))
        with self._lock:
            self._set_state(entry.name, version, State.LOADING)
        try:
            servable = load_servable(entry.name, version, path, warm_up=self.lifecycle.enable_warmup,
                                     tags=self.lifecycle.saved_model_tags)
        except Exception as error:  # a broken version must not take the server down
            failure = self._failures.get((entry.name, version), _Failure(0, 0.0, ""))
            failure.attempts += 1
            failure.retry_at = time.monotonic() + self.lifecycle.load_retry_interval_seconds
            failure.error = f"{type(error).__name__}: {error}"
            self._failures[(entry.name, version)] = failure
            left = self.lifecycle.max_num_load_retries - failure.attempts + 1
            log.error("could not load %s version %d from %s (%s); %s", entry.name, version, path, failure.error,
                      f"retrying in {self.lifecycle.load_retry_interval_seconds:g} s ({left} retries left)"
                      if left > 0 else "giving up")
            if self.metrics:
                self.metrics.load_attempt(path, False)
            with self._lock:
                self._set_state(entry.name, version, State.LOADING if left > 0 else State.END, failure.error)
            return
        self._failures.pop((entry.name, version), None)
        if self.metrics:
            self.metrics.load_attempt(path, True)
        with self._lock:
            if entry.name not in self._servables:  # dropped by a reload while it loaded
                self._set_state(entry.name, version, State.END)
                return
            self._servables[entry.name][version] = servable
            self._set_state(entry.name, version, State.AVAILABLE)
        log.info("serving %s version %d from %s", entry.name, version, path)

    def pending_retry(self, names=None) -> float | None:
        """When the next retry of a failed load (of the models ``names``, default all) is due, or None."""
        due = [f.retry_at for (name, _), f in self._failures.items()
               if f.attempts <= self.lifecycle.max_num_load_retries and (names is None or name in names)]
        return min(due) if due else None

    def _await(self, names) -> list[tuple[str, int, str]]:
        """Load what the models ``names`` want, retrying failed loads as configured; the (name, version, error)
        of each version that failed where its model serves none."""
        self.poll_once()
        while not self._stop.is_set():
            due = self.pending_retry(names)
            unavailable = [n for n in names if not self._servables.get(n) and self.wanted_versions(self.entries[n])]
            if due is None or not unavailable:
                break
            self._stop.wait(max(0.0, due - time.monotonic()))
            self.poll_once()
        with self._lock:
            return [(name, version, status.error) for name in names if not self._servables.get(name)
                    for version, status in sorted(self._status.get(name, {}).items()) if status.error]

    def wait_until_available(self) -> None:
        """Load what every model wants, retrying failures as configured, as TF Serving does before it serves.

        Raises StartupError naming the versions that never became available; a model with no
        versions on disk only warns (TF Serving logs "No versions of servable ... found").
        """
        failed = self._await(list(self.entries))
        if failed:
            listed = ", ".join(f"{{{{name: {n} version: {v}}} due to error: {e}}}" for n, v, e in failed)
            raise StartupError(f"{len(failed)} servable(s) did not become available: {{{listed}, }}")

    def start(self) -> None:
        self.wait_until_available()
        if self.poll_seconds > 0:
            self._thread = threading.Thread(target=self._poll_loop, name="kcnn-model-poller", daemon=True)
            self._thread.start()

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll_once()
            except Exception:  # keep polling whatever one pass met
                log.exception("model poll failed")

    # -------------------------------------------------------------------- reloading a ModelServerConfig
    def reload_config(self, config) -> None:
        """Serve the models of a ``ModelServerConfig`` from now on, as TF Serving's ServerCore::ReloadConfig does
        (server_core.cc); its gRPC HandleReloadConfigRequest and its --model_config_file poll both end here.

        The list is checked in TF Serving's order (names, base paths, platforms, labels) before anything
        changes; a model left out is unloaded; one added is loaded before this returns, UNKNOWN if it
        never became available. Labels may only name versions that serve now, as TF Serving's
        UpdateModelVersionLabelMap requires (its --allow_version_labels_for_unavailable_models is off).
        """
        with self._reloading:
            which = config.WhichOneof("config")
            if which is None:
                log.info("Taking no action for empty config.")
                return
            if which != "model_config_list":
                raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                                   "Cannot transition to requested config. It is only legal to transition from one "
                                   "ModelConfigList to another.")
            listed = list(config.model_config_list.config)
            _check_model_config_list(listed)
            for model in listed:  # ValidateNoModelsChangePlatforms; kcnn serves the tensorflow platform only
                if model.name in self.entries and _platform(model) != TENSORFLOW_PLATFORM:
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                       f"Illegal to change a model's platform. For model {model.name} platform was "
                                       f"{TENSORFLOW_PLATFORM} and new platform requested is {_platform(model)}")
            self._check_labels(listed)
            for model in listed:  # CreateStoragePathRoutes
                if _platform(model) != TENSORFLOW_PLATFORM:
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                       f"Model {model.name} requests unsupported platform {_platform(model)}")
            try:
                models = [model_entry(model) for model in listed]
            except ValueError as error:  # kcnn's own checks of a version policy and its labels
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(error)) from None
            added = [m.name for m in models if m.name not in self.entries]
            log.info("Adding/updating models.")
            self.set_models(models)
            failed = self._await(added)
            if failed:
                listed_failures = "".join(f"{{{{name: {n} version: {v}}} due to error: {e}}}, " for n, v, e in failed)
                raise ServingError(grpc.StatusCode.UNKNOWN,
                                   f"{len(failed)} model(s) did not become available: {{{listed_failures}}}")
            log.info("Finished reloading config")

    def _check_labels(self, listed) -> None:
        with self._lock:
            for model in listed:
                for label, version in sorted(model.version_labels.items()):
                    status = self._status.get(model.name, {}).get(version)
                    if status is None or status.state != State.AVAILABLE:
                        raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                                           f"Request to assign label to version {version} of model {model.name}, "
                                           "which is not currently available for inference")

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    # -------------------------------------------------------------------- look-ups
    def _known(self, name: str) -> None:
        if not name:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified.")

    def resolve(self, spec) -> Servable:
        """The servable a ModelSpec names: a version, a version label, or the latest."""
        name = spec.name
        self._known(name)
        if name not in self.entries:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({shown(name)})")
        with self._lock:
            servables = dict(self._servables.get(name, {}))
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
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"Unrecognized servable version label: {shown(label)}")
            if labels[label] not in servables:
                raise ServingError(grpc.StatusCode.NOT_FOUND,
                                   f"Servable not found for request: Specific({name}, {labels[label]})")
            return servables[labels[label]]
        if not servables:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})")
        return servables[max(servables)]

    def status(self, name: str, version: int | None = None) -> dict[int, VersionStatus]:
        self._known(name)
        if name not in self._status:  # configured now, or once (its versions then END)
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {shown(name)}")
        with self._lock:
            status = dict(self._status[name])
        if version is not None:
            if version not in status:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find version {version} of model {name}")
            return {version: status[version]}
        return status


TENSORFLOW_PLATFORM = "tensorflow"
URI_SCHEME = re.compile(r"[A-Za-z][0-9A-Za-z.]*://")


def _check_model_config_list(listed) -> None:
    """TF Serving's ValidateModelConfigList (server_core.cc): each name once, every base path absolute."""
    names = set()
    for model in listed:
        if model.name in names:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Illegal to list model {model.name} multiple times in config list")
        names.add(model.name)
    for model in listed:  # UriIsRelativePath: no scheme://, and not a path from the root
        if not URI_SCHEME.match(model.base_path) and not model.base_path.startswith("/"):
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Expected model {model.name} to have an absolute path or URI; got "
                               f"base_path()={model.base_path}")


def _platform(model) -> str:
    """TF Serving's GetPlatform (server_core.cc): model_platform, or the deprecated model_type."""
    if model.model_type:
        if model.model_platform:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               "Illegal setting both ModelServerConfig::model_type (deprecated) and "
                               "ModelServerConfig::model_platform.")
        if model.model_type != 1:  # ModelType.TENSORFLOW
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"ModelServerConfig::model_type choice {model.model_type} not supported.")
        return TENSORFLOW_PLATFORM
    if not model.model_platform:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
                           "ModelServerConfig::model_platform.")
    return model.model_platform


def input_size_error(sent, wanted) -> ServingError:
    sent, wanted = sorted(sent), sorted(wanted)
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, (
        f"input size does not match signature: {len(sent)}!={len(wanted)} len({{{','.join(map(shown, sent))}}}) != "
        f"len({{{','.join(wanted)}}}). Sent extra: {{{','.join(shown(n) for n in sorted(set(sent) - set(wanted)))}}}. "
        f"Missing but required: {{{','.join(sorted(set(wanted) - set(sent)))}}}."))


def parse_inputs(servable: Servable, signature: str, inputs: dict, max_elements: int) -> dict:
    """A PredictRequest's input protos as numpy arrays, after TF Serving's checks (names, then each tensor)."""
    expected = servable.inputs[signature]
    if len(inputs) != len(expected):
        raise input_size_error(inputs, expected)
    arrays = {}
    for alias, proto in sorted(inputs.items()):
        if alias not in expected:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"input tensor alias not found in signature: {shown(alias)}. Inputs expected to be in "
                               f"the set {{{','.join(sorted(expected))}}}.")
        try:
            arrays[alias] = from_request_proto(proto, alias, max_elements)
        except TensorParseError as error:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(error)) from None
    return check_arrays(servable, signature, arrays)


def check_arrays(servable: Servable, signature: str, arrays: dict) -> dict:
    """The signature's checks on numpy inputs: names, then each tensor's dtype, rank and batch."""
    expected = servable.inputs[signature]
    if set(arrays) != set(expected):
        raise input_size_error(arrays, expected)
    for index, (alias, array) in enumerate(sorted(arrays.items())):
        dtype, rank = expected[alias]
        got = tf.string if array.dtype == object else tf.dtypes.as_dtype(array.dtype)
        if got != dtype:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Expects arg[{index}] to be {dtype.name} but {got.name} is provided")
        if rank is not None and array.ndim != rank:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"input '{alias}' must have rank {rank}, got shape {list(array.shape)}")
        if array.ndim == 0 or array.shape[0] == 0:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"input '{alias}' holds an empty batch")
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

