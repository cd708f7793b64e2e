"""Semantic segmentation: a class per pixel, cross-entropy that ignores label 255, pixel accuracy and mean IoU.

The model is a backbone with a per-pixel head (FCN-8s, ``kcnn.heads.segmentation``,
by default). Targets are int32 masks ``[batch, size, size]`` where 255 marks pixels to
ignore (the VOC convention). Figures come from one confusion matrix over every valid
pixel of the split, as the segmentation references compute them: pixel accuracy
``trace / total`` and per class IoU ``TP / (TP + FP + FN)``, averaged over the classes
that occur (in the truth or the prediction) for mean IoU.

Exported signatures (both): ``class_map`` int32 ``[batch, height, width]`` and
``probabilities`` float32 ``[batch, height, width, classes]`` at the input's own size
(the model runs at the training size; its probabilities are resized back in the
graph), and ``mask_png_bytes``, each image's class map as a colour PNG (the VOC
palette). The images of one request share a size.
"""

from __future__ import annotations

import html
import os

import keras
import numpy as np
import tensorflow as tf

from pipelines.tasks.base import TASKS, Endpoint, ExportError, Task, call_signatures, sample_images
from pipelines.tasks.classification import check_backbone_model

IGNORE = 255
SEGMENTATION_HEADS = ("segmentation",)
OUTPUT_CLASS_MAP = "class_map"
OUTPUT_PROBABILITIES = "probabilities"
# TF Serving's REST API base64-encodes a string output only when its name ends in "_bytes" (json_tensor.cc).
OUTPUT_PNG = "mask_png_bytes"


def palette(count: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map: ``[count, 3]`` uint8, class 0 black; index 255 (ignore) is cream-white."""
    colours = np.zeros((count, 3), np.uint8)
    for index in range(count):
        value, red, green, blue = index, 0, 0, 0
        for bit in range(8):
            red |= ((value >> 0) & 1) << (7 - bit)
            green |= ((value >> 1) & 1) << (7 - bit)
            blue |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        colours[index] = (red, green, blue)
    if count > IGNORE:
        colours[IGNORE] = (224, 224, 192)  # VOC's own colour for its void label
    return colours


def scores_from_confusion(matrix, class_names=None) -> dict:
    """Pixel accuracy, per-class IoU and mean IoU from a confusion matrix (row: true class).

    A class that occurs neither in the truth nor in the prediction has no IoU (NaN) and is left
    out of the mean, as torchvision's and Model Garden's segmentation evaluations do.
    """
    matrix = np.asarray(matrix, np.float64)
    true_positive = np.diag(matrix)
    union = matrix.sum(0) + matrix.sum(1) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, true_positive / union, np.nan)
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(matrix))]
    present = ~np.isnan(iou)
    return {"pixel_accuracy": float(true_positive.sum() / max(matrix.sum(), 1.0)),
            "mean_iou": float(iou[present].mean()) if present.any() else float("nan"),
            "iou": {name: (None if np.isnan(value) else float(value)) for name, value in zip(names, iou)}}


def segmentation_inputs(images, preprocessing):
    """uint8 (or float) images ``[batch, H, W, C]`` at any size -> normalised ``[batch, S, S, C]`` model inputs.

    The whole image is resized to the training size (no crop), so every input pixel has a place
    in the output map; square images get exactly the evaluation pipeline's resize.
    """
    from pipelines.preprocess import stretched_inputs

    return stretched_inputs(images, preprocessing)


def segment(model, images, preprocessing) -> dict:
    """The served outputs for a batch of same-size images: class map, probabilities, colour PNGs."""
    shape = tf.shape(images)
    probabilities = tf.cast(model(segmentation_inputs(images, preprocessing), training=False), tf.float32)
    probabilities = tf.image.resize(probabilities, shape[1:3], method="bilinear")
    class_map = tf.argmax(probabilities, -1, output_type=tf.int32)
    colours = tf.constant(palette())
    pngs = tf.map_fn(lambda one: tf.io.encode_png(tf.gather(colours, one)), class_map,
                     fn_output_signature=tf.string)
    return {OUTPUT_CLASS_MAP: class_map, OUTPUT_PROBABILITIES: probabilities, OUTPUT_PNG: pngs}


class Segmentation(Task):
    name = "segmentation"
    target = "mask"
    options = {"dice_weight": 0.0}
    train_metric = "pixel_accuracy"
    monitor = "mean_iou"
    validation_extras = ("val_pixel_accuracy",)
    served_outputs = (OUTPUT_CLASS_MAP, OUTPUT_PNG)

    def check_model(self, model_config):
        from pipelines.config import ConfigError

        builder = check_backbone_model(model_config)
        if model_config.head is not None and model_config.head not in SEGMENTATION_HEADS:
            raise ConfigError(f"model.head {model_config.head!r} does not label pixels; segmentation takes "
                              f"{', '.join(SEGMENTATION_HEADS)} (or null: FCN-8s)")
        weight = self.resolve_options(model_config.task_options)["dice_weight"]
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise ConfigError(f"model.task_options.dice_weight must be a number >= 0, got {weight!r}")
        return builder

    def build_model(self, model_config, num_classes, input_shape):
        import dataclasses

        from pipelines.finetune import build_model

        if model_config.head is None:
            model_config = dataclasses.replace(model_config, head="segmentation")
        return build_model(model_config, num_classes, input_shape)

    def loss(self, targets, outputs, options, config):
        """Per image: the cross-entropy averaged over its valid pixels, plus ``dice_weight`` x soft Dice loss."""
        valid = tf.cast(tf.not_equal(targets, IGNORE), tf.float32)
        labels = tf.where(targets == IGNORE, tf.zeros_like(targets), targets)
        per_pixel = keras.losses.sparse_categorical_crossentropy(labels, outputs)
        pixels = tf.maximum(tf.reduce_sum(valid, [1, 2]), 1.0)
        loss = tf.reduce_sum(per_pixel * valid, [1, 2]) / pixels
        weight = float(options.get("dice_weight", 0.0))
        if weight:
            loss += weight * soft_dice_loss(labels, outputs, valid)
        return loss

    def train_score(self, targets, outputs, options=None):
        """Pixel accuracy of each image (over its valid pixels), summed over the batch."""
        valid = tf.cast(tf.not_equal(targets, IGNORE), tf.float32)
        hits = tf.cast(tf.equal(tf.argmax(outputs, -1, output_type=tf.int32), targets), tf.float32) * valid
        return tf.reduce_sum(tf.reduce_sum(hits, [1, 2]) / tf.maximum(tf.reduce_sum(valid, [1, 2]), 1.0))

    def evaluation_sums(self, targets, outputs, num_classes, options=None):
        valid = tf.not_equal(targets, IGNORE)
        truth = tf.boolean_mask(targets, valid)
        predicted = tf.boolean_mask(tf.argmax(outputs, -1, output_type=tf.int32), valid)
        options = {}
        return {"loss": tf.reduce_sum(self.loss(targets, outputs, options, None)),
                "count": tf.cast(tf.shape(outputs)[0], tf.float32),
                "confusion": tf.math.confusion_matrix(truth, predicted, num_classes, dtype=tf.float32)}

    def evaluation_result(self, sums, keep_predictions, num_classes=None):
        count = max(float(sums.get("count", 0.0)), 1.0)
        matrix = np.asarray(sums.get("confusion", np.zeros((1, 1))), np.int64)
        scores = scores_from_confusion(matrix)
        result = {"loss": float(sums.get("loss", 0.0)) / count, "pixel_accuracy": scores["pixel_accuracy"],
                  "mean_iou": scores["mean_iou"], "count": int(sums.get("count", 0))}
        if keep_predictions:
            result["confusion_matrix"] = matrix
        return result

    def finish(self, run, model, history, test, train_info, spec):
        from pipelines import report

        names = list(train_info.class_names)
        scores = scores_from_confusion(test["confusion_matrix"], names)
        metrics = {"test_mean_iou": scores["mean_iou"], "test_pixel_accuracy": scores["pixel_accuracy"],
                   "test_loss": test["loss"], "test_iou": scores["iou"],
                   "val_mean_iou": max((h["val_mean_iou"] for h in history), default=float("nan")),
                   "test_confusion_matrix": np.asarray(test["confusion_matrix"]).tolist()}
        if run is not None:
            report.plot_confusion_matrix(test["confusion_matrix"], names, run.plot("confusion_matrix"),
                                         what="pixel accuracy")
        return metrics

    def summary(self, metrics):
        return (f"test mean IoU {metrics['test_mean_iou']:.4f} (pixel accuracy "
                f"{metrics['test_pixel_accuracy']:.4f})")

    def evaluate_run(self, run_dir: str, *, tta: str = "none", split: str | None = None, flip=None) -> dict:
        """Pixel accuracy, per-class IoU and mean IoU of a finished run on ``split`` (the test split)."""
        import json

        from pipelines import report
        from pipelines.run_dir import atomic_write

        run, names, split, result = self.evaluate_split(run_dir, tta, split)
        scores = scores_from_confusion(result["confusion_matrix"], names)
        out = {"task": self.name, "split": split, "tta": "none", "examples": result["count"],
               "pixel_accuracy": scores["pixel_accuracy"], "mean_iou": scores["mean_iou"], "iou": scores["iou"],
               "confusion_matrix": np.asarray(result["confusion_matrix"]).tolist()}
        atomic_write(run.evaluation("none"), json.dumps(out, indent=2))
        report.plot_confusion_matrix(result["confusion_matrix"], names, run.plot("confusion_matrix"),
                                     what="pixel accuracy")
        return out

    def format_evaluation(self, result: dict) -> str:
        lines = [f"{result['split']} split, {result['examples']} images: mean IoU {result['mean_iou']:.4f}, "
                 f"pixel accuracy {result['pixel_accuracy']:.4f}", f"{'class':>12} {'IoU':>7}"]
        lines += [f"{name[:12]:>12} {'-' if iou is None else f'{iou:7.4f}':>7}" for name, iou in result["iou"].items()]
        return "\n".join(lines)

    # ------------------------------------------------------------------------ export
    def serving_endpoints(self, model, preprocessing, metadata, max_pixels):
        from pipelines.preprocess import decode_image

        def predict_images(images):
            return segment(model, images, preprocessing)

        def predict_image_bytes(image_bytes):
            images = tf.map_fn(lambda encoded: decode_image(encoded, max_pixels=max_pixels), image_bytes,
                               fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
            return segment(model, images, preprocessing)

        return {"images": Endpoint(predict_images, tf.TensorSpec([None, None, None, 3], metadata["image_dtype"])),
                "image_bytes": Endpoint(predict_image_bytes, tf.TensorSpec([None], tf.string))}

    def verify_export(self, model, loaded, preprocessing, metadata):
        """Both signatures reproduce the Keras model's probabilities, class maps and PNGs, at a size not trained on."""
        size = preprocessing.image_size
        images = sample_images(preprocessing, 2, seed=1, size=size + 7)
        expected = {key: value.numpy() for key, value in segment(model, tf.constant(images), preprocessing).items()}
        tolerance = 1e-4 if model.dtype_policy.compute_dtype == "float32" else 2e-2
        difference = 0.0
        for name, outputs in call_signatures(loaded, images, metadata["image_dtype"]).items():
            got = outputs[OUTPUT_PROBABILITIES].numpy()
            if got.shape != expected[OUTPUT_PROBABILITIES].shape:
                raise ExportError(f"the {name} signature returned probabilities of shape {got.shape}, expected "
                                  f"{expected[OUTPUT_PROBABILITIES].shape}; the export was not put in place")
            difference = max(difference, float(np.abs(got - expected[OUTPUT_PROBABILITIES]).max()))
            decoded = np.stack([tf.io.decode_png(p).numpy() for p in outputs[OUTPUT_PNG].numpy()])
            if difference > tolerance or decoded.shape[:3] != images.shape[:3]:
                raise ExportError(f"the {name} signature differs from the Keras model by {difference:g} (tolerance "
                                  f"{tolerance:g}) or returns masks of another size; the export was not put in place")
        return difference

    # ------------------------------------------------------------------ kcnn predict
    def write_predictions(self, outputs, images, out_dir):
        """For each image: OUT_DIR/<name>_mask.png (the colour class map) and <name>_overlay.png; one line each."""
        from PIL import Image

        from kcnn.files import atomic_write

        colours = palette()
        lines = []
        for path, class_map, encoded in zip(images, np.asarray(outputs[OUTPUT_CLASS_MAP]),
                                            np.asarray(outputs[OUTPUT_PNG]).reshape(-1)):
            stem = os.path.splitext(os.path.basename(str(path)))[0]
            mask_path = atomic_write(os.path.join(out_dir, f"{stem}_mask.png"), bytes(encoded))
            picture = np.asarray(Image.open(path).convert("RGB"), np.float32)
            blended = np.where(class_map[..., None] > 0, 0.5 * picture + 0.5 * colours[class_map], picture)
            overlay_path = os.path.join(out_dir, f"{stem}_overlay.png")
            atomic_write(overlay_path, _png_bytes(np.round(blended).astype(np.uint8)))
            shares = np.bincount(class_map.ravel(), minlength=1) / class_map.size
            top = ", ".join(f"class {index} {share:.1%}" for index, share in enumerate(shares) if share > 0)
            lines.append(f"{path} -> {mask_path}, {overlay_path} ({top})")
        return lines

    # ------------------------------------------------------------------------ report
    def report_sections(self, run, *, examples: int = 8):
        from pipelines.run_report import figure, plot_bytes, table
        from pipelines import report as plots

        names = run.class_names
        matrix = np.asarray(run.metrics.get("test_confusion_matrix") or np.zeros((len(names), len(names))), np.int64)
        scores = scores_from_confusion(matrix, names)
        confusion = plot_bytes(run, "confusion", plots.plot_confusion_matrix, matrix, names)
        rows = [(name, "-" if iou is None else f"{iou:.4f}", f"{int(matrix[i].sum()):,}")
                for i, (name, iou) in enumerate(scores["iou"].items())]
        return [
            ("summary", None, [("test mean IoU", f"{scores['mean_iou']:.4f}"),
                               ("test pixel accuracy", f"{scores['pixel_accuracy']:.4f}")]),
            ("per-class", "Per-class IoU", table(("class", "IoU", "pixels"), rows)),
            ("confusion", "Confusion matrix (pixels)", figure(confusion, "confusion matrix of pixels")),
            ("worst", "Worst test images: image, truth, prediction", _worst_section(run, names, examples)),
        ]


def soft_dice_loss(labels, probabilities, valid):
    """1 - the mean over classes of the soft Dice coefficient of each image (Milletari et al., 2016), ``[batch]``."""
    classes = tf.shape(probabilities)[-1]
    truth = tf.one_hot(labels, classes) * valid[..., None]
    predicted = tf.cast(probabilities, tf.float32) * valid[..., None]
    overlap = tf.reduce_sum(truth * predicted, [1, 2])
    total = tf.reduce_sum(truth + predicted, [1, 2])
    return 1.0 - tf.reduce_mean((2.0 * overlap + 1.0) / (total + 1.0), -1)


def _png_bytes(image: np.ndarray) -> bytes:
    return tf.io.encode_png(image).numpy()



def _worst_section(run, names, count: int) -> str:
    """The test images with the lowest mean IoU, each as image | truth | prediction."""
    from kcnn.insight import draw
    from pipelines.data import DataSpec
    from pipelines.run_dir import RunDir
    from pipelines.run_report import figure

    task = TASKS.get("segmentation")
    spec = task.data_spec(DataSpec.from_config(run.config.data, preprocessing=RunDir(run.path).preprocessing()),
                          run.config.model)
    dataset, _ = task.datasets(spec.evaluation(cache=False, batch_size=max(spec.batch_size, 64)), spec.test_split)
    colours = palette()
    scored, seen = [], 0
    for images, masks in dataset:
        predicted = np.asarray(run.model(images, training=False)).argmax(-1)
        for image, mask, guess in zip(images.numpy(), masks.numpy(), predicted):
            valid = mask != IGNORE
            matrix = np.zeros((len(names), len(names)), np.int64)
            np.add.at(matrix, (mask[valid], guess[valid]), 1)
            scored.append((scores_from_confusion(matrix)["mean_iou"], seen, image, mask, guess))
            seen += 1
    scored.sort(key=lambda item: item[0])
    figures = []
    for iou, index, image, mask, guess in scored[:count]:
        title = f"test #{index}: mean IoU {iou:.3f}"
        strip = draw.side_by_side([draw.to_display(image), colours[mask] / 255.0, colours[guess] / 255.0])
        picture = draw.array_png(strip, scale=max(1, 128 // image.shape[0]))
        figures.append(figure(picture, title))
    legend = ", ".join(f"{html.escape(name)} rgb{tuple(int(c) for c in colours[i])}" for i, name in enumerate(names))
    return f"<p>Colours: {legend}.</p>" + "".join(figures)


TASKS.register("segmentation")(Segmentation())
