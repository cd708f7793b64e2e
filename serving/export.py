"""Export a Keras model as a SavedModel that TensorFlow Serving serves as it is.

``export(model, base_path, class_names=..., preprocessing=..., task=...)`` writes
``base_path/<version>/`` with two signatures of stable names:

- ``serving_default``: input ``images``, uint8 (or float32) ``[batch, height, width, 3]`` at any size;
- ``predict_image_bytes``: input ``image_bytes``, string ``[batch]`` of JPEG/PNG/GIF/BMP files;

both returning the task's outputs (``pipelines.tasks``): for classification
``probabilities`` float32 ``[batch, classes]``, ``classes`` int32 ``[batch, top_k]``,
``scores`` float32 ``[batch, top_k]`` and ``labels`` string ``[batch, top_k]``; for
segmentation per-pixel ``class_map``, ``probabilities`` and ``mask_png_bytes``; for
super-resolution the upscaled image. Preprocessing runs in the graph and is the very
functions the evaluation pipeline calls (for classification
``pipelines.preprocess.preprocess_images`` for decoded images and ``preprocess_encoded``
for files).

The version is built in a sibling directory whose name is not an integer and renamed
into place only when complete and verified, so TF Serving's file-system poller never
sees a partial version. A base path on Cloud Storage (``gs://``) or another TensorFlow
filesystem gets the version copied in with ``saved_model.pb`` last (:func:`_publish_remote`).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from kcnn.faults import crash_point
from kcnn.files import process_alive
from pipelines import fs
from pipelines.image_header import DEFAULT_MAX_PIXELS
from pipelines.preprocess import Preprocessing
from pipelines.run_dir import RunDir, atomic_write
from pipelines.tasks import get_task
from pipelines.tasks.base import ExportError, png as _png, sample_images  # noqa: F401 (ExportError re-exported)

log = logging.getLogger(__name__)
SIGNATURE_IMAGES = "serving_default"
SIGNATURE_BYTES = "predict_image_bytes"
INPUT_IMAGES = "images"
INPUT_BYTES = "image_bytes"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
METADATA_FILE = os.path.join("assets.extra", "kcnn.json")
IMAGE_DTYPES = ("uint8", "float32")
SAVED_MODEL_FILE = "saved_model.pb"


@dataclass(frozen=True)
class ExportResult:
    path: str
    version: int
    signatures: str
    max_abs_difference: float


def versions(base_path: str) -> list[int]:
    """The integer version directories under ``base_path``, as TF Serving sees them."""
    return sorted(int(name) for name in fs.listdir(base_path)
                  if re.fullmatch(r"\d+", name) and fs.isdir(os.path.join(base_path, name)))


def export(model, base_path: str, *, class_names, preprocessing: Preprocessing, version: int | None = None,
           top_k: int = 5, overwrite: bool = False, image_dtype: str = "uint8", model_name: str | None = None,
           training_config: str | None = None, warmup: bool = True, verify: bool = True,
           max_image_pixels: int = DEFAULT_MAX_PIXELS, task: str = "classification",
           task_options: dict | None = None, fold_bn: bool = True, freeze: bool = True) -> ExportResult:
    """Write ``base_path/<version>`` (the next integer unless ``version`` is given) and return where and what.

    ``task`` (``pipelines.tasks``) says what the signatures return. ``max_image_pixels``:
    ``predict_image_bytes`` refuses files whose header declares more pixels, with INVALID_ARGUMENT,
    before decoding them (a 200 KB PNG can declare 8192x8192 pixels). ``task_options``: the
    task's export settings (a detector's ``score_threshold``, ``iou_threshold``, ``max_detections``).
    ``fold_bn``: serve a copy with every batch norm that follows a convolution folded into it
    (``kcnn.compress.fold_batch_norm``); the verification compares the export with ``model`` itself.
    ``freeze``: the signatures run the model's inference pass with its weights as graph constants
    (:func:`frozen_forward`), unless they exceed ``FREEZE_MAX_BYTES``; False keeps them as variables.
    """
    check_max_pixels(max_image_pixels)
    task = get_task(task)
    class_names = [str(name) for name in class_names]
    task.check_export(model, class_names)
    if image_dtype not in IMAGE_DTYPES:
        raise ValueError(f"image_dtype must be one of {', '.join(IMAGE_DTYPES)}, got {image_dtype!r}")
    if not isinstance(top_k, int) or not 1 <= top_k:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    top_k = min(top_k, max(len(class_names), 1))
    model_name = model_name or os.path.basename(os.path.normpath(base_path))
    metadata = {"model_name": model_name, "task": task.name, "class_names": class_names, "top_k": top_k,
                "image_dtype": image_dtype, "preprocessing": json.loads(preprocessing.to_json()),
                "max_image_pixels": max_image_pixels,
                "signatures": {SIGNATURE_IMAGES: INPUT_IMAGES, SIGNATURE_BYTES: INPUT_BYTES},
                **task.export_metadata(model, task.resolve_options(task_options or {}))}

    served = _folded(model) if fold_bn else model
    forward = frozen_forward(served) if freeze else None

    def write(staging: str) -> float:
        endpoints = task.serving_endpoints(forward or served, preprocessing, metadata, max_image_pixels)
        _write_saved_model(endpoints, None if forward else served, staging)
        os.makedirs(os.path.join(staging, "assets.extra"), exist_ok=True)
        atomic_write(os.path.join(staging, METADATA_FILE), json.dumps(metadata, indent=2))
        atomic_write(os.path.join(staging, "assets.extra", "class_names.txt"),
                     "".join(f"{name}\n" for name in class_names))
        if training_config:
            atomic_write(os.path.join(staging, "assets.extra", "training_config.yaml"), training_config)
        if warmup:
            write_warmup_requests(os.path.join(staging, WARMUP_FILE), model_name, preprocessing, image_dtype)
        return _verify(model, staging, task, preprocessing, metadata) if verify else float("nan")

    return publish_version(base_path, version, overwrite, write)


STAGING_PREFIX = ".kcnn-export-"  # + version-pid-random: a version being written
RETIRED_PREFIX = ".kcnn-retired-"  # + version-pid: the old version while --overwrite swaps in the new one


def publish_version(base_path: str, version: int | None, overwrite: bool, write) -> ExportResult:
    """Build a version with ``write(staging_dir) -> max_abs_difference`` and rename it into place.

    ``version=None`` takes the next integer. The staging directory's name is not an integer, so
    TF Serving's file-system poller never sees a partial version. With ``overwrite`` the old version
    and the new one swap places in one ``renameat2(RENAME_EXCHANGE)`` (Linux), then the old one is
    deleted, so the version is never absent; where the exchange is not available the old version is
    renamed aside and the new one renamed in. A kill at any moment leaves the old or the new
    version, and the next export (or :func:`recover`) finishes the job. Version
    directories are world-readable (0755), as a server running as another user needs.
    """
    if isinstance(version, bool) or not (version is None or isinstance(version, int) and version >= 1):
        raise ValueError(f"version must be a positive integer, got {version!r}")
    if not fs.is_local(base_path):
        return _publish_remote(base_path, version, overwrite, write)
    os.makedirs(base_path, exist_ok=True)
    recover(base_path)
    if version is None:
        version = (versions(base_path) or [0])[-1] + 1
    target = os.path.join(base_path, str(version))
    if os.path.exists(target) and not overwrite:
        raise FileExistsError(f"{target} already exists; pass a new version (--version N) or overwrite=True "
                              "(--overwrite) to replace it")
    staging = tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{version}-{os.getpid()}-", dir=base_path)
    retired = os.path.join(base_path, f"{RETIRED_PREFIX}{version}-{os.getpid()}")
    try:
        difference = write(staging)
        os.chmod(staging, 0o755)  # mkdtemp makes 0700
        crash_point("export_before_swap")
        if os.path.exists(target) and exchange(staging, target):
            # One atomic step: the new version is in place and the old one sits at the staging name, which
            # recover() deletes if this process dies before it does. No moment without the version.
            crash_point("export_after_exchange")
            shutil.rmtree(staging, ignore_errors=True)
            return ExportResult(target, version, describe_signatures(target), difference)
        if os.path.exists(target):  # no atomic exchange on this system or file system: two renames
            os.rename(target, retired)
            crash_point("export_mid_swap")
        os.rename(staging, target)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if os.path.exists(retired) and not os.path.exists(target):
            os.rename(retired, target)
        reason = fs.out_of_space(error)
        if reason:
            raise _out_of_space_error(target, base_path, reason, "the partial version was removed") from None
        raise
    shutil.rmtree(retired, ignore_errors=True)
    return ExportResult(target, version, describe_signatures(target), difference)


def _publish_remote(base_path: str, version: int | None, overwrite: bool, write) -> ExportResult:
    """:func:`publish_version` where directories cannot be renamed atomically (``gs://``, any ``scheme://``).

    The version is built and verified in a local temporary directory, then copied into
    ``base_path/<version>/`` file by file with ``saved_model.pb`` last: TF Serving loads a version only
    from its ``saved_model.pb`` (a load attempted before it arrives fails and is retried, TF Serving's
    ``max_num_load_retries``), and once it is there every other file is whole. A Cloud Storage object
    appears only when its upload is complete. A version that a killed export left without
    ``saved_model.pb`` is removed by the next export to the base path (:func:`recover`), which then
    writes it again. ``--overwrite`` is refused: replacing a version in place would leave TF Serving
    a moment with half of each.
    """
    if overwrite:
        raise ValueError(f"--overwrite cannot replace a version atomically on {base_path.split('://')[0]}://; "
                         "export a new version (leave --version unset) and delete the old one once it is retired")
    fs.makedirs(base_path)
    recover(base_path)
    if version is None:
        version = (versions(base_path) or [0])[-1] + 1
    target = fs.join(base_path, str(version))
    if fs.exists(target):
        raise FileExistsError(f"{target} already exists; pass a new version (--version N) or leave --version unset")
    scratch = tempfile.mkdtemp(prefix="kcnn-export-")
    try:
        difference = write(scratch)
        files = sorted(os.path.relpath(os.path.join(root, name), scratch)
                       for root, _, names in os.walk(scratch) for name in names)
        files.sort(key=lambda name: name == SAVED_MODEL_FILE)  # the one TF Serving loads by: last
        for name in files:
            crash_point("export_copy")
            fs.makedirs(os.path.dirname(fs.join(target, name)))
            tf.io.gfile.copy(os.path.join(scratch, name), fs.join(target, name), overwrite=True)
    except BaseException as error:
        reason = fs.out_of_space(error)
        if reason:  # what was copied lacks saved_model.pb: unservable, and the next export's recover() removes it
            local = scratch in str(error) or scratch in str(getattr(error, "filename", ""))
            where = f"the local build directory {os.path.dirname(scratch)}" if local else base_path
            raise _out_of_space_error(target, where, reason, "the next export removes what was copied") from None
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return ExportResult(target, version, describe_signatures(target), difference)


def _out_of_space_error(target: str, where: str, reason: str, cleanup: str) -> OSError:
    """The one line ``kcnn export`` prints when the version did not fit (``where``: the directory that is full)."""
    return OSError(f"cannot export {target}: {reason} in {where}; {cleanup}, nothing was published. Free space "
                   "there (or pass another --base-path) and export again")


RENAME_EXCHANGE = 2  # linux/fs.h


def exchange(first: str, second: str) -> bool:
    """Swap two paths atomically (Linux ``renameat2(..., RENAME_EXCHANGE)``); False where that is unavailable."""
    import ctypes
    import ctypes.util
    import errno

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # glibc before 2.28 has no wrapper
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # a file system or kernel without the flag
        return False
    raise OSError(code, f"cannot swap {first} and {second}: {os.strerror(code)}")


def recover(base_path: str) -> list[str]:
    """Clean up after exports that were killed: returns what was done, one line each.

    A staging directory of a dead process is deleted; an old version set aside by a dead
    ``--overwrite`` is deleted when its replacement is in place, else renamed back.
    """
    done = []
    if not fs.is_local(base_path):  # built locally, copied in with saved_model.pb last (_publish_remote)
        for version in versions(base_path):
            if not fs.exists(fs.join(base_path, str(version), SAVED_MODEL_FILE)):
                fs.rmtree(fs.join(base_path, str(version)))
                done.append(f"removed version {version}, which an interrupted export left without {SAVED_MODEL_FILE}")
    for name in sorted(os.listdir(base_path)) if os.path.isdir(base_path) else []:
        path = os.path.join(base_path, name)
        for prefix in (STAGING_PREFIX, RETIRED_PREFIX):
            fields = name[len(prefix):].split("-") if name.startswith(prefix) else []
            if len(fields) < 2 or not fields[0].isdigit() or not fields[1].isdigit() or process_alive(int(fields[1])):
                continue
            target = os.path.join(base_path, fields[0])
            if prefix == RETIRED_PREFIX and not os.path.exists(target):
                os.rename(path, target)
                done.append(f"restored version {fields[0]} that an interrupted --overwrite had set aside")
            else:
                shutil.rmtree(path, ignore_errors=True)
                done.append(f"removed {name} left by an interrupted export")
    for line in done:
        log.warning("%s: %s", base_path, line)
    return done


def export_run(run_dir: str, base_path: str, **options) -> ExportResult:
    """Export a finished ``kcnn train`` run: its model, class names, preprocessing and config travel together.

    ``task_options`` (a dict) overrides the run's ``model.task_options`` for the export; None values are ignored.
    """
    from pipelines.evaluate import read_config

    run = RunDir(run_dir).require_finished()
    if "training_config" not in options:
        options["training_config"] = run.read_config_text()
    model_config = read_config(run_dir).model
    overrides = {key: value for key, value in (options.pop("task_options", None) or {}).items() if value is not None}
    return export(run.load_model(), base_path, class_names=run.class_names(), preprocessing=run.preprocessing(),
                  task=model_config.task, task_options={**model_config.task_options, **overrides}, **options)


def check_max_pixels(max_image_pixels) -> None:
    if isinstance(max_image_pixels, bool) or not isinstance(max_image_pixels, int) or max_image_pixels < 1:
        raise ValueError(f"max_image_pixels must be a positive integer (e.g. {DEFAULT_MAX_PIXELS} for 4096x4096), "
                         f"got {max_image_pixels!r}")


def _write_saved_model(endpoints: dict, model, path: str) -> None:
    """The task's endpoints ({input name: Endpoint}) as the two signatures of stable names; ``model``'s
    variables are saved with them (None: the endpoints hold no variables, the weights are constants)."""
    from keras.export import ExportArchive

    archive = ExportArchive()
    if model is not None:
        archive.track(model)
    for input_name, signature in ((INPUT_IMAGES, SIGNATURE_IMAGES), (INPUT_BYTES, SIGNATURE_BYTES)):
        endpoint = endpoints[input_name]
        spec = tf.TensorSpec(endpoint.input_spec.shape, endpoint.input_spec.dtype, name=input_name)
        archive.add_endpoint(signature, endpoint.function, input_signature=[spec])
    archive.write_out(path, verbose=False)


def write_warmup_requests(path: str, model_name: str, spec: Preprocessing, image_dtype: str) -> int:
    """TF Serving warm-up records: ``PredictionLog`` entries covering both signatures (batch 1 and 2)."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    images = sample_images(spec, 2)
    records = []
    for batch in (images[:1], images):
        tensor = batch if image_dtype == "uint8" else batch.astype(np.float32)
        for signature, name, value in ((SIGNATURE_IMAGES, INPUT_IMAGES, tf.make_tensor_proto(tensor)),
                                       (SIGNATURE_BYTES, INPUT_BYTES,
                                        tf.make_tensor_proto([_png(i) for i in batch], dtype=tf.string))):
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
            request.inputs[name].CopyFrom(value)
            records.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request)))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record.SerializeToString())
    return len(records)


def _folded(model):
    """``model`` with its batch norms folded into the convolutions before them (the same function, fewer ops)."""
    from kcnn.compress.folding import fold_batch_norm

    return fold_batch_norm(model)


FREEZE_MAX_BYTES = 1 << 30  # saved_model.pb is one protobuf, which cannot exceed 2 GiB


class FrozenForward:
    """A Keras model's inference pass, ``forward(inputs, training=False)``, as a graph whose weights are constants.

    The exported signatures call it where they would call the model: the same kernels on the same
    values, but TensorFlow's oneDNN convolutions can keep a constant filter in the layout they compute
    with (a variable's value may change between calls, so it is reordered on each), and Grappler folds
    what constants allow: the digits ResNet-18's signature runs 1.2x-1.3x faster than the Keras model in a
    ``tf.function`` at batch 1 and 1.55x-1.63x at batch 16 (``benchmarks/bench_export.py``). TF Serving loads
    a SavedModel without variables as it is (loader.cc logs "The specified SavedModel has no
    variables; no checkpoints were restored").
    """

    def __init__(self, model):
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        spec = tf.TensorSpec((None,) + tuple(model.input_shape[1:]), model.inputs[0].dtype)
        inference = tf.function(lambda inputs: model(inputs, training=False), autograph=False)
        concrete = inference.get_concrete_function(spec)
        self.function = convert_variables_to_constants_v2(concrete, lower_control_flow=False)
        self._structure = concrete.structured_outputs  # the frozen function returns the outputs flat
        self.input_shape, self.output_shape = model.input_shape, model.output_shape

    def __call__(self, inputs, training=False):
        if training:
            raise ValueError("a frozen model only infers (training=False)")
        outputs = self.function(tf.cast(inputs, self.function.inputs[0].dtype))
        return tf.nest.pack_sequence_as(self._structure, tf.nest.flatten(outputs))


def weight_bytes(model) -> int:
    return sum(int(np.prod(v.shape)) * tf.as_dtype(v.dtype).size for v in model.weights)


def frozen_forward(model):
    """``FrozenForward(model)``, or None (the signatures keep variables) for a model with several inputs or
    weights over FREEZE_MAX_BYTES."""
    if isinstance(model.input_shape, list):
        log.info("a model with %d inputs keeps its weights as variables", len(model.input_shape))
        return None
    size = weight_bytes(model)
    if size > FREEZE_MAX_BYTES:
        log.info("weights of %.0f MB kept as variables (a frozen saved_model.pb must stay under 2 GiB)", size / 2**20)
        return None
    return FrozenForward(model)


def _verify(model, path: str, task, spec: Preprocessing, metadata: dict) -> float:
    """Reload the SavedModel; both signatures must reproduce the Keras model (the task's check)."""
    return task.verify_export(model, tf.saved_model.load(path), spec, metadata)


_DTYPE_NAMES = {tf.uint8.as_datatype_enum: "DT_UINT8", tf.float32.as_datatype_enum: "DT_FLOAT",
                tf.int32.as_datatype_enum: "DT_INT32", tf.string.as_datatype_enum: "DT_STRING",
                tf.int64.as_datatype_enum: "DT_INT64", tf.float16.as_datatype_enum: "DT_HALF"}


def signature_defs(path: str, tags=None) -> dict:
    """The SignatureDefs of a SavedModel directory, read from saved_model.pb: of the MetaGraph whose tag-set
    is ``tags`` (any order), or of the first one when ``tags`` is None."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString(fs.read_bytes(os.path.join(path, SAVED_MODEL_FILE)))
    if tags is None:
        return dict(proto.meta_graphs[0].signature_def)
    for graph in proto.meta_graphs:
        if set(graph.meta_info_def.tags) == set(tags):
            return dict(graph.signature_def)
    # TensorFlow's loader (tensorflow/cc/saved_model/reader.cc, FindMetaGraphDef) in its words.
    raise ValueError(f"Could not find meta graph def matching supplied tags: {{ {' '.join(sorted(tags))} }}. To "
                     "inspect available tag-sets in the SavedModel, please use the SavedModel CLI: `saved_model_cli`")


def describe_signatures(path: str) -> str:
    """The serving signatures as ``saved_model_cli show --all`` lists them."""
    out = io.StringIO()
    for key, signature in sorted(signature_defs(path).items()):
        if key.startswith("__"):
            continue
        out.write(f"\nsignature_def['{key}']:\n  The given SavedModel SignatureDef contains the following input(s):\n")
        for label, tensors in (("inputs", signature.inputs), ("outputs", signature.outputs)):
            if label == "outputs":
                out.write("  The given SavedModel SignatureDef contains the following output(s):\n")
            for name, info in sorted(tensors.items()):
                dims = tuple(d.size for d in info.tensor_shape.dim)
                shape = "unknown_rank" if info.tensor_shape.unknown_rank else str(dims).replace(",)", ")")
                dtype = _DTYPE_NAMES.get(info.dtype, info.dtype)
                out.write(f"    {label}['{name}'] tensor_info:\n        dtype: {dtype}"
                          f"\n        shape: {shape}\n        name: {info.name}\n")
        out.write(f"  Method name is: {signature.method_name}\n")
    return out.getvalue()
