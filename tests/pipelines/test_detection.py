"""Detection: FCOS targets and losses, box augmentation, and COCO AP by pycocotools on known cases."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import kcnn
from kcnn import detection as fcos
from pipelines import augment as aug
from pipelines.coco import coco_map

BOXES = np.array([[[10, 10, 30, 30], [0, 0, 0, 0]], [[5, 5, 45, 25], [40, 40, 60, 60]]], np.float32)
CLASSES = np.array([[0, -1], [1, 2]])


def test_perfect_detections_score_ap_one():
    result = coco_map(BOXES, CLASSES, ["a", "b", "c"], BOXES, np.ones((2, 2)), np.maximum(CLASSES, 0), [1, 2])
    assert result["map"] == pytest.approx(1.0) and result["ap50"] == pytest.approx(1.0)


def test_boxes_shifted_to_iou_0_818_pass_seven_of_cocos_ten_thresholds():
    # Each box moved 2 px sideways: IoU = 18/22 = 0.818 for all three, so AP = 1 at IoU 0.50..0.80 (7 of 10), 0 above.
    shifted = BOXES.copy()
    shifted[..., [1, 3]] += 2
    result = coco_map(BOXES, CLASSES, ["a", "b", "c"], shifted, np.ones((2, 2)), np.maximum(CLASSES, 0), [1, 2])
    assert result["map"] == pytest.approx(0.7) and result["ap75"] == pytest.approx(1.0)


def test_a_location_takes_the_smallest_box_whose_centre_region_and_size_range_hold_it():
    points = np.array([[20.0, 20.0], [50.0, 50.0]], np.float32)
    strides = np.array([8.0, 8.0], np.float32)
    ranges = np.array([[0.0, 1e8]] * 2, np.float32)
    boxes = np.array([[[0, 0, 40, 40], [12, 12, 28, 28], [0, 0, 0, 0]]], np.float32)
    classes, target, centerness = (np.asarray(t) for t in fcos.assign_targets(
        points, strides, ranges, boxes, np.array([[1, 2, -1]])))
    assert classes.tolist() == [[2, -1]]  # both boxes hold (20, 20); the smaller wins; (50, 50) is in neither
    np.testing.assert_array_equal(target[0, 0], [12, 12, 28, 28])
    assert centerness[0, 0] == pytest.approx(1.0) and centerness[0, 1] == 0.0  # dead centre


def test_giou_is_one_for_equal_boxes_and_negative_for_far_ones():
    a = np.array([[0, 0, 10, 10]], np.float32)
    assert float(fcos.giou(a, a)[0]) == pytest.approx(1.0)
    far = np.array([[20, 20, 30, 30]], np.float32)  # enclosing 30x30, union 200: 0 - 700/900
    assert float(fcos.giou(a, far)[0]) == pytest.approx(-7 / 9)


def test_flip_and_crop_move_the_boxes_with_the_pixels():
    image = np.zeros((32, 32, 1), np.float32)
    image[4:12, 20:30] = 1.0
    boxes, classes = tf.constant([[4.0, 20.0, 12.0, 30.0]]), tf.constant([0])
    flipped, moved = aug.flip_with_boxes(tf.constant(image), boxes, tf.constant([0, 0]), probability=1.0)
    ys, xs = np.nonzero(flipped.numpy()[..., 0])
    np.testing.assert_array_equal(moved.numpy()[0], [ys.min(), xs.min(), ys.max() + 1, xs.max() + 1])
    for seed in range(5):
        out, kept, kept_classes = aug.scale_crop_with_boxes(tf.constant(image), boxes, classes,
                                                            tf.constant([seed, 1]), 32, (0.75, 1.25))
        if kept_classes.numpy()[0] >= 0:  # the box still frames the (resampled) square
            ys, xs = np.nonzero(out.numpy()[..., 0] > 0.5)
            np.testing.assert_allclose(kept.numpy()[0], [ys.min(), xs.min(), ys.max() + 1, xs.max() + 1], atol=1.0)


def test_fcos_head_lays_out_one_row_per_location():
    model = kcnn.build("resnet18", num_classes=3, head="fcos", input_shape=(64, 64, 3),
                       head_kwargs={"levels": (2, 3, 4), "extra_levels": 0, "channels": 64, "convs": 2})
    assert model.output_shape == (None, 16 * 16 + 8 * 8 + 4 * 4, 3 + 5)
    assert fcos.decoder_of(model).strides == [4, 8, 16]


# ------------------------------------------------------------------------------- COCO and TFDS sources


def _coco_folder(root, count=4):
    """Scenes written in COCO's layout: val2017/*.png and annotations/instances_val2017.json.

    Category ids 3, 7, 11 (COCO's ids have gaps), one crowd annotation, one box reaching past its image
    (COCO's boxes do) and one image without objects.
    """
    from pipelines.shapes import make_scenes

    images, _, instances = make_scenes(count, size=40, seed=5)
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    ids = (3, 7, 11)
    data = {"images": [], "annotations": [], "categories": [{"id": i, "name": n}
                                                             for i, n in zip(ids, ("circle", "square", "triangle"))]}
    for index, image in enumerate(images):
        (root / "val2017" / f"{index:012d}.png").write_bytes(tf.io.encode_png(image).numpy())
        data["images"].append({"id": 100 + index, "file_name": f"{index:012d}.png", "height": 40, "width": 40})
        for label, (ymin, xmin, ymax, xmax) in (instances[index] if index < count - 1 else []):
            data["annotations"].append({"id": len(data["annotations"]) + 1, "image_id": 100 + index,
                                        "category_id": ids[label], "bbox": [xmin, ymin, xmax - xmin, ymax - ymin],
                                        "area": (xmax - xmin) * (ymax - ymin), "iscrowd": 0})
    data["annotations"][0]["bbox"][2] += 50  # past the right edge: clipped to the image
    data["annotations"].append({"id": 999, "image_id": 100, "category_id": 3, "bbox": [0, 0, 40, 40], "area": 1600,
                                "iscrowd": 1})
    path = root / "annotations" / "instances_val2017.json"
    path.write_text(__import__("json").dumps(data))
    return path, images, instances


def test_a_coco_folder_gives_the_boxes_pycocotools_reads_from_its_json(tmp_path):
    from pycocotools.coco import COCO

    from pipelines.data import load_dataset
    from pipelines.sources import load_source

    path, _, instances = _coco_folder(tmp_path)
    source = load_source(f"coco:{tmp_path}", "validation")
    assert source.class_names == ["circle", "square", "triangle"] and source.num_examples == 4 and source.encoded
    reference = COCO(str(path))  # the reference reader of the format
    category_index = {c: k for k, c in enumerate(sorted(reference.getCatIds()))}
    for image_id, (boxes, classes) in zip(sorted(reference.getImgIds()), source.boxes):
        notes = reference.loadAnns(reference.getAnnIds(imgIds=[image_id], iscrowd=False))
        expected = [(y, x, min(y + h, 40.0), min(x + w, 40.0)) for x, y, w, h in (n["bbox"] for n in notes)]
        kept = classes.numpy() >= 0
        assert classes.numpy()[kept].tolist() == [category_index[n["category_id"]] for n in notes]
        np.testing.assert_allclose(boxes.numpy()[kept], np.reshape(expected, (-1, 4)))  # the wide box ends at 40
    dataset, info = load_dataset(f"coco:{tmp_path}", "validation", image_size=20, batch_size=4, target="boxes")
    _, targets = next(iter(dataset))
    first = [box for label, box in instances[0]]
    np.testing.assert_allclose(targets["boxes"][0, 1:len(first)].numpy(), np.array(first[1:]) / 2.0)  # 40 -> 20
    assert targets["classes"][3].numpy().max() == -1  # the image without objects stays, as a negative
    with pytest.raises(FileNotFoundError, match=r"has no annotations/instances_test\*\.json for the test split "
                                                r"\(found: instances_val2017\.json\).*data\.test_split at a split"):
        load_source(f"coco:{tmp_path}", "test")


def test_coco_json_errors_name_the_file_and_the_annotation(tmp_path):
    from pipelines.sources import load_source

    path, _, _ = _coco_folder(tmp_path, count=2)
    data = __import__("json").loads(path.read_text())
    data["annotations"][1]["category_id"] = 42
    path.write_text(__import__("json").dumps(data))
    with pytest.raises(ValueError, match=rf"{path}: annotation 1 has category_id 42 that no entry of categories has"):
        load_source(f"coco:{tmp_path}", "validation")
    (tmp_path / "val2017" / "000000000001.png").unlink()
    data["annotations"][1]["category_id"] = 3
    path.write_text(__import__("json").dumps(data))
    with pytest.raises(FileNotFoundError, match=r"lists 1 images that are not in .*val2017, for example"):
        load_source(f"coco:{tmp_path}", "validation")


def mock_voc(self, split, decoders=None, read_config=None, shuffle_files=False):
    """voc-like examples: normalised boxes, labels and the is_difficult flag, consistent per object."""

    def examples():
        for index in range(3):
            height, width = 20 + 4 * index, 40
            yield {"image": np.full((height, width, 3), 50 * index, np.uint8), "objects": {
                "bbox": np.array([[0.1, 0.2, 0.5, 0.6], [0.5, 0.0, 1.0, 0.25]], np.float32),
                "label": np.array([index, 19], np.int64), "is_difficult": np.array([False, index == 1])}}

    return tf.data.Dataset.from_generator(examples, output_signature={
        "image": tf.TensorSpec([None, None, 3], tf.uint8),
        "objects": {"bbox": tf.TensorSpec([None, 4], tf.float32), "label": tf.TensorSpec([None], tf.int64),
                    "is_difficult": tf.TensorSpec([None], tf.bool)}})


def test_tfds_voc_objects_become_pixel_boxes_without_the_difficult_ones(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    from pipelines.data import load_dataset
    from pipelines.sources import load_source

    with tfds.testing.mock_data(as_dataset_fn=mock_voc):
        source = load_source("tfds:voc/2007", "train", data_dir=str(tmp_path), boxes=True)
        assert len(source.class_names) == 20 and source.class_names[19] == "tvmonitor"  # VOC's label names
        found = [(b.numpy(), c.numpy()) for b, c in source.boxes]
        np.testing.assert_allclose(found[0][0], [[2, 8, 10, 24], [10, 0, 20, 10]], atol=1e-5)  # 20 x 40 pixels
        assert [c.tolist() for _, c in found] == [[0, 19], [1], [2, 19]]  # image 1's difficult object left out
        np.testing.assert_allclose(found[2][0][1], [14, 0, 28, 10], atol=1e-5)  # 28 x 40
        dataset, info = load_dataset("tfds:voc/2007", "train", image_size=16, batch_size=3, target="boxes",
                                     data_dir=str(tmp_path))
        images, targets = next(iter(dataset))
        assert images.shape == (3, 16, 16, 3) and targets["boxes"].shape == (3, 100, 4)
        np.testing.assert_allclose(targets["boxes"][0, 0].numpy(), [1.6, 3.2, 8.0, 9.6], atol=1e-4)
    with pytest.raises(ValueError, match="tfds:mnist has no object boxes"):
        load_source("tfds:mnist", "train", data_dir=str(tmp_path), boxes=True)


# ------------------------------------------------------------------------------ Grad-CAM of a detection


def test_grad_cam_of_a_detection_explains_the_box_nms_keeps_first_with_the_gradients_tf_gives():
    from kcnn.insight import detection_grad_cam
    from pipelines.tasks.detection import detect

    import keras

    keras.utils.set_random_seed(0)
    model = kcnn.build("resnet18", num_classes=3, head="fcos", input_shape=(32, 32, 3),
                       head_kwargs={"levels": (2, 3), "extra_levels": 0, "channels": 16, "convs": 1})
    image = np.random.default_rng(3).normal(size=(32, 32, 3)).astype(np.float32)
    explained = detection_grad_cam(model, image)
    outputs = model(image[None], training=False)
    first = detect(outputs, 3, 32, {"max_detections": 5, "iou_threshold": 0.6, "score_threshold": 0.0})
    assert explained.class_index == int(first["classes"][0, 0])
    assert explained.score == pytest.approx(float(first["scores"][0, 0]), abs=1e-6)
    # the served box is the raw one clipped to the image
    np.testing.assert_allclose(np.clip(np.array(explained.box) / 32, 0, 1), first["boxes"][0, 0].numpy(), atol=1e-5)
    assert explained.layer == f"fcos_p{explained.level}" and explained.heatmap.shape == (32, 32)
    # HiResCAM by TensorFlow's own tape on a model split at the layer: relu(sum_k A * dlogit/dA), bilinear, [0, 1]
    from kcnn.insight.graph import run_graph

    layer = model.get_layer(explained.layer)
    activations = tf.constant(keras.Model(model.inputs, layer.output)(image[None]))
    with tf.GradientTape() as tape:
        tape.watch(activations)
        out = run_graph(model, image[None], wanted=model.outputs[0], replace={layer.output: activations})
        logit = out[0, explained.location, explained.class_index]
    grad = tape.gradient(logit, activations)
    cam = tf.nn.relu(tf.reduce_sum(activations * grad, -1))[..., None]
    cam = tf.image.resize(cam, (32, 32), method="bilinear")[..., 0].numpy()[0]
    cam = (cam - cam.min()) / (cam.max() - cam.min())
    np.testing.assert_allclose(explained.heatmap, cam, atol=1e-5)
    other = detection_grad_cam(model, image, location=0, class_index=2, method="grad_cam")
    assert (other.location, other.class_index, other.level) == (0, 2, 2)
    with pytest.raises(ValueError, match="method must be one of hires_cam, grad_cam, got 'cam'"):
        detection_grad_cam(model, image, method="cam")
    with pytest.raises(ValueError, match=r"location must be in \[0, 80\) and class_index in \[0, 3\), got 80 and 0"):
        detection_grad_cam(model, image, location=80, class_index=0)
    with pytest.raises(ValueError, match=r"location must be in \[0, 80\) and class_index in \[0, 3\), got None and 3"):
        detection_grad_cam(model, image, class_index=3)


def test_the_papers_detector_on_resnet50_has_torchvisions_fcos_parameter_count():
    # torchvision.models.detection.FCOS_ResNet50_FPN_Weights.COCO_V1.meta["num_params"] == 32_269_600: ResNet-50
    # with FrozenBatchNorm2d (statistics and affine as buffers, not parameters), FPN P3-P5 plus P6/P7 from P5,
    # 4 conv-GroupNorm-ReLU layers of 256 channels per tower, 91 COCO classes. kcnn's head also learns one box
    # scale per level (the paper's exp(s_i x)), which torchvision's head does not: 5 more.
    import keras

    model = kcnn.build("resnet50", num_classes=91, head="fcos", input_shape=(256, 256, 3))
    total = sum(int(np.prod(v.shape)) for v in model.weights)
    batch_norm = sum(int(np.prod(v.shape)) for layer in model.layers
                     if isinstance(layer, keras.layers.BatchNormalization) for v in layer.weights)
    scales = [layer for layer in model.layers if isinstance(layer, fcos.LevelScale)]
    assert len(scales) == 5 and fcos.decoder_of(model).strides == [8, 16, 32, 64, 128]
    assert total - batch_norm - len(scales) == 32_269_600
