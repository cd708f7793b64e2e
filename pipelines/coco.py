"""COCO: box evaluation by pycocotools (the reference implementation), and the ``coco:ROOT`` source.

**Source.** ``coco:ROOT`` reads data laid out as COCO ships it: ``ROOT/annotations/instances_<S>.json``
(the ``instances`` format: ``images`` with ``id``/``file_name``/``height``/``width``, ``annotations``
with ``image_id``/``category_id``/``bbox`` = ``[x, y, width, height]`` pixels/``iscrowd``,
``categories`` with ``id``/``name``) beside the image folder ``ROOT/<S>/`` (COCO 2017:
``instances_val2017.json`` and ``val2017/``; a folder ``ROOT/images/`` serves every split). ``S``
starts with the split's name (``validation`` also takes ``val``). Categories become classes 0..K-1 in
the order of their ids, named by their names; crowd annotations (``iscrowd: 1``) are left out of the
targets, boxes are clipped to the image and those left empty dropped; images without annotations stay
(negatives).

**Evaluation.**
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
import glob
import io
import json
import logging
import os

import numpy as np

log = logging.getLogger(__name__)
SPLIT_PREFIXES = {"train": ("train",), "validation": ("validation", "val"), "test": ("test",)}

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


# --------------------------------------------------------------------------------------- the source


def instances_file(root: str, split: str) -> tuple[str, str]:
    """``(annotations JSON, image folder)`` of ``split`` under ``root`` (see the module docstring)."""
    found = []
    for prefix in SPLIT_PREFIXES.get(split, (split,)):
        found += sorted(glob.glob(os.path.join(root, "annotations", f"instances_{glob.escape(prefix)}*.json")))
    if not found:
        present = sorted(os.path.basename(p) for p in glob.glob(os.path.join(root, "annotations", "*.json")))
        raise FileNotFoundError(
            f"coco:{root} has no annotations/instances_{SPLIT_PREFIXES.get(split, (split,))[0]}*.json for the "
            f"{split} split (found: {', '.join(present) or 'none'}); add one, or point data.train_split, "
            f"data.validation_split or data.test_split at a split that has one (COCO 2017 has train and val only)")
    path = found[0]
    stem = os.path.basename(path)[len("instances_"):-len(".json")]
    for images in (os.path.join(root, stem), os.path.join(root, "images")):
        if os.path.isdir(images):
            return path, images
    raise FileNotFoundError(f"coco:{root}: no image folder for {os.path.basename(path)}; put the images in "
                            f"{os.path.join(root, stem)} (or {os.path.join(root, 'images')})")


def read_instances(path: str) -> dict:
    """The parts of an ``instances`` JSON kcnn uses, checked: a clear error naming the file and the field."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable COCO instances JSON ({error})") from None
    for field in ("images", "annotations", "categories"):
        if not isinstance(data, dict) or not isinstance(data.get(field), list):
            raise ValueError(f"{path} is not a COCO instances JSON: it has no {field!r} list")
    return data


def instances_arrays(data: dict, path: str = "annotations") -> dict:
    """Files, padded boxes ``[N, M, 4]`` (ymin, xmin, ymax, xmax pixels) and classes ``[N, M]`` (-1 pads)."""
    categories = sorted(data["categories"], key=lambda c: c["id"])
    index_of = {c["id"]: k for k, c in enumerate(categories)}
    by_image = {image["id"]: [] for image in data["images"]}
    crowd = empty = 0
    for number, note in enumerate(data["annotations"]):
        try:
            image_id, category, (x, y, w, h) = note["image_id"], note["category_id"], note["bbox"]
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: annotation {number} needs image_id, category_id and bbox [x, y, width, "
                             f"height], got {json.dumps(note)[:200]}") from None
        if image_id not in by_image or category not in index_of:
            what = "image_id" if image_id not in by_image else "category_id"
            raise ValueError(f"{path}: annotation {number} has {what} {note[what]} that no entry of "
                             f"{'images' if what == 'image_id' else 'categories'} has")
        if note.get("iscrowd", 0):
            crowd += 1
            continue
        by_image[image_id].append((index_of[category], (float(y), float(x), float(y) + h, float(x) + w)))
    files, boxes, classes = [], [], []
    for image in data["images"]:
        height, width = float(image.get("height", 0) or np.inf), float(image.get("width", 0) or np.inf)
        kept = []
        for label, (ymin, xmin, ymax, xmax) in by_image[image["id"]]:
            ymin, xmin, ymax, xmax = max(ymin, 0.0), max(xmin, 0.0), min(ymax, height), min(xmax, width)
            if ymax > ymin and xmax > xmin:
                kept.append((label, (ymin, xmin, ymax, xmax)))
            else:
                empty += 1
        files.append(image["file_name"])
        boxes.append([b for _, b in kept])
        classes.append([c for c, _ in kept])
    if crowd or empty:
        log.info("%s: left out %d crowd annotations and %d boxes empty inside their image", path, crowd, empty)
    most = max([len(c) for c in classes] + [1])
    padded = np.zeros((len(files), most, 4), np.float32)
    labels = np.full((len(files), most), -1, np.int32)
    for i, (image_boxes, image_classes) in enumerate(zip(boxes, classes)):
        padded[i, :len(image_boxes)] = np.reshape(image_boxes, (-1, 4))
        labels[i, :len(image_classes)] = image_classes
    return {"files": files, "boxes": padded, "classes": labels, "class_names": [str(c["name"]) for c in categories]}
