"""Export an image-to-image model (kcnn's fast stylizer) as a SavedModel that TF Serving serves as it is.

Two signatures of stable names, as for classifiers:

- ``serving_default``: input ``images``, uint8 ``[batch, height, width, 3]``; output ``stylized``,
  uint8 ``[batch, height, width, 3]``;
- ``predict_image_bytes``: input ``image_bytes``, string ``[batch]`` of JPEG/PNG/GIF/BMP files;
  output ``stylized_png_bytes``, string ``[batch]``: each image stylised at its own size, as PNG.

Images of any size are mirrored out to a multiple of 4 (the network downsamples twice by 2) and
the result is cropped back, so the output has the input's size. Warm-up records cover both
signatures. The version is staged and renamed into place like every kcnn export.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from pipelines.image_header import DEFAULT_MAX_PIXELS
from pipelines.preprocess import decode_image
from serving.export import INPUT_BYTES, INPUT_IMAGES, SIGNATURE_BYTES, SIGNATURE_IMAGES, WARMUP_FILE, ExportError

OUTPUT_IMAGES = "stylized"
# TF Serving's REST API base64-encodes a string output as {"b64": ...} only when its name ends in
# "_bytes" (json_tensor.cc, kBytesTensorNameSuffix); PNG bytes are not UTF-8 text, so the name says bytes.
OUTPUT_PNG = "stylized_png_bytes"
MULTIPLE = 4
MIN_SIDE = 4  # mirror padding needs at least as many pixels as it adds


def stylize_batch(model, images: tf.Tensor) -> tf.Tensor:
    """uint8 ``[b, h, w, 3]`` -> uint8 ``[b, h, w, 3]`` through ``model`` (RGB in [0, 255] both ways)."""
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    tf.debugging.assert_greater_equal(tf.minimum(height, width), MIN_SIDE,
                                      message=f"images must be at least {MIN_SIDE}x{MIN_SIDE} pixels")
    pad_h = (MULTIPLE - height % MULTIPLE) % MULTIPLE
    pad_w = (MULTIPLE - width % MULTIPLE) % MULTIPLE
    padded = tf.pad(tf.cast(images, tf.float32), [[0, 0], [0, pad_h], [0, pad_w], [0, 0]], mode="SYMMETRIC")
    output = tf.cast(model(padded, training=False), tf.float32)[:, :height, :width, :]
    return tf.cast(tf.round(tf.clip_by_value(output, 0.0, 255.0)), tf.uint8)


def _write_saved_model(model, path: str, max_pixels: int) -> None:
    from keras.export import ExportArchive

    def images_endpoint(images):
        return {OUTPUT_IMAGES: stylize_batch(model, images)}

    def bytes_endpoint(image_bytes):
        def one(encoded):
            return tf.io.encode_png(stylize_batch(model, decode_image(encoded, max_pixels=max_pixels)[tf.newaxis])[0])

        return {OUTPUT_PNG: tf.map_fn(one, image_bytes, fn_output_signature=tf.string)}

    archive = ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE_IMAGES, images_endpoint,
                         input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name=INPUT_IMAGES)])
    archive.add_endpoint(SIGNATURE_BYTES, bytes_endpoint,
                         input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_BYTES)])
    archive.write_out(path, verbose=False)


def sample_images(count: int = 2, size: int = 36, seed: int = 0) -> np.ndarray:
    """Small smooth RGB test images (gradients plus noise), a size that is not a multiple of 4."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    base = (ramp[None, :, None] + ramp[:, None, None]) / 2
    noise = rng.normal(0, 20, (count, size, size + 2, 3))
    return np.clip(np.pad(base, [(0, 0), (0, 2), (0, 0)], mode="edge")[None] + noise, 0, 255).astype(np.uint8)


def _png(image: np.ndarray) -> bytes:
    return tf.io.encode_png(image).numpy()


def write_warmup_requests(path: str, model_name: str) -> int:
    """``PredictionLog`` warm-up records for both signatures, batch 1 and 2."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    images = sample_images(2)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    count = 0
    with tf.io.TFRecordWriter(path) as writer:
        for batch in (images[:1], images):
            for signature, name, value in ((SIGNATURE_IMAGES, INPUT_IMAGES, tf.make_tensor_proto(batch)),
                                           (SIGNATURE_BYTES, INPUT_BYTES,
                                            tf.make_tensor_proto([_png(i) for i in batch], dtype=tf.string))):
                request = predict_pb2.PredictRequest(
                    model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
                request.inputs[name].CopyFrom(value)
                log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
                writer.write(log.SerializeToString())
                count += 1
    return count


def _verify(model, path: str) -> float:
    """Both signatures of the reloaded SavedModel must give the Keras model's pixels (within one grey level)."""
    loaded = tf.saved_model.load(path)
    images = sample_images(2, seed=1)
    expected = stylize_batch(model, tf.constant(images)).numpy().astype(np.int16)
    served = loaded.signatures[SIGNATURE_IMAGES](**{INPUT_IMAGES: tf.constant(images)})[OUTPUT_IMAGES].numpy()
    pngs = loaded.signatures[SIGNATURE_BYTES](**{INPUT_BYTES: tf.constant([_png(i) for i in images])})[OUTPUT_PNG]
    from_bytes = np.stack([tf.io.decode_png(p).numpy() for p in pngs.numpy()])
    difference = 0
    for name, got in ((SIGNATURE_IMAGES, served), (SIGNATURE_BYTES, from_bytes)):
        if got.shape != expected.shape:
            raise ExportError(f"signature {name} returned shape {got.shape}, expected {expected.shape}; "
                              "the export was not put in place")
        difference = max(difference, int(np.abs(got.astype(np.int16) - expected).max()))
    if difference > 1:
        raise ExportError(f"the exported stylizer differs from the Keras model by {difference} grey levels; "
                          "the export was not put in place")
    return float(difference)


def export_stylizer(model, base_path: str, *, version: int | None = None, overwrite: bool = False,
                    model_name: str | None = None, warmup: bool = True, verify: bool = True,
                    max_image_pixels: int = DEFAULT_MAX_PIXELS):
    """Write ``base_path/<version>`` for an image-to-image ``model``; returns an ``ExportResult``.

    ``max_image_pixels``: ``predict_image_bytes`` refuses larger files before decoding them.
    """
    from serving.export import check_max_pixels, publish_version

    check_max_pixels(max_image_pixels)
    if len(model.inputs) != 1 or tuple(model.input_shape[-1:]) != (3,) or tuple(model.output_shape[-1:]) != (3,):
        raise ValueError(f"export_stylizer needs an image-to-image model (RGB in, RGB out), got input "
                         f"{model.input_shape} and output {model.output_shape}")
    model_name = model_name or os.path.basename(os.path.normpath(base_path))

    def write(staging: str) -> float:
        _write_saved_model(model, staging, max_image_pixels)
        os.makedirs(os.path.join(staging, "assets.extra"), exist_ok=True)
        metadata = {"model_name": model_name, "task": "image_to_image", "max_image_pixels": max_image_pixels,
                    "signatures": {SIGNATURE_IMAGES: INPUT_IMAGES, SIGNATURE_BYTES: INPUT_BYTES},
                    "outputs": {SIGNATURE_IMAGES: OUTPUT_IMAGES, SIGNATURE_BYTES: OUTPUT_PNG}}
        with open(os.path.join(staging, "assets.extra", "kcnn.json"), "w") as handle:
            json.dump(metadata, handle, indent=2)
        if warmup:
            write_warmup_requests(os.path.join(staging, WARMUP_FILE), model_name)
        return _verify(model, staging) if verify else float("nan")

    return publish_version(base_path, version, overwrite, write)


def export_stylizer_run(run_dir: str, base_path: str, **options):
    """Export a finished ``kcnn train-style`` run directory."""
    from kcnn.files import load_keras_model  # registers kcnn's custom layers before loading
    from pipelines.style import STYLIZER_FILE

    path = os.path.join(run_dir, STYLIZER_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{run_dir} holds no {STYLIZER_FILE}; train one with "
                                "`kcnn train-style pipelines/configs/style_fast.yaml` first")
    return export_stylizer(load_keras_model(path), base_path, **options)
