"""Segmentation, super-resolution and detection end to end: train, evaluate, report, export, serve over gRPC and REST, predict.

One tiny run of each task is trained once for the module (a few steps: the figures are not the point here,
the shipped recipes' figures are measured in the closing notes); its export is served by kcnn's local server
and read back through TF Serving's protos and REST API (api_rest.md: binary outputs whose names end in
``_bytes`` travel as ``{"b64": ...}``).
"""

from __future__ import annotations

import base64
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from serving_helpers import png

from pipelines import config as C
from pipelines.evaluate import evaluate, format_evaluation
from pipelines.tasks.segmentation import segment
from pipelines.tasks.super_resolution import upscale
from pipelines.train import train
from serving.config import ModelEntry
from serving.export import describe_signatures, export_run
from serving.server import Server

pytestmark = pytest.mark.slow

SEGMENTATION = {"data": {"source": "scenes", "image_size": 32, "channels": 3, "batch_size": 16, "augment": "cifar"},
                "model": {"task": "segmentation", "name": "lenet5"},
                "optimizer": {"name": "adamw", "learning_rate": 0.003},
                "train": {"epochs": 2, "steps_per_epoch": 3, "precise_bn_batches": 0}}
SUPER_RESOLUTION = {"data": {"source": "photos", "image_size": 24, "batch_size": 8},
                    "model": {"task": "super_resolution", "name": "espcn", "task_options": {"scale": 3}},
                    "optimizer": {"name": "adamw", "learning_rate": 0.001},
                    "train": {"epochs": 1, "steps_per_epoch": 3, "precise_bn_batches": 0}}
DETECTION = {"data": {"source": "scenes", "image_size": 32, "channels": 3, "batch_size": 8, "augment": "cifar"},
             "model": {"task": "detection", "name": "resnet18",
                       "head_kwargs": {"levels": [2, 3], "extra_levels": 0, "channels": 16, "convs": 1},
                       "task_options": {"size_boundaries": [8], "max_detections": 20}},
             "optimizer": {"name": "adamw", "learning_rate": 0.001},
             "train": {"epochs": 1, "steps_per_epoch": 2, "precise_bn_batches": 0}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("task-runs")
    out = {}
    for name, raw in (("segmentation", SEGMENTATION), ("super_resolution", SUPER_RESOLUTION),
                      ("detection", DETECTION)):
        run_dir = str(root / "runs" / name)
        metrics = train(C.from_dict(json.loads(json.dumps(raw))), run_dir, verbose=False)
        export = export_run(run_dir, str(root / "models" / name))
        out[name] = (run_dir, metrics, export)
    models = [ModelEntry(name, os.path.dirname(out[name][2].path)) for name in out]
    with Server(models, port=0, rest_api_port=0, poll_seconds=0) as server:
        yield out, server


def _grpc_predict(server, model: str, signature: str, name: str, tensor):
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    request.inputs[name].CopyFrom(tf.make_tensor_proto(tensor))
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    return {key: tf.make_ndarray(value) for key, value in response.outputs.items()}


def _rest_predict_bytes(server, model: str, encoded: bytes) -> dict:
    """One image's prediction over REST (api_rest.md: binary inputs as {"b64": ...}, row format)."""
    import http.client

    body = json.dumps({"signature_name": "predict_image_bytes",
                       "instances": [{"image_bytes": {"b64": base64.b64encode(encoded).decode()}}]})
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    connection.request("POST", f"/v1/models/{model}:predict", body)
    return json.loads(connection.getresponse().read())["predictions"][0]


def _scene_images(count=3, size=40):
    from pipelines.shapes import make_scenes

    return make_scenes(count, size=size, seed=99)[0]


def test_a_segmentation_run_writes_its_figures_report_and_evaluation(runs):
    outcomes, _ = runs
    run_dir, metrics, _ = outcomes["segmentation"]
    assert metrics["task"] == "segmentation"
    assert 0.0 <= metrics["test_mean_iou"] <= 1.0 and 0.0 <= metrics["test_pixel_accuracy"] <= 1.0
    names = json.load(open(os.path.join(run_dir, "class_names.json")))
    assert names == ["background", "circle", "square", "triangle"]
    assert sorted(metrics["test_iou"]) == sorted(names)
    with open(os.path.join(run_dir, "history.csv")) as handle:
        assert handle.readline().strip() == ("epoch,loss,pixel_accuracy,val_loss,val_mean_iou,val_pixel_accuracy,"
                                             "learning_rate,images_per_second,seconds")
    result = evaluate(run_dir)
    assert result["mean_iou"] == pytest.approx(metrics["test_mean_iou"], abs=1e-6)
    assert format_evaluation(result).splitlines()[0].startswith("test split, 120 images: mean IoU")
    page = open(os.path.join(run_dir, "report.html"), encoding="utf-8").read()
    assert page.count("<img") == page.count("<figure>") == page.count("<figcaption>")  # every picture captioned
    for heading in ("Per-class IoU", "Confusion matrix (pixels)", "Worst test images: image, truth, prediction"):
        assert f"<h2>{heading}</h2>" in page
    with pytest.raises(ValueError, match="test-time augmentation .* is for classification runs"):
        evaluate(run_dir, tta="ten_crop")


def test_served_class_maps_equal_in_process_predictions_pixel_for_pixel(runs):
    from pipelines.run_dir import RunDir
    from pipelines.tasks.segmentation import palette

    outcomes, server = runs
    run_dir, _, export = outcomes["segmentation"]
    model = RunDir(run_dir).load_model()
    spec = RunDir(run_dir).preprocessing()
    images = _scene_images(size=40)  # not the training size: the map comes back at the input's own size
    expected = {k: v.numpy() for k, v in segment(model, tf.constant(images), spec).items()}
    served = _grpc_predict(server, "segmentation", "serving_default", "images", images)
    assert served["class_map"].shape == (3, 40, 40) and served["class_map"].dtype == np.int32
    np.testing.assert_array_equal(served["class_map"], expected["class_map"])
    np.testing.assert_allclose(served["probabilities"], expected["probabilities"], atol=1e-5)
    from_bytes = _grpc_predict(server, "segmentation", "predict_image_bytes", "image_bytes",
                               np.array([png(images[0])], dtype=object))
    np.testing.assert_array_equal(from_bytes["class_map"][0], expected["class_map"][0])
    colours = tf.io.decode_png(from_bytes["mask_png_bytes"][0]).numpy()
    np.testing.assert_array_equal(colours, palette()[expected["class_map"][0]])
    signatures = describe_signatures(export.path)
    assert "outputs['class_map'] tensor_info:\n        dtype: DT_INT32\n        shape: (-1, -1, -1)" in signatures
    assert "outputs['mask_png_bytes'] tensor_info:\n        dtype: DT_STRING\n        shape: (-1)" in signatures


def test_rest_returns_the_mask_png_as_b64_and_kcnn_predict_writes_overlays(runs, tmp_path, capsys):
    from kcnn.cli import main

    outcomes, server = runs
    image = _scene_images(1, size=48)[0]
    prediction = _rest_predict_bytes(server, "segmentation", png(image))
    assert np.asarray(prediction["class_map"]).shape == (48, 48)
    mask = tf.io.decode_png(base64.b64decode(prediction["mask_png_bytes"]["b64"])).numpy()
    assert mask.shape == (48, 48, 3)
    path = tmp_path / "scene.png"
    path.write_bytes(png(image))
    code = main(["predict", str(path), "--server", f"127.0.0.1:{server.port}", "--model", "segmentation",
                 "--out-dir", str(tmp_path / "out")])
    assert code == 0
    assert sorted(os.listdir(tmp_path / "out")) == ["scene_mask.png", "scene_overlay.png"]
    assert capsys.readouterr().out.startswith(f"{path} -> {tmp_path / 'out' / 'scene_mask.png'}")


def test_a_super_resolution_run_reports_psnr_and_ssim_beside_bicubic(runs):
    outcomes, _ = runs
    run_dir, metrics, _ = outcomes["super_resolution"]
    assert metrics["task"] == "super_resolution" and metrics["scale"] == 3
    for key in ("test_psnr", "test_ssim", "bicubic_psnr", "bicubic_ssim"):
        assert np.isfinite(metrics[key])
    result = evaluate(run_dir)
    assert result["test_psnr"] == pytest.approx(metrics["test_psnr"], abs=1e-6)
    assert result["bicubic_psnr"] == pytest.approx(metrics["bicubic_psnr"], abs=1e-9)  # no model involved
    lines = format_evaluation(result).splitlines()
    assert lines[0].startswith(f"test split, {len(result['photos'])} photographs at x3: PSNR")
    page = open(os.path.join(run_dir, "report.html"), encoding="utf-8").read()
    assert page.count("<img") == page.count("<figure>") == page.count("<figcaption>")  # every picture captioned
    assert "<h2>PSNR and SSIM against bicubic (Y channel, border cropped by the scale)</h2>" in page
    assert "<h2>Crops: bicubic, model, original</h2>" in page


def test_served_upscaled_images_equal_in_process_ones_and_kcnn_predict_writes_them(runs, tmp_path, capsys):
    from kcnn.cli import main
    from pipelines.run_dir import RunDir

    outcomes, server = runs
    run_dir, _, _ = outcomes["super_resolution"]
    model = RunDir(run_dir).load_model()
    image = np.random.default_rng(0).integers(0, 256, (1, 13, 17, 3), dtype=np.uint8)
    expected = upscale(model, tf.constant(image), 3)[0].numpy()
    served = _grpc_predict(server, "super_resolution", "serving_default", "images", image)
    assert served["upscaled"].shape == (1, 39, 51, 3)
    assert np.abs(served["upscaled"].astype(int) - expected.astype(int)).max() <= 1
    path = tmp_path / "small.png"
    path.write_bytes(png(image[0]))
    assert main(["predict", str(path), "--server", f"127.0.0.1:{server.port}", "--model", "super_resolution",
                 "--out-dir", str(tmp_path / "out")]) == 0
    written = tf.io.decode_png((tmp_path / "out" / "small_upscaled.png").read_bytes()).numpy()
    assert np.abs(written.astype(int) - expected[0].astype(int)).max() <= 1
    assert capsys.readouterr().out.strip().endswith("(51x39)")


def test_a_detection_run_scores_coco_ap_and_reports_per_class_ap_and_curves(runs):
    outcomes, _ = runs
    run_dir, metrics, _ = outcomes["detection"]
    assert metrics["task"] == "detection"
    names = json.load(open(os.path.join(run_dir, "class_names.json")))
    assert names == ["circle", "square", "triangle"]
    assert sorted(metrics["test_per_class_ap"]) == sorted(names) and sorted(metrics["test_pr"]) == sorted(names)
    assert all(len(curve["0.5"]) == 101 for curve in metrics["test_pr"].values())  # COCOeval's recall points
    with open(os.path.join(run_dir, "history.csv")) as handle:
        assert handle.readline().strip() == ("epoch,loss,box_iou,val_loss,val_map,val_ap50,"
                                             "learning_rate,images_per_second,seconds")
    result = evaluate(run_dir)  # the same detections scored again by pycocotools
    for key in ("map", "ap50", "ap75"):
        assert result[key] == pytest.approx(metrics[f"test_{key}"], abs=1e-9)
    assert result["per_class"] == pytest.approx(metrics["test_per_class_ap"], abs=1e-9)
    assert format_evaluation(result).splitlines()[0].startswith(
        f"test split, 120 images, {result['objects']} objects, {result['detections']} detections: mAP@[.5:.95]")
    page = open(os.path.join(run_dir, "report.html"), encoding="utf-8").read()
    assert page.count("<img") == page.count("<figure>") == page.count("<figcaption>")  # every picture captioned
    for heading in ("COCO box AP (pycocotools)", "Per-class AP@[.5:.95]", "Precision-recall at IoU 0.5 and 0.75",
                    "Test images: truth (left), detections (right)"):
        assert f"<h2>{heading}</h2>" in page


def test_served_detections_equal_in_process_ones_over_grpc_for_arrays_and_bytes(runs):
    from pipelines.run_dir import RunDir
    from pipelines.tasks.detection import _model_image, served

    outcomes, server = runs
    run_dir, _, export = outcomes["detection"]
    run = RunDir(run_dir)
    model, spec = run.load_model(), run.preprocessing()
    meta = json.load(open(os.path.join(export.path, "assets.extra", "kcnn.json")))
    images = _scene_images(size=45)  # another size than the model's: boxes come back normalised to the image
    inputs = tf.stack([_model_image(tf.constant(image), spec) for image in images])
    expected = {k: v.numpy() for k, v in served(model, inputs, spec, meta["detection"],
                                                tf.constant(meta["class_names"])).items()}
    got = _grpc_predict(server, "detection", "serving_default", "images", images)
    assert got["detection_boxes"].shape == (3, 20, 4) and got["detection_boxes"].dtype == np.float32
    assert got["num_detections"].dtype == np.float32 and got["detection_classes"].dtype == np.float32
    np.testing.assert_array_equal(got["num_detections"], expected["num_detections"])
    np.testing.assert_array_equal(got["detection_classes"], expected["detection_classes"])
    np.testing.assert_allclose(got["detection_boxes"], expected["detection_boxes"], atol=1e-5)
    np.testing.assert_allclose(got["detection_scores"], expected["detection_scores"], atol=1e-5)
    assert set(np.unique(got["detection_classes"][got["detection_scores"] > 0])) <= {1.0, 2.0, 3.0}  # 1-based
    from_bytes = _grpc_predict(server, "detection", "predict_image_bytes", "image_bytes",
                               np.array([png(image) for image in images], dtype=object))
    np.testing.assert_array_equal(from_bytes["num_detections"], expected["num_detections"])
    np.testing.assert_allclose(from_bytes["detection_boxes"], expected["detection_boxes"], atol=1e-5)
    count = int(expected["num_detections"][0])
    assert [n.decode() for n in from_bytes["detection_class_names"][0][:count]] == [
        meta["class_names"][int(c) - 1] for c in expected["detection_classes"][0][:count]]
    assert set(from_bytes["detection_class_names"][0][count:].tolist()) <= {b""}
    signatures = describe_signatures(export.path)
    assert "outputs['detection_boxes'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, 20, 4)" in signatures


def test_rest_returns_detections_per_instance_and_kcnn_predict_draws_them(runs, tmp_path, capsys):
    from kcnn.cli import main

    outcomes, server = runs
    image = _scene_images(1, size=48)[0]
    prediction = _rest_predict_bytes(server, "detection", png(image))
    assert np.asarray(prediction["detection_boxes"]).shape == (20, 4)
    assert isinstance(prediction["num_detections"], float)
    path = tmp_path / "scene.png"
    path.write_bytes(png(image))
    assert main(["predict", str(path), "--server", f"127.0.0.1:{server.port}", "--model", "detection",
                 "--out-dir", str(tmp_path / "out")]) == 0
    assert os.listdir(tmp_path / "out") == ["scene_boxes.png"]
    drawn = tf.io.decode_png((tmp_path / "out" / "scene_boxes.png").read_bytes()).numpy()
    assert drawn.shape == (240, 240, 3)  # magnified x5 so labels stay readable
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{path} -> {tmp_path / 'out' / 'scene_boxes.png'} (")
    assert f"({int(prediction['num_detections'])} detections: " in line
