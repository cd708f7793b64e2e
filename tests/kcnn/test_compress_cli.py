"""``kcnn compress`` on a run directory (fine-tuned and scored on its data) and ``kcnn export --format litert``."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest

import kcnn
from kcnn import cli, compress, compress_cli
from kcnn.compress.tables import SQUEEZENET_TABLE1_PARAMS, TABLES


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
    assert cli.main(["compress", run, "--table", "squeezenet_table1", "--bits", "6", "--out", out,
                     "--no-finetune"]) == 0
    printed = capsys.readouterr().out
    assert "fire9_expand3x3_conv" in printed and "Table 1 row" in printed
    assert "(no top-1: " in printed  # a run without config.yaml: nothing to score on
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
    def error(*argv) -> str:
        assert cli.main(["compress", *argv]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.count("\n") == 1, captured.err
        return captured.err.strip()

    out = str(tmp_path / "o")
    assert error(str(tmp_path / "missing"), "--out", out) == (
        f"kcnn compress: error: {tmp_path / 'missing'} has no model.keras; give a finished run directory "
        "(from `kcnn train`)")
    assert "--density takes LAYER_OR_GLOB=DENSITY" in error(str(tmp_path), "--out", out, "--density", "conv1=half")
    assert error(str(tmp_path), "--out", out, "--table", "alexnet") == (
        "kcnn compress: error: unknown density table 'alexnet'; known tables: han_alexnet_table4, han_vgg16_table5, "
        "squeezenet_table1")
    assert error(str(tmp_path), "--out", out, "--bits", "conv:8") == (
        "kcnn compress: error: --bits takes one width, or KIND_OR_LAYER=WIDTH pairs separated by commas (conv: every "
        "Conv2D, fc: every Dense, or a layer name or glob; later pairs win), e.g. '--bits 6' or '--bits conv=8,fc=5'; "
        "got 'conv:8'")
    assert "--index-bits takes one width" in error(str(tmp_path), "--out", out, "--index-bits", "conv=8,fc=")
    run = str(tmp_path / "run")
    make_run(run, name="lenet5", size=32, config=False)
    assert error(run, "--out", out).endswith(  # fine-tuning reads the run's data, as kcnn train wrote them
        "is not a finished kcnn run (missing preprocessing.json); train one with `kcnn train CONFIG.yaml` first; "
        "or pass --no-finetune to compress without the run's data")
    assert error(run, "--out", out, "--finetune-steps", "0").endswith("--finetune-steps must be at least 1, got 0 "
                                                                     "(or pass --no-finetune)")


def test_table_widths_are_the_papers_unless_overridden():
    assert compress_cli.TABLE_NAMES == tuple(sorted(TABLES))  # the names --help lists without importing Keras
    han = {"conv": 8, "fc": 5}
    assert compress_cli.widths_for("han_alexnet_table4") == (han, han)
    assert compress_cli.widths_for("han_vgg16_table5", {"fc": 4}, 6) == ({"conv": 8, "fc": 4}, 6)
    assert compress_cli.widths_for("squeezenet_table1") == (6, 8)
    assert compress_cli.widths_for("squeezenet_table1", {"conv_scores": 8}) == ({"*": 6, "conv_scores": 8}, 8)
    assert compress_cli.widths_for(None, 4) == (4, 8)
    assert compress_cli.parse_bits(" conv=8, fc=5") == han and compress_cli.parse_bits("7") == 7


def test_kcnn_compress_fine_tunes_the_centroids_on_the_runs_data_and_scores_top1(shared_tiny_run, tmp_path, capsys):
    from pipelines.evaluate import evaluate

    run, _ = shared_tiny_run  # read only: kcnn compress writes into --out alone
    tuned, plain = str(tmp_path / "tuned"), str(tmp_path / "plain")
    common = ["--density", "*=0.5", "--bits", "conv=4,fc=3", "--index-bits", "conv=4,fc=6"]
    assert cli.main(["compress", run, "--out", tuned, "--finetune-steps", "4", *common]) == 0
    printed = capsys.readouterr().out
    assert "test top-1: dense " in printed and "centroids fine-tuned (4 steps" in printed
    report = json.load(open(os.path.join(tuned, "compression.json")))
    assert report["finetune"]["steps"] == 4 and report["bits"] == {"conv": 4, "fc": 3}
    assert {r["layer"]: (r["bits"], r["index_bits"]) for r in report["layers"]} == {
        "c1_conv": (4, 4), "c3_conv": (4, 4), "c5_conv": (4, 4), "fc1": (3, 6), "logits": (3, 6)}
    # The decoded model's figure is the one `kcnn evaluate` gives for the output directory.
    assert report["top1"]["decoded"] == evaluate(tuned)["top1_accuracy"]
    assert set(report["top1"]) == {"dense", "quantised", "decoded"}

    assert cli.main(["compress", run, "--out", plain, "--no-finetune", *common]) == 0
    assert "decoded from the artefact (no fine-tuning)" in capsys.readouterr().out
    untuned = json.load(open(os.path.join(plain, "compression.json")))
    assert untuned["finetune"] is None and untuned["top1"]["decoded"] == untuned["top1"]["quantised"]
    assert untuned["top1"]["dense"] == report["top1"]["dense"]
    # Fine-tuning moved the shared values, not which weights share them: the same zeros, the same clusters.
    models = [keras.saving.load_model(os.path.join(d, "model.keras")) for d in (tuned, plain)]
    for name in ("c5_conv", "fc1"):
        a, b = (keras.ops.convert_to_numpy(model.get_layer(name).kernel) for model in models)
        np.testing.assert_array_equal(a == 0, b == 0)
        assert not np.allclose(a, b)
        _, groups_a = np.unique(a, return_inverse=True)
        _, groups_b = np.unique(b, return_inverse=True)
        assert len(np.unique(groups_a * 1000 + groups_b)) == len(np.unique(groups_a))


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
