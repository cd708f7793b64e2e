"""``evaluate(run_dir)``: top-1, top-5 and per-class figures of a finished run, optionally with ten-crop TTA."""

from __future__ import annotations

import csv
import io
import json
import warnings

import numpy as np
import yaml

from pipelines import fs, report
from pipelines.augment import get_recipe, ten_crop_predict
from pipelines.choices import TTA_MODES
from pipelines.config import from_dict
from pipelines.data import DataSpec, make_dataset
from pipelines.run_dir import RunDir, atomic_write
from pipelines.tasks import get_task, task_of



def read_config(run_dir: str):
    """The config of a finished run directory."""
    text = RunDir(run_dir).require_finished().read_config_text()
    if text is None:
        raise FileNotFoundError(f"{run_dir} has no {RunDir.CONFIG}; it was not written by `kcnn train`")
    return from_dict(yaml.safe_load(text))


def load_run(run_dir: str):
    """The config and the trained model (``model.keras``) of a finished run directory."""
    return read_config(run_dir), RunDir(run_dir).load_model()


def evaluate(run_dir: str, *, tta: str = "none", split: str | None = None, flip: bool | None = None) -> dict:
    """Evaluate a finished run on its test split (or ``split``) as its task does; writes evaluation.json.

    Classification: top-1, top-5 and per-class figures, optionally with ten-crop TTA (``tta``,
    ``flip``); segmentation: pixel accuracy and per-class and mean IoU; super-resolution: PSNR and
    SSIM beside bicubic upscaling.
    """
    if tta not in TTA_MODES:
        raise ValueError(f"tta must be one of {', '.join(TTA_MODES)}, got {tta!r}")
    return task_of(read_config(run_dir)).evaluate_run(run_dir, tta=tta, split=split, flip=flip)


def format_evaluation(result: dict) -> str:
    """The lines ``kcnn evaluate`` prints for a result of :func:`evaluate`."""
    return get_task(result.get("task")).format_evaluation(result)


def evaluate_classification(run_dir: str, *, tta: str = "none", split: str | None = None,
                            flip: bool | None = None) -> dict:
    """Evaluate a classification run's model on its test split; writes evaluation.json and the plots.

    ``flip`` (ten-crop TTA only) includes the mirrored crops; by default it does,
    with a warning when the run's augmentation never mirrored images: a model of
    data that is not mirror-symmetric (digits) loses accuracy on mirrored views.
    """
    if tta not in TTA_MODES:
        raise ValueError(f"tta must be one of {', '.join(TTA_MODES)}, got {tta!r}")
    config, model = load_run(run_dir)
    mirror = tta == "ten_crop" and flip is not False
    if mirror and flip is None and not get_recipe(config.data.augment).flip:
        warnings.warn(f"ten-crop TTA averages mirrored crops, but this run's augmentation "
                      f"({config.data.augment!r}) never mirrored images, so mirrored views may lower accuracy "
                      "(digits are not mirror-symmetric); pass flip=False (--no-flip) to leave them out",
                      UserWarning, stacklevel=2)
    spec = DataSpec.from_config(config.data, preprocessing=RunDir(run_dir).preprocessing()).evaluation(cache=False)
    size = spec.preprocessing.image_size
    split = split or spec.test_split
    # Ten-crop TTA looks at crops of a larger view: the image resized to size / 0.875 (256 for 224).
    if tta == "ten_crop":
        spec = spec.with_image_size(round(size / 0.875))
    dataset, info = make_dataset(spec, split)
    RunDir(run_dir).record_files(info)  # the same files training recorded for this split, or a clear error
    probabilities, labels = [], []
    for images, batch_labels in dataset:
        if tta == "ten_crop":
            probabilities.append(ten_crop_predict(model, images, size, flip=mirror))
        else:
            probabilities.append(model.predict_on_batch(images))
        labels.append(batch_labels.numpy())
    probabilities = np.concatenate(probabilities)
    labels = np.concatenate(labels)
    names = list(info.class_names)
    predictions = probabilities.argmax(axis=1)
    top5 = np.argsort(-probabilities, axis=1)[:, :5]
    matrix = report.confusion_matrix(labels, predictions, len(names))
    result = {
        "task": "classification",
        "split": split,
        "tta": tta,
        "tta_flip": mirror,
        "examples": int(len(labels)),
        "top1_accuracy": float(np.mean(predictions == labels)),
        "top5_accuracy": float(np.mean([label in row for label, row in zip(labels, top5)])),
        "per_class": report.per_class_scores(matrix, names),
        "confusion_matrix": matrix.tolist(),
    }
    run = RunDir(run_dir)
    mode = tta if tta == "none" or mirror else f"{tta}_noflip"
    suffix = "" if mode == "none" else f"_{mode}"
    atomic_write(run.evaluation(mode), json.dumps(result, indent=2))
    report.plot_confusion(labels, predictions, names, run.plot(f"confusion_matrix{suffix}"))
    if fs.exists(run.history):
        history = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(fs.read_text(run.history)))]
        report.plot_curves(history, run.plot("curves"))
    return result


def format_classification(result: dict) -> str:
    lines = [f"{result['split']} split, {result['examples']} images, TTA {result['tta']}"
             f"{' with mirrored crops' if result.get('tta_flip') else ''}: "
             f"top-1 {result['top1_accuracy']:.4f}, top-5 {result['top5_accuracy']:.4f}",
             f"{'class':>12} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>7}"]
    for row in result["per_class"]:
        lines.append(f"{row['class'][:12]:>12} {row['precision']:9.4f} {row['recall']:7.4f} {row['f1']:6.4f} "
                     f"{row['support']:7d}")
    return "\n".join(lines)
