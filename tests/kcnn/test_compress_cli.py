"""``kcnn compress`` on a run directory and ``kcnn export --format litert`` (int8 LiteRT)."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest

import kcnn
from kcnn import cli, compress
from kcnn.compress.tables import SQUEEZENET_TABLE1_PARAMS


def make_run(directory, name="squeezenet1_0", size=48, config=True):
    os.makedirs(directory, exist_ok=True)
    keras.utils.set_random_seed(0)
    model = kcnn.build(name, num_classes=10, input_shape=(size, size, 1))
    model.save(os.path.join(directory, "model.keras"))
    with open(os.path.join(directory, "class_names.json"), "w") as handle:
        json.dump([str(i) for i in range(10)], handle)
    if config:
        from pipelines.config import from_dict

        cfg = from_dict({"data": {"source": "digits", "image_size": size, "channels": 1, "batch_size": 64},
                         "model": {"name": name}})
        with open(os.path.join(directory, "config.yaml"), "w") as handle:
            handle.write(cfg.to_yaml())
    return model


@pytest.mark.slow
def test_kcnn_compress_writes_artefact_report_and_decoded_model(tmp_path, capsys):
    run, out = str(tmp_path / "run"), str(tmp_path / "out")
    make_run(run, config=False)
    assert cli.main(["compress", run, "--table", "squeezenet_table1", "--bits", "6", "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "fire9_expand3x3_conv" in printed and "Table 1 row" in printed
    report = json.load(open(os.path.join(out, "compression.json")))
    after = {}
    for row in report["layers"]:
        module = row["layer"].split("_")[0]
        after[module] = after.get(module, 0) + row["params_after"]
    for module in [f"fire{i}" for i in range(2, 10)]:  # the Fire modules do not depend on input size or classes
        assert abs(after[module] - SQUEEZENET_TABLE1_PARAMS[module][1]) <= 0.005 * SQUEEZENET_TABLE1_PARAMS[module][1]
    assert report["total_bytes"] < report["bytes_before_huffman"] < report["dense_bytes"]
    assert report["file_bytes"] == os.path.getsize(os.path.join(out, "model.kcnn.zip"))
    decoded = keras.saving.load_model(os.path.join(out, "model.keras"), safe_mode=True)
    kernel = keras.ops.convert_to_numpy(decoded.get_layer("fire9_expand3x3_conv").kernel)
    assert np.count_nonzero(kernel) == round(0.30 * kernel.size)
    assert len(np.unique(kernel[kernel != 0])) <= 63  # 6-bit codes, code 0 is the pruned weight
    restored = compress.load_artefact(os.path.join(out, "model.kcnn.zip"))
    for a, b in zip(restored.get_weights(), decoded.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert os.path.exists(os.path.join(out, "class_names.json"))


def test_kcnn_compress_user_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["compress", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"kcnn compress: error: {tmp_path / 'missing'} has no model.keras; give a finished run directory "
        "(from `kcnn train`)")
    assert cli.main(["compress", str(tmp_path), "--out", str(tmp_path / "o"), "--density", "conv1=half"]) == 2
    assert "--density takes LAYER_OR_GLOB=DENSITY" in capsys.readouterr().err


def test_litert_int8_conversion_quantises_and_tracks_the_keras_model():
    from serving import litert

    keras.utils.set_random_seed(1)
    inputs = keras.Input((12, 12, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    outputs = keras.layers.Dense(4, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    images = np.random.default_rng(0).random((32, 12, 12, 1), dtype=np.float32)
    int8 = litert.convert(model, images)
    floating = litert.convert(model, [], int8=False)
    runner = litert.interpreter(int8)
    dtypes = {np.dtype(t["dtype"]).name for t in runner.get_tensor_details()}
    assert "int8" in dtypes
    assert len(int8) < len(floating)
    expected = model.predict(images, verbose=0)
    np.testing.assert_allclose(litert.predict(floating, images), expected, atol=1e-5)
    assert np.max(np.abs(litert.predict(int8, images) - expected)) < 0.05
    with pytest.raises(ValueError, match="int8 quantisation needs representative images"):
        litert.convert(model, [])


@pytest.mark.slow
def test_kcnn_export_format_litert_evaluates_on_the_test_split(tmp_path, capsys):
    run, out = str(tmp_path / "run"), str(tmp_path / "lite")
    make_run(run, name="squeezenet1_1", size=40)
    with open(os.path.join(run, "preprocessing.json"), "w") as handle:  # what `kcnn train` records
        handle.write(json.dumps({"image_size": 40, "channels": 1}))
    assert cli.main(["export", run, "--base-path", out, "--format", "litert"]) == 0
    assert "test accuracy on 360 images" in capsys.readouterr().out
    meta = json.load(open(os.path.join(out, "litert.json")))
    assert meta["bytes"] == os.path.getsize(os.path.join(out, "model.tflite")) and meta["int8"]
    assert abs(meta["litert_accuracy"] - meta["float_accuracy"]) <= 0.1
