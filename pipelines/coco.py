"""COCO box evaluation by pycocotools, the reference implementation, from arrays of boxes.

``evaluate(truth, detections)`` builds the ground truth and the results as COCO's
``instances`` JSON and result list would hold them (``bbox`` = ``[x, y, width, height]``
in pixels, ``category_id`` = class + 1, ``area`` = the box's area, which sets the
small / medium / large split at 32² and 96² pixels) and runs ``COCOeval(..., "bbox")``:
AP averaged over IoU 0.50:0.05:0.95 (COCO's mAP), AP50, AP75, AP for small, medium and
large objects, AR@100, the AP of each class and each class's precision-recall curves at IoU 0.5
and 0.75 (COCOeval's interpolated precision at 101 recall points). Boxes are ``(ymin, xmin, ymax, xmax)``.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

STAT_NAMES = ("map", "ap50", "ap75", "ap_small", "ap_medium", "ap_large", "ar1", "ar10", "ar100", "ar_small",
              "ar_medium", "ar_large")


def _xywh(box) -> list:
    ymin, xmin, ymax, xmax = (float(v) for v in box)
    return [xmin, ymin, xmax - xmin, ymax - ymin]


def ground_truth(boxes, classes, class_names, image_sizes=None) -> dict:
    """COCO ``instances`` JSON of ``boxes [N, M, 4]`` and ``classes [N, M]`` (padding: class -1); image ids 1..N."""
    images, annotations = [], []
    for index, (image_boxes, image_classes) in enumerate(zip(boxes, classes)):
        height, width = image_sizes[index] if image_sizes is not None else (0, 0)
        images.append({"id": index + 1, "height": int(height), "width": int(width)})
        for box, label in zip(image_boxes, image_classes):
            if label < 0:
                continue
            xywh = _xywh(box)
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "category_id": int(label) + 1,
                                "bbox": xywh, "area": xywh[2] * xywh[3], "iscrowd": 0})
    categories = [{"id": i + 1, "name": str(name)} for i, name in enumerate(class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def results(boxes, scores, classes, counts) -> list:
    """COCO's result list from padded detections: ``boxes [N, D, 4]``, ``scores``/``classes [N, D]``, ``counts [N]``."""
    out = []
    for index, (image_boxes, image_scores, image_classes, count) in enumerate(zip(boxes, scores, classes, counts)):
        for box, score, label in zip(image_boxes[:int(count)], image_scores[:int(count)], image_classes[:int(count)]):
            out.append({"image_id": index + 1, "category_id": int(label) + 1, "bbox": _xywh(box),
                        "score": float(score)})
    return out


def evaluate(truth: dict, detections: list) -> dict:
    """pycocotools' box evaluation: ``{"map", "ap50", ..., "ar100", ..., "per_class": {name: AP}, "curves": ...}``.

    ``curves[name]`` = ``{"0.5": precision at recall 0, 0.01 .. 1, "0.75": ...}`` (area all, 100
    detections; 0 where the recall is never reached). With no detections at all every figure is 0
    (pycocotools cannot load an empty result list); a class with no ground truth has no AP (None) and
    stays out of the mean, as in COCOeval.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    names = [c["name"] for c in truth["categories"]]
    if not detections:
        present = {a["category_id"] for a in truth["annotations"]}
        return {**{key: 0.0 for key in STAT_NAMES},
                "per_class": {name: (0.0 if i + 1 in present else None) for i, name in enumerate(names)},
                "curves": {}}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and table
        gt = COCO()
        gt.dataset = {**truth, "info": {}, "licenses": []}
        gt.createIndex()
        dt = gt.loadRes(detections)
        evaluator = COCOeval(gt, dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = {key: max(float(value), 0.0) if value >= 0 else None
             for key, value in zip(STAT_NAMES, evaluator.stats)}
    # precision [10 IoU thresholds, 101 recall points, classes, 4 area ranges, 3 max detections]: all, 100
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    per_class, curves = {}, {}
    for k, name in enumerate(names):
        values = precision[:, :, k]
        values = values[values > -1]
        per_class[name] = float(values.mean()) if values.size else None
        curves[name] = {iou: np.maximum(precision[t, :, k], 0.0).round(4).tolist()
                        for t, iou in ((0, "0.5"), (5, "0.75"))}
    return {**stats, "per_class": per_class, "curves": curves}


def coco_map(boxes_true, classes_true, class_names, boxes, scores, classes, counts) -> dict:
    """``evaluate`` straight from arrays (the detection task's evaluation and its tests)."""
    return evaluate(ground_truth(boxes_true, classes_true, class_names), results(boxes, scores, classes, counts))


def count_objects(classes) -> int:
    return int(np.sum(np.asarray(classes) >= 0))
