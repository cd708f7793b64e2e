"""Object detection: FCOS on any backbone, COCO mAP by pycocotools, NMS inside the exported graph.

The model is a backbone with the ``fcos`` head (``kcnn.heads.detection``); its output and the
losses are described in ``kcnn.detection``. Targets are ``{"boxes": [B, M, 4], "classes": [B, M]}``
(pixels of the model input; class -1 pads). Validation and test detections go through
``tf.image.combined_non_max_suppression`` exactly as the exported graph's do and are scored by
pycocotools (``pipelines.coco``): mAP@[.5:.95] picks ``best.keras``.

Exported signatures (both) return what TF Object Detection API exports return, for TF Serving
clients written against them: ``detection_boxes`` float32 ``[batch, max_detections, 4]`` as
``(ymin, xmin, ymax, xmax)`` normalised to the input image, ``detection_scores``,
``detection_classes`` (float32, 1-based: class index + 1, the label-map convention) and
``num_detections`` (float32), plus ``detection_class_names`` (strings, "" past
``num_detections``). Each image is stretched to the model's input size, so normalised boxes hold
for the image as sent, whatever its size; the ``image_bytes`` signature takes images of
different sizes in one request.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from kcnn import detection as fcos
from pipelines import coco
from pipelines.tasks.base import TASKS, Endpoint, ExportError, Task, call_signatures, sample_images
from pipelines.tasks.classification import check_backbone_model

DETECTION_HEADS = ("fcos",)
OUTPUT_BOXES = "detection_boxes"
OUTPUT_SCORES = "detection_scores"
OUTPUT_CLASSES = "detection_classes"
OUTPUT_COUNT = "num_detections"
OUTPUT_NAMES = "detection_class_names"
GATHERED = ("boxes", "scores", "classes", "counts", "true_boxes", "true_classes")


def detect(outputs, num_classes: int, size: int, options: dict) -> dict:
    """Scores and boxes of a batch of model outputs -> per-class NMS, at most ``max_detections`` per image.

    Returns boxes normalised to the model input (``[0, 1]``), scores, 0-based classes (int32) and
    counts (int32). The same function runs in evaluation and in the exported graph.
    """
    outputs = tf.cast(outputs, tf.float32)
    scores = fcos.scores(outputs, num_classes)
    boxes = tf.clip_by_value(outputs[..., num_classes:num_classes + 4] / float(size), 0.0, 1.0)
    most = int(options["max_detections"])
    nms = tf.image.combined_non_max_suppression(
        boxes[:, :, tf.newaxis, :], scores, max_output_size_per_class=most, max_total_size=most,
        iou_threshold=float(options["iou_threshold"]), score_threshold=float(options["score_threshold"]),
        clip_boxes=False)
    return {"boxes": nms.nmsed_boxes, "scores": nms.nmsed_scores,
            "classes": tf.cast(nms.nmsed_classes, tf.int32), "counts": nms.valid_detections}


def _check_options(options: dict) -> None:
    from pipelines.config import ConfigError

    for key, low, high in (("score_threshold", 0.0, 1.0), ("iou_threshold", 0.0, 1.0), ("center_radius", 0.0, None)):
        value = options[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low or (
                high is not None and value > high):
            bound = f"in [{low}, {high}]" if high is not None else f"> {low}"
            raise ConfigError(f"model.task_options.{key} must be a number {bound}, got {value!r}")
    most = options["max_detections"]
    if isinstance(most, bool) or not isinstance(most, int) or most < 1:
        raise ConfigError(f"model.task_options.max_detections must be a positive integer, got {most!r}")
    bounds = options["size_boundaries"]
    if bounds is not None and (not isinstance(bounds, (list, tuple)) or not all(
            isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)):
        raise ConfigError(f"model.task_options.size_boundaries must be null (the paper's 8 x stride rule) or a list "
                          f"of numbers, one between each two pyramid levels, got {bounds!r}")


class Detection(Task):
    name = "detection"
    target = "boxes"
    options = {"score_threshold": 0.05, "iou_threshold": 0.6, "max_detections": 100,
               "center_radius": fcos.CENTER_RADIUS, "size_boundaries": None}
    train_metric = "box_iou"
    monitor = "map"
    validation_extras = ("val_ap50",)
    served_outputs = (OUTPUT_BOXES, OUTPUT_SCORES, OUTPUT_CLASSES, OUTPUT_COUNT)
    gathered = GATHERED

    # --------------------------------------------------------------- configuration
    def check_model(self, model_config):
        from pipelines.config import ConfigError

        builder = check_backbone_model(model_config)
        if model_config.head is not None and model_config.head not in DETECTION_HEADS:
            raise ConfigError(f"model.head {model_config.head!r} does not detect objects; detection takes "
                              f"{', '.join(DETECTION_HEADS)} (or null: fcos)")
        _check_options(self.resolve_options(model_config.task_options))
        return builder

    def build_model(self, model_config, num_classes, input_shape):
        import dataclasses

        from pipelines.finetune import build_model

        if model_config.head is None:
            model_config = dataclasses.replace(model_config, head="fcos")
        return build_model(model_config, num_classes, input_shape)

    def bind(self, model, options):
        """The detector's locations, their strides and each one's size range (``size_boundaries``)."""
        decoder = fcos.decoder_of(model)
        points, strides = decoder.points()
        by_level = dict(zip(decoder.strides, fcos.level_ranges(decoder.strides, options["size_boundaries"])))
        ranges = np.array([by_level[int(s)] for s in strides], np.float32)
        return {**options, "points": points, "strides": strides, "ranges": ranges,
                "image_size": int(model.input_shape[1])}

    def _geometry(self, options):
        return options["points"], options["strides"], options["ranges"]

    # --------------------------------------------------------------------- training
    def loss(self, targets, outputs, options, config):
        """FCOS' focal + GIoU + centerness loss per image (batch-normalised, see ``kcnn.detection.fcos_loss``)."""
        classes = int(outputs.shape[-1]) - 5
        return fcos.fcos_loss(outputs, targets["boxes"], targets["classes"], *self._geometry(options), classes,
                              options["center_radius"])["total"]

    def train_score(self, targets, outputs, options=None):
        """Each image's mean IoU of the boxes at its positive locations with their targets, summed."""
        classes = int(outputs.shape[-1]) - 5
        return tf.reduce_sum(fcos.positive_iou(outputs, targets["boxes"], targets["classes"], *self._geometry(options),
                                               classes, options["center_radius"]))

    # ------------------------------------------------------------------- evaluation
    def evaluation_sums(self, targets, outputs, num_classes, options=None):
        found = detect(outputs, num_classes, options["image_size"], options)
        size = float(options["image_size"])
        return {"loss": tf.reduce_sum(self.loss(targets, outputs, options, None)),
                "box_iou": self.train_score(targets, outputs, options),
                "count": tf.cast(tf.shape(outputs)[0], tf.float32),
                "boxes": found["boxes"] * size, "scores": found["scores"], "classes": found["classes"],
                "counts": found["counts"], "true_boxes": tf.cast(targets["boxes"], tf.float32),
                "true_classes": targets["classes"]}

    def evaluation_result(self, sums, keep_predictions, num_classes=None):
        """COCO AP of the gathered detections (pycocotools); ``keep_predictions`` keeps them, the per-class
        AP and the precision-recall curves, by class index (``finish`` and ``evaluate_run`` name them)."""
        count = max(float(sums.get("count", 0.0)), 1.0)
        result = {"loss": float(sums.get("loss", 0.0)) / count, "box_iou": float(sums.get("box_iou", 0.0)) / count,
                  "count": int(sums.get("count", 0))}
        if "true_classes" not in sums:
            return {**result, "map": 0.0, "ap50": 0.0}
        if num_classes is None:
            raise ValueError("detection's evaluation_result needs num_classes (the detector's class count)")
        scores = score_detections(sums, [str(k) for k in range(num_classes)])
        result.update({key: (value if value is not None else float("nan")) for key, value in scores.items()
                       if key not in ("per_class", "curves")})
        if keep_predictions:
            result.update({"per_class": list(scores["per_class"].values()),
                           "curves": list(scores["curves"].values()) if scores["curves"] else [],
                           "detections": {key: sums[key] for key in GATHERED}})
        return result

    def finish(self, run, model, history, test, train_info, spec):
        names = list(train_info.class_names)
        metrics = {f"test_{key}": test[key] for key in coco.STAT_NAMES}
        metrics.update({"test_per_class_ap": dict(zip(names, test["per_class"])), "test_loss": test["loss"],
                        "val_map": max((h["val_map"] for h in history), default=float("nan")),
                        "test_pr": dict(zip(names, test["curves"]))})
        metrics.update({key: None for key, value in metrics.items() if isinstance(value, float) and value != value})
        if run is not None:
            plot_precision_recall(metrics["test_pr"], run.plot("precision_recall"))
        return metrics

    def summary(self, metrics):
        return (f"test mAP@[.5:.95] {metrics['test_map']:.4f}, AP50 {metrics['test_ap50']:.4f}, "
                f"AP75 {metrics['test_ap75']:.4f} (COCO, pycocotools)")

    def evaluate_run(self, run_dir: str, *, tta: str = "none", split: str | None = None, flip=None) -> dict:
        """COCO box AP of a finished run on ``split`` (the test split), written to evaluation.json."""
        import json

        from pipelines.run_dir import atomic_write

        run, names, split, result = self.evaluate_split(run_dir, tta, split)
        found = result["detections"]
        out = {"task": self.name, "split": split, "tta": "none", "examples": result["count"],
               "objects": coco.count_objects(found["true_classes"]), "detections": int(np.sum(found["counts"])),
               **{key: result[key] for key in coco.STAT_NAMES}, "per_class": dict(zip(names, result["per_class"]))}
        out.update({key: None for key, value in out.items() if isinstance(value, float) and value != value})
        atomic_write(run.evaluation("none"), json.dumps(out, indent=2))
        return out

    def format_evaluation(self, result: dict) -> str:
        def figure(value):
            return "-" if value is None else f"{value:.4f}"

        lines = [f"{result['split']} split, {result['examples']} images, {result['objects']} objects, "
                 f"{result['detections']} detections: mAP@[.5:.95] {figure(result['map'])}, AP50 "
                 f"{figure(result['ap50'])}, AP75 {figure(result['ap75'])}",
                 f"AP small {figure(result['ap_small'])}, medium {figure(result['ap_medium'])}, large "
                 f"{figure(result['ap_large'])}; AR@100 {figure(result['ar100'])}", f"{'class':>12} {'AP':>7}"]
        lines += [f"{name[:12]:>12} {figure(ap):>7}" for name, ap in result["per_class"].items()]
        return "\n".join(lines)

    # ------------------------------------------------------------------------ export
    def check_export(self, model, class_names):
        fcos.decoder_of(model)  # a clear error for a model without the head
        classes = int(model.output_shape[-1]) - 5
        if len(class_names) != classes:
            raise ValueError(f"class_names has {len(class_names)} names but the detector predicts {classes} classes")

    def export_metadata(self, model, options=None):
        options = self.resolve_options(options or {})
        _check_options(options)
        return {"detection": {key: options[key] for key in ("score_threshold", "iou_threshold", "max_detections")},
                "image_size": int(model.input_shape[1])}

    def serving_endpoints(self, model, preprocessing, metadata, max_pixels):
        from pipelines.preprocess import decode_image

        names = tf.constant([str(n) for n in metadata["class_names"]])
        options = metadata["detection"]
        size = preprocessing.image_size

        def run(images):
            return served(model, images, preprocessing, options, names)

        def predict_images(images):
            return run(tf.map_fn(lambda image: _model_image(image, preprocessing), images,
                                 fn_output_signature=tf.TensorSpec([size, size, preprocessing.channels], tf.float32)))

        def predict_image_bytes(image_bytes):
            return run(tf.map_fn(lambda encoded: _model_image(decode_image(encoded, max_pixels=max_pixels),
                                                              preprocessing), image_bytes,
                                 fn_output_signature=tf.TensorSpec([size, size, preprocessing.channels], tf.float32)))

        return {"images": Endpoint(predict_images, tf.TensorSpec([None, None, None, 3], metadata["image_dtype"])),
                "image_bytes": Endpoint(predict_image_bytes, tf.TensorSpec([None], tf.string))}

    def verify_export(self, model, loaded, preprocessing, metadata):
        """Both signatures give the in-process detections: boxes and scores within 1e-5, the same classes and count."""
        images = sample_images(preprocessing, 2, seed=1, size=preprocessing.image_size + 7)
        names = tf.constant([str(n) for n in metadata["class_names"]])
        inputs = tf.stack([_model_image(tf.constant(i), preprocessing) for i in images])
        expected = {k: v.numpy() for k, v in served(model, inputs, preprocessing, metadata["detection"],
                                                    names).items()}
        tolerance = 1e-5 if model.dtype_policy.compute_dtype == "float32" else 2e-2
        difference = 0.0
        for name, outputs in call_signatures(loaded, images, metadata["image_dtype"]).items():
            got = {k: v.numpy() for k, v in outputs.items()}
            if not np.array_equal(got[OUTPUT_COUNT], expected[OUTPUT_COUNT]) or not np.array_equal(
                    got[OUTPUT_CLASSES], expected[OUTPUT_CLASSES]):
                raise ExportError(f"the {name} signature found other objects than the Keras model (counts "
                                  f"{got[OUTPUT_COUNT].tolist()} vs {expected[OUTPUT_COUNT].tolist()}); the export "
                                  "was not put in place")
            for key in (OUTPUT_BOXES, OUTPUT_SCORES):
                difference = max(difference, float(np.abs(got[key] - expected[key]).max(initial=0.0)))
            if difference > tolerance:
                raise ExportError(f"the {name} signature's boxes or scores differ from the Keras model's by "
                                  f"{difference:g} (tolerance {tolerance:g}); the export was not put in place")
        return difference

    # ------------------------------------------------------------------ kcnn predict
    def write_predictions(self, outputs, images, out_dir):
        """For each image: OUT_DIR/<name>_boxes.png with every detection drawn, labelled and scored; one line each."""
        from PIL import Image

        from kcnn.files import atomic_write

        lines = []
        for index, path in enumerate(images):
            picture = np.asarray(Image.open(path).convert("RGB"))
            found = _one_image(outputs, index)
            stem = os.path.splitext(os.path.basename(str(path)))[0]
            target = atomic_write(os.path.join(out_dir, f"{stem}_boxes.png"), _png(draw_boxes(picture, found)))
            listed = ", ".join(f"{label} {score:.2f}" for label, score, _ in found) or "nothing found"
            lines.append(f"{path} -> {target} ({len(found)} detections: {listed})")
        return lines

    # ------------------------------------------------------------------------ report
    def report_sections(self, run, *, examples: int = 8):
        from pipelines.run_report import figure as captioned, plot_bytes, table

        metrics = run.metrics

        def figure(key):
            value = metrics.get(key)
            return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.4f}"

        per_class = metrics.get("test_per_class_ap") or {}
        rows = [(name, "-" if ap is None else f"{ap:.4f}") for name, ap in per_class.items()]
        curves = plot_bytes(run, "precision_recall", plot_precision_recall, metrics.get("test_pr") or {})
        return [
            ("summary", None, [("test mAP@[.5:.95]", figure("test_map")), ("test AP50", figure("test_ap50")),
                               ("test AP75", figure("test_ap75"))]),
            ("coco", "COCO box AP (pycocotools)", table(
                ("AP", "AP50", "AP75", "AP small", "AP medium", "AP large", "AR@100"),
                [tuple(figure(f"test_{key}") for key in ("map", "ap50", "ap75", "ap_small", "ap_medium",
                                                          "ap_large", "ar100"))])),
            ("per-class", "Per-class AP@[.5:.95]", table(("class", "AP"), rows)),
            ("pr", "Precision-recall at IoU 0.5 and 0.75", captioned(curves, "precision-recall curves")),
            ("overlays", "Test images: truth (left), detections (right)", _overlay_section(run, examples)),
        ]


def _model_image(image, preprocessing):
    """One image ``[H, W, C]`` (uint8 or float) -> the normalised ``[S, S, C]`` model input (stretched)."""
    from pipelines.preprocess import stretched_inputs

    return stretched_inputs(image, preprocessing)


def served(model, inputs, preprocessing, options: dict, names) -> dict:
    """The exported outputs for normalised model inputs ``[B, S, S, C]`` (TF Object Detection API layout)."""
    outputs = model(inputs, training=False)
    num_classes = int(outputs.shape[-1]) - 5
    found = detect(outputs, num_classes, preprocessing.image_size, options)
    valid = tf.sequence_mask(found["counts"], int(options["max_detections"]))
    class_names = tf.where(valid, tf.gather(names, found["classes"]), "")
    return {OUTPUT_BOXES: found["boxes"], OUTPUT_SCORES: found["scores"],
            OUTPUT_CLASSES: tf.cast(found["classes"] + 1, tf.float32),
            OUTPUT_COUNT: tf.cast(found["counts"], tf.float32), OUTPUT_NAMES: class_names}


def _one_image(outputs, index: int) -> list:
    """``[(label, score, (ymin, xmin, ymax, xmax) normalised)]`` of image ``index`` of a served response."""
    count = int(np.asarray(outputs[OUTPUT_COUNT]).reshape(-1)[index])
    boxes = np.asarray(outputs[OUTPUT_BOXES])[index][:count]
    scores = np.asarray(outputs[OUTPUT_SCORES])[index][:count]
    if OUTPUT_NAMES in outputs:
        labels = [v.decode() if isinstance(v, bytes) else str(v)
                  for v in np.asarray(outputs[OUTPUT_NAMES])[index][:count]]
    else:
        labels = [f"class {int(c)}" for c in np.asarray(outputs[OUTPUT_CLASSES])[index][:count]]
    return [(label, float(score), tuple(float(v) for v in box)) for label, score, box in zip(labels, scores, boxes)]


COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60))


def draw_boxes(picture: np.ndarray, found: list, *, scale: int | None = None) -> np.ndarray:
    """``picture`` uint8 ``[H, W, 3]`` with each ``(label, score, normalised box)`` drawn and labelled.

    Small pictures are magnified first (nearest neighbour) so the labels stay readable.
    """
    from PIL import Image, ImageDraw

    height, width = picture.shape[:2]
    scale = scale or max(1, 256 // max(height, width))
    image = Image.fromarray(picture).resize((width * scale, height * scale), Image.NEAREST)
    pen = ImageDraw.Draw(image)
    labels = sorted({label for label, _, _ in found})
    for label, score, (ymin, xmin, ymax, xmax) in found:
        colour = COLOURS[labels.index(label) % len(COLOURS)]
        box = (xmin * width * scale, ymin * height * scale, xmax * width * scale - 1, ymax * height * scale - 1)
        pen.rectangle(box, outline=colour, width=2)
        text = f"{label} {score:.2f}" if score == score else label
        left, top = box[0], max(0, box[1] - 11)
        pen.rectangle(pen.textbbox((left, top), text), fill=colour)
        pen.text((left, top), text, fill=(255, 255, 255))
    return np.asarray(image)


def _png(image: np.ndarray) -> bytes:
    return tf.io.encode_png(image).numpy()


def score_detections(found: dict, names: list) -> dict:
    """pycocotools' figures (``pipelines.coco.evaluate``) of gathered detections and their ground truth."""
    truth = coco.ground_truth(found["true_boxes"], found["true_classes"], names)
    return coco.evaluate(truth, coco.results(found["boxes"], found["scores"], found["classes"], found["counts"]))


def plot_precision_recall(curves: dict, path: str) -> str:
    """Each class's precision-recall curve at IoU 0.5 (solid) and 0.75 (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipelines.run_dir import staged_path

    recall = np.linspace(0, 1, 101)
    figure, axis = plt.subplots(figsize=(5, 4), dpi=100)
    for k, (name, by_iou) in enumerate(curves.items()):
        colour = np.array(COLOURS[k % len(COLOURS)]) / 255.0
        axis.plot(recall, by_iou["0.5"], color=colour, label=f"{name} (IoU 0.5)")
        axis.plot(recall, by_iou["0.75"], color=colour, linestyle="--", label=f"{name} (IoU 0.75)")
    axis.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
             title="Precision-recall on the test split (COCOeval)")
    if curves:
        axis.legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    with staged_path(path) as temporary:
        figure.savefig(temporary, format="png")
    plt.close(figure)
    return path


def _overlay_section(run, count: int) -> str:
    """The first ``count`` test images with their true boxes and the model's detections."""
    from pipelines.data import DataSpec
    from pipelines.run_dir import RunDir
    from pipelines.run_report import figure
    from pipelines.sources import load_source

    task = TASKS.get("detection")
    spec = task.data_spec(DataSpec.from_config(run.config.data, preprocessing=RunDir(run.path).preprocessing()),
                          run.config.model)
    source = load_source(spec.source, spec.test_split, data_dir=spec.data_dir, boxes=True)
    names = list(run.class_names)
    options = task.bind(run.model, task.resolve_options(run.config.model.task_options))
    pictures, figures = [], []
    for (image, _), (boxes, classes) in zip(source.dataset.take(count), source.boxes.take(count)):
        pictures.append((image.numpy(), boxes.numpy(), classes.numpy()))
    size = spec.preprocessing.image_size
    for index, (image, boxes, classes) in enumerate(pictures):
        height, width = image.shape[:2]
        truth = [(names[c], float("nan"), (b[0] / height, b[1] / width, b[2] / height, b[3] / width))
                 for b, c in zip(boxes, classes) if c >= 0]
        inputs = _model_image(tf.constant(image), spec.preprocessing)[tf.newaxis]
        found = _one_image({k: v.numpy() for k, v in served(run.model, inputs, spec.preprocessing, options,
                                                             tf.constant(names)).items()}, 0)
        strip = np.concatenate([draw_boxes(image, truth, scale=max(1, 192 // size)),
                                np.full((max(1, 192 // size) * height, 4, 3), 255, np.uint8),
                                draw_boxes(image, found, scale=max(1, 192 // size))], axis=1)
        title = f"test #{index}: {len(truth)} objects, {len(found)} detections"
        figures.append(figure(_png(strip), title))
    return "".join(figures)


TASKS.register("detection")(Detection())
