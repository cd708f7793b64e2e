"""An image-to-image model through export and serving: the fast stylizer over gRPC and REST."""

from __future__ import annotations

import base64
import json
import os
import urllib.request

import grpc
import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc

from kcnn.style import johnson2016
from serving.config import ModelEntry
from serving.export import SIGNATURE_BYTES, SIGNATURE_IMAGES, WARMUP_FILE, signature_defs
from serving.server import Server
from serving.stylizer import OUTPUT_IMAGES, OUTPUT_PNG, export_stylizer, stylize_batch


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = johnson2016(filters=(8, 8, 16), residual_blocks=1)
    base = str(tmp_path_factory.mktemp("models") / "style")
    return model, export_stylizer(model, base), base


def _png(image) -> bytes:
    return tf.io.encode_png(image).numpy()


def test_signatures_and_warmup_records(exported):
    _, result, _ = exported
    defs = signature_defs(result.path)
    images, from_bytes = defs[SIGNATURE_IMAGES], defs[SIGNATURE_BYTES]
    assert list(images.inputs) == ["images"] and list(images.outputs) == [OUTPUT_IMAGES]
    assert images.outputs[OUTPUT_IMAGES].dtype == tf.uint8.as_datatype_enum
    assert list(from_bytes.inputs) == ["image_bytes"] and list(from_bytes.outputs) == [OUTPUT_PNG]
    assert from_bytes.outputs[OUTPUT_PNG].dtype == tf.string.as_datatype_enum
    records = list(tf.data.TFRecordDataset(os.path.join(result.path, WARMUP_FILE)))
    assert len(records) == 4  # both signatures, batch 1 and 2
    assert result.max_abs_difference <= 1


def test_odd_sizes_come_back_at_their_own_size(exported):
    model, result, _ = exported
    loaded = tf.saved_model.load(result.path)
    image = np.random.default_rng(1).integers(0, 256, (1, 13, 22, 3), dtype=np.uint8)
    out = loaded.signatures[SIGNATURE_IMAGES](images=tf.constant(image))[OUTPUT_IMAGES].numpy()
    assert out.shape == (1, 13, 22, 3)
    np.testing.assert_array_equal(out, stylize_batch(model, tf.constant(image)).numpy())


def test_served_over_grpc_and_rest_returns_decodable_pngs(exported, tmp_path_factory, capsys):
    model, result, base = exported
    server = Server([ModelEntry("style", base)], port=0, rest_api_port=0, poll_seconds=0.2).start()
    try:
        rng = np.random.default_rng(2)
        inputs = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((17, 30, 3), (24, 24, 3))]
        request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="style",
                                                                           signature_name=SIGNATURE_BYTES))
        request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([_png(i) for i in inputs], dtype=tf.string))
        with grpc.insecure_channel(f"localhost:{server.port}") as channel:
            response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
        pngs = tf.make_ndarray(response.outputs[OUTPUT_PNG])
        for image, encoded in zip(inputs, pngs):
            decoded = tf.io.decode_png(encoded).numpy()
            assert decoded.shape == image.shape
            expected = stylize_batch(model, tf.constant(image[None])).numpy()[0]
            assert np.abs(decoded.astype(int) - expected.astype(int)).max() <= 1
        body = json.dumps({"signature_name": SIGNATURE_BYTES,
                           "instances": [{"b64": base64.b64encode(_png(inputs[0])).decode()}]}).encode()
        url = f"http://localhost:{server.rest_port}/v1/models/style:predict"
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=30) as reply:
            answer = json.loads(reply.read())
        encoded = base64.b64decode(answer["predictions"][0]["b64"])
        assert tf.io.decode_png(encoded).numpy().shape == inputs[0].shape
        _predict_saves_the_images(server.port, inputs, tmp_path_factory.mktemp("predict"), capsys)
    finally:
        server.stop()


def _predict_saves_the_images(port, inputs, directory, capsys):
    from kcnn.cli import main

    paths = []
    for i, image in enumerate(inputs):
        paths.append(str(directory / f"photo{i}.png"))
        with open(paths[-1], "wb") as handle:
            handle.write(_png(image))
    out = directory / "out"
    assert main(["predict", "--server", f"localhost:{port}", "--model", "style", *paths, "--out-dir", str(out)]) == 0
    for i, image in enumerate(inputs):
        assert tf.io.decode_png((out / f"photo{i}.png").read_bytes()).numpy().shape == image.shape
    assert "stylized_png_bytes" in capsys.readouterr().out
    # Without --out-dir the command says what to do instead of failing on missing labels.
    assert main(["predict", "--server", f"localhost:{port}", "--model", "style", paths[0]]) == 2
    assert "save them with --out-dir DIR" in capsys.readouterr().err


def test_a_classifier_is_refused(tmp_path):
    classifier = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="image-to-image model"):
        export_stylizer(classifier, str(tmp_path / "m"))
