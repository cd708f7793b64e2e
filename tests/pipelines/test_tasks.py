"""The task layer: its registry, config checks, and each task's loss and figures against independent computations."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipelines import config as C
from pipelines.tasks import TASKS, get_task, task_for_outputs
from pipelines.tasks.segmentation import IGNORE, palette, scores_from_confusion, soft_dice_loss


def test_the_registry_holds_every_task_and_names_the_closest_on_a_miss():
    assert TASKS.list() == ["classification", "detection", "segmentation", "super_resolution"]
    assert get_task(None) is get_task("classification")
    with pytest.raises(C.ConfigError, match=r"^model.task: unknown task 'segmentaton'. Did you mean 'segmentation'\? "
                                            r"Available: classification, detection, segmentation, super_resolution.$"):
        C.from_dict({"model": {"task": "segmentaton", "name": "lenet5"}})


def test_task_options_are_checked_by_their_task():
    with pytest.raises(C.ConfigError, match=r"unknown model.task_options key 'dice' for task 'segmentation'. "
                                            r"Did you mean 'dice_weight'\? Valid: dice_weight"):
        C.from_dict({"model": {"task": "segmentation", "name": "lenet5", "task_options": {"dice": 1}}})
    with pytest.raises(C.ConfigError, match="unknown model.task_options key 'scale' for task 'classification'. "
                                            "Valid: none"):
        C.from_dict({"model": {"name": "lenet5", "task_options": {"scale": 3}}})
    with pytest.raises(C.ConfigError, match=r"model.head 'fully_conv' does not label pixels; segmentation takes "
                                            r"segmentation \(or null: FCN-8s\)"):
        C.from_dict({"model": {"task": "segmentation", "name": "lenet5", "head": "fully_conv"}})
    with pytest.raises(C.ConfigError, match="must be 2, 3 or 4"):
        C.from_dict({"model": {"task": "super_resolution", "name": "espcn", "task_options": {"scale": 5}}})
    with pytest.raises(ValueError, match="unknown super-resolution model 'resnet18'"):
        C.from_dict({"model": {"task": "super_resolution", "name": "resnet18"}})


def test_a_client_recognises_each_task_by_its_served_outputs():
    assert task_for_outputs({"probabilities": 0, "classes": 0, "scores": 0, "labels": 0}).name == "classification"
    assert task_for_outputs({"class_map": 0, "probabilities": 0, "mask_png_bytes": 0}).name == "segmentation"
    assert task_for_outputs({"upscaled_png_bytes": 0}).name == "super_resolution"
    assert task_for_outputs({"stylized_png_bytes": 0}) is None  # kcnn's stylizer: written as plain images


def _random_segmentation(seed=0, classes=4, shape=(3, 9, 11)):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, classes, shape).astype(np.int32)
    truth[rng.random(shape) < 0.1] = IGNORE
    logits = rng.normal(size=shape + (classes,)).astype(np.float32)
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return truth, probabilities


def test_pixel_accuracy_and_iou_match_numpy_and_keras_mean_iou():
    """Against an independent per-class count in numpy and keras.metrics.MeanIoU (Keras' own definition)."""
    classes = 4
    truth, probabilities = _random_segmentation(classes=classes)
    task = get_task("segmentation")
    sums = task.evaluation_sums(tf.constant(truth), tf.constant(probabilities), classes)
    matrix = sums["confusion"].numpy()
    predicted = probabilities.argmax(-1)
    valid = truth != IGNORE
    assert matrix.sum() == valid.sum()
    scores = scores_from_confusion(matrix, ["background", "a", "b", "c"])
    ious = []
    for c in range(classes):
        t, p = (truth == c) & valid, (predicted == c) & valid
        ious.append((t & p).sum() / (t | p).sum())
        assert scores["iou"][["background", "a", "b", "c"][c]] == pytest.approx(ious[-1], abs=1e-12)
    assert scores["mean_iou"] == pytest.approx(np.mean(ious), abs=1e-12)
    assert scores["pixel_accuracy"] == pytest.approx((predicted == truth)[valid].mean(), abs=1e-12)
    keras_iou = keras.metrics.MeanIoU(num_classes=classes)
    keras_iou.update_state(truth[valid], predicted[valid])
    assert scores["mean_iou"] == pytest.approx(float(keras_iou.result()), abs=1e-6)


def test_a_class_absent_from_truth_and_prediction_is_left_out_of_the_mean():
    matrix = np.array([[5, 1, 0], [2, 4, 0], [0, 0, 0]])
    scores = scores_from_confusion(matrix)
    assert scores["iou"]["2"] is None
    assert scores["mean_iou"] == pytest.approx((5 / 8 + 4 / 7) / 2)


def test_the_loss_ignores_label_255_and_is_the_mean_cross_entropy_of_the_valid_pixels():
    truth, probabilities = _random_segmentation(seed=1)
    task = get_task("segmentation")
    loss = task.loss(tf.constant(truth), tf.constant(probabilities), {"dice_weight": 0.0}, None).numpy()
    for i in range(len(truth)):
        valid = truth[i] != IGNORE
        expected = -np.log(probabilities[i][valid, truth[i][valid]]).mean()
        assert loss[i] == pytest.approx(expected, rel=1e-5)
    changed = probabilities.copy()
    changed[truth == IGNORE] = np.roll(changed[truth == IGNORE], 1, axis=-1)  # other guesses where ignored
    again = task.loss(tf.constant(truth), tf.constant(changed), {"dice_weight": 0.0}, None).numpy()
    np.testing.assert_allclose(again, loss, rtol=1e-6)


def test_the_soft_dice_loss_is_zero_for_a_perfect_prediction_and_adds_with_its_weight():
    truth, probabilities = _random_segmentation(seed=2)
    labels = np.where(truth == IGNORE, 0, truth)
    valid = tf.constant((truth != IGNORE).astype(np.float32))
    perfect = tf.one_hot(labels, 4)
    np.testing.assert_allclose(soft_dice_loss(tf.constant(labels), perfect, valid).numpy(), 0.0, atol=1e-6)
    task = get_task("segmentation")
    plain = task.loss(tf.constant(truth), tf.constant(probabilities), {"dice_weight": 0.0}, None).numpy()
    both = task.loss(tf.constant(truth), tf.constant(probabilities), {"dice_weight": 0.5}, None).numpy()
    dice = soft_dice_loss(tf.constant(labels), tf.constant(probabilities), valid).numpy()
    np.testing.assert_allclose(both, plain + 0.5 * dice, rtol=1e-5)


def test_the_palette_is_pascal_vocs():
    """The first VOC colours (devkit's VOClabelcolormap.m): background black, then maroon, green, olive."""
    colours = palette()
    assert colours[:4].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    assert colours[15].tolist() == [192, 128, 128]  # VOC's "person"
    assert colours[IGNORE].tolist() == [224, 224, 192]


def test_classification_keeps_its_figures_on_the_task_layer():
    """Top-1, top-5 and the loss from the task's sums equal the direct computation (no change for classifiers)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, 50).astype(np.int32)
    logits = rng.normal(size=(50, 7)).astype(np.float32)
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    task = get_task("classification")
    sums = {k: v.numpy() for k, v in task.evaluation_sums(tf.constant(labels), tf.constant(probabilities), 7).items()}
    result = task.evaluation_result(sums, keep_predictions=True)
    top5 = np.argsort(-probabilities, 1)[:, :5]
    assert result["accuracy"] == pytest.approx((probabilities.argmax(1) == labels).mean())
    assert result["top5_accuracy"] == pytest.approx(np.mean([l in row for l, row in zip(labels, top5)]))
    assert result["loss"] == pytest.approx(-np.log(probabilities[np.arange(50), labels]).mean(), rel=1e-5)
    assert result["confusion_matrix"].sum() == 50


def test_classification_summary_shows_top5_only_above_five_classes():
    task = get_task("classification")
    metrics = {"test_accuracy": 0.9333, "test_top5_accuracy": 1.0}
    assert task.summary({**metrics, "num_classes": 3}) == "test accuracy 0.9333"  # every top-5 guess is right
    assert task.summary({**metrics, "num_classes": 10}) == "test accuracy 0.9333 (top-5 1.0000)"
