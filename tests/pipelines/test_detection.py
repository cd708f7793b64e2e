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
