"""Clients for TensorFlow Serving: gRPC through tensorflow-serving-api's stubs, and REST.

``Client("localhost:8500", "digits").predict(["a.png", "b.jpg"])`` sends files as
encoded bytes to the ``predict_image_bytes`` signature; numpy image arrays go to
``serving_default``. Only UNAVAILABLE and DEADLINE_EXCEEDED are retried, with
exponential backoff; every other failure raises :class:`ServingClientError`
carrying the gRPC code, TF Serving's message and a hint for the common ones.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

SIGNATURE_IMAGES, INPUT_IMAGES = "serving_default", "images"
SIGNATURE_BYTES, INPUT_BYTES = "predict_image_bytes", "image_bytes"
RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
STATES = {v: k for k, v in get_model_status_pb2.ModelVersionStatus.State.items()}


class ServingClientError(RuntimeError):
    """A failed call: ``code`` (a grpc.StatusCode, or an HTTP status for REST), ``details`` and a ``hint``."""

    def __init__(self, code, details: str, hint: str = ""):
        self.code, self.details, self.hint = code, details, hint
        name = getattr(code, "name", code)
        super().__init__(f"{name}: {details}" + (f" ({hint})" if hint else ""))


def hint_for(code, details: str, model_name: str, cli: bool = False) -> str:
    """A short next step for the common failures, in the words of the CLI (``cli``) or of this module's API."""
    if "Servable not found" in details or "Could not find" in details:
        check = "--model and --version" if cli else "Client.status()"
        return f"is the model name '{model_name}' right, and has a version loaded? Check {check}"
    if "signature key" in details:
        return f"this model's signatures are {SIGNATURE_IMAGES!r} and {SIGNATURE_BYTES!r}"
    if "input size does not match signature" in details or "alias not found" in details:
        return f"send input '{INPUT_IMAGES}' to {SIGNATURE_IMAGES} or '{INPUT_BYTES}' to {SIGNATURE_BYTES}"
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        raise_it = "the server's message limit" if cli else "Client(max_message_mb=...)"
        return f"the message is over the size limit: send fewer or smaller images per request, or raise {raise_it}"
    if code == grpc.StatusCode.UNAVAILABLE:
        return "is the server running and reachable at this address?"
    return ""


@dataclass
class Prediction:
    """One image's answer: the top labels with their scores, and the full probability vector."""

    labels: list
    scores: list
    classes: list
    probabilities: np.ndarray

    def as_dict(self) -> dict:
        return {"labels": self.labels, "scores": self.scores, "classes": self.classes}


def _predictions(outputs: dict) -> list[Prediction]:
    if "labels" not in outputs:
        raise ValueError(f"the model returns {', '.join(sorted(outputs))}, not class labels: it answers with images "
                         "or per-pixel masks; save them with --out-dir DIR (in Python: Client.predict_raw)")
    labels = outputs["labels"]
    return [Prediction([label.decode() if isinstance(label, bytes) else str(label) for label in labels[i]],
                       [float(s) for s in outputs["scores"][i]], [int(c) for c in outputs["classes"][i]],
                       np.asarray(outputs["probabilities"][i])) for i in range(len(labels))]


def image_outputs(outputs: dict) -> dict:
    """The encoded images in a predict response: every string output whose name ends in ``_bytes``
    (TF Serving's convention for binary outputs), as lists of bytes per image."""
    return {name: [bytes(value) for value in np.asarray(values).reshape(-1)]
            for name, values in outputs.items() if name.endswith("_bytes")}


def encode_image(item) -> bytes:
    """A path, encoded bytes or a PIL image -> encoded file bytes (PIL images become PNG)."""
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    if isinstance(item, (str, os.PathLike)):
        with open(item, "rb") as handle:
            return handle.read()
    if hasattr(item, "save") and hasattr(item, "mode"):  # PIL.Image.Image
        buffer = io.BytesIO()
        item.save(buffer, format="PNG")
        return buffer.getvalue()
    raise TypeError(f"cannot send {type(item).__name__} as an image: give a path, bytes, a PIL image or a numpy "
                    "array")


class Client:
    """A gRPC client for one model served by TF Serving (or kcnn's local server)."""

    def __init__(self, target: str, model_name: str, *, timeout: float = 10.0, retries: int = 3,
                 backoff: float = 0.1, tls: grpc.ChannelCredentials | None = None, max_message_mb: int = 64,
                 for_cli: bool = False):
        self.target, self.model_name, self.for_cli = target, model_name, for_cli
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        limit = max_message_mb * 1024 * 1024
        options = [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]
        self.channel = (grpc.secure_channel(target, tls, options) if tls else grpc.insecure_channel(target, options))
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _spec(self, signature=None, version=None, version_label=None) -> model_pb2.ModelSpec:
        spec = model_pb2.ModelSpec(name=self.model_name, signature_name=signature or "")
        if version is not None and version_label is not None:
            raise ValueError("give version or version_label, not both")
        if version is not None:
            spec.version.value = int(version)
        elif version_label is not None:
            spec.version_label = version_label
        return spec

    def _call(self, method, request):
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                return method(request, timeout=self.timeout)
            except grpc.RpcError as error:
                code, details = error.code(), error.details() or ""
                if code in RETRIED and attempt < self.retries:
                    time.sleep(delay)
                    delay *= 2
                    continue
                hint = hint_for(code, details, self.model_name, self.for_cli)
                raise ServingClientError(code, details, hint) from None

    def predict_request(self, inputs, *, signature=None, version=None, version_label=None):
        """Build the PredictRequest ``predict`` sends (numpy arrays -> images; anything else -> image bytes)."""
        if isinstance(inputs, np.ndarray):
            batch = inputs[np.newaxis] if inputs.ndim == 3 else inputs
            if batch.ndim != 4:
                raise ValueError(f"image arrays must be [height, width, 3] or [batch, height, width, 3], got "
                                 f"{inputs.shape}")
            name, tensor = INPUT_IMAGES, tf.make_tensor_proto(batch)
            signature = signature or SIGNATURE_IMAGES
        else:
            items = inputs if isinstance(inputs, (list, tuple)) else [inputs]
            if items and isinstance(items[0], np.ndarray):
                return self.predict_request(np.stack(items), signature=signature, version=version,
                                            version_label=version_label)
            name = INPUT_BYTES
            tensor = tf.make_tensor_proto([encode_image(i) for i in items], dtype=tf.string)
            signature = signature or SIGNATURE_BYTES
        request = predict_pb2.PredictRequest(model_spec=self._spec(signature, version, version_label))
        request.inputs[name].CopyFrom(tensor)
        return request

    def predict_raw(self, request) -> dict:
        response = self._call(self.prediction.Predict, request)
        return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}

    def predict(self, inputs, *, signature=None, version=None, version_label=None) -> list[Prediction]:
        """Top labels and scores per image for paths, encoded bytes, PIL images or numpy arrays."""
        request = self.predict_request(inputs, signature=signature, version=version, version_label=version_label)
        return _predictions(self.predict_raw(request))

    def metadata(self, version=None) -> dict:
        """The model's SignatureDefs, by signature name."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=self._spec(version=version),
                                                                 metadata_field=["signature_def"])
        response = self._call(self.prediction.GetModelMetadata, request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return dict(signature_map.signature_def)

    def status(self, version=None) -> dict:
        """Version -> state name (``AVAILABLE``, ``LOADING``, ``END``...)."""
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=self._spec(version=version))
        response = self._call(self.models.GetModelStatus, request)
        return {s.version: STATES[s.state] for s in response.model_version_status}

    def wait_until_available(self, timeout: float = 60.0, version=None) -> int:
        """Poll status until a version is AVAILABLE; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                available = [v for v, state in self.status(version).items() if state == "AVAILABLE"]
                if available:
                    return max(available)
            except ServingClientError as error:
                if time.monotonic() >= deadline:
                    raise
                if error.code not in RETRIED + (grpc.StatusCode.NOT_FOUND,):
                    raise
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no version of {self.model_name} became AVAILABLE within {timeout:g} s")
            time.sleep(0.2)


class RestClient:
    """TF Serving's REST API on port 8501: ``/v1/models/NAME:predict`` with base64 image bytes, status, metadata."""

    def __init__(self, base_url: str, model_name: str, *, timeout: float = 10.0):
        self.base = base_url.rstrip("/")
        if "://" not in self.base:
            self.base = "http://" + self.base
        self.model_name, self.timeout = model_name, timeout

    def _url(self, version=None, label=None, action="") -> str:
        url = f"{self.base}/v1/models/{self.model_name}"
        if version is not None:
            url += f"/versions/{int(version)}"
        elif label is not None:
            url += f"/labels/{label}"
        return url + action

    def _request(self, url: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            try:
                details = json.loads(error.read()).get("error", error.reason)
            except (json.JSONDecodeError, AttributeError):
                details = str(error.reason)
            raise ServingClientError(error.code, details, hint_for(error.code, details, self.model_name)) from None

    def predict(self, images, *, version=None, version_label=None) -> list[Prediction]:
        items = images if isinstance(images, (list, tuple)) else [images]
        instances = [{INPUT_BYTES: {"b64": base64.b64encode(encode_image(i)).decode()}} for i in items]
        body = self._request(self._url(version, version_label, ":predict"),
                             {"signature_name": SIGNATURE_BYTES, "instances": instances})
        rows = body["predictions"]
        outputs = {key: [row[key] for row in rows] for key in rows[0]}
        return _predictions(outputs)

    def status(self, version=None) -> dict:
        body = self._request(self._url(version))
        return {int(s["version"]): s["state"] for s in body["model_version_status"]}

    def metadata(self, version=None) -> dict:
        return self._request(self._url(version, action="/metadata"))
