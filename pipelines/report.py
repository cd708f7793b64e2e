"""Plots and per-class figures for a training run; every plot has a title and labelled axes, with units."""

from __future__ import annotations


import numpy as np
from pipelines.run_dir import staged_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# The axis label of each figure a history holds (the tasks' train_metric and monitor), with its unit.
FIGURE_AXES = {"accuracy": "accuracy (fraction of images)", "pixel_accuracy": "pixel accuracy (fraction of pixels)",
               "mean_iou": "mean IoU over classes", "psnr": "PSNR (dB)", "box_iou": "box IoU",
               "map": "mAP@[.5:.95]"}


def figure_axis(name: str) -> str:
    """``accuracy`` -> ``accuracy (fraction of images)``: a history figure's readable name and unit."""
    return FIGURE_AXES.get(name, name.replace("_", " "))


def plot_curves(history: list[dict], path: str, train_metric: str = "accuracy", monitor: str = "accuracy") -> str:
    """Loss and the task's figure per epoch (``train_metric`` on training batches, ``monitor`` on validation)."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [h["loss"] for h in history], "o-", label="training (mean over the epoch)")
    left.plot(epochs, [h["val_loss"] for h in history], "s-", label="validation")
    left.set(title="Loss per epoch", xlabel="epoch", ylabel="loss (the task's training objective)")
    right.plot(epochs, [h[train_metric] for h in history], "o-", label=f"training {train_metric.replace('_', ' ')}")
    right.plot(epochs, [h[f"val_{monitor}"] for h in history], "s-", label=f"validation {monitor.replace('_', ' ')}")
    if train_metric == monitor:
        title, ylabel = f"{monitor.replace('_', ' ')} per epoch", figure_axis(monitor)
    else:
        title = f"training {train_metric.replace('_', ' ')}, validation {monitor.replace('_', ' ')} per epoch"
        ylabel = f"{figure_axis(train_metric)} / {figure_axis(monitor)}"
    limits = {"ylim": (0, 1.02)} if "psnr" not in (train_metric, monitor) else {}
    right.set(title=title[0].upper() + title[1:], xlabel="epoch", ylabel=ylabel, **limits)
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend()
        axis.xaxis.get_major_locator().set_params(integer=True)
    return _save(plt, figure, path)


def plot_learning_rate(history: list[dict], path: str) -> str:
    """The learning rate per epoch (history.csv's ``learning_rate``: the rate at the end of the epoch, which the
    next step uses, as Keras' ``fit`` logs it).

    The axis is logarithmic when the rates span more than a factor of ten (warm-up, step decay), so every
    stage shows.
    """
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    rates = [h["learning_rate"] for h in history]
    figure, axis = plt.subplots(figsize=(5, 4))
    axis.plot(epochs, rates, "o-", color="tab:green")
    axis.set(title="Learning rate per epoch", xlabel="epoch", ylabel="learning rate (at the end of the epoch)")
    if min(rates) > 0 and max(rates) > 10 * min(rates):
        axis.set_yscale("log")
    else:
        axis.set_ylim(bottom=0, top=max(rates) * 1.1 or 1.0)
    axis.grid(alpha=0.3)
    axis.xaxis.get_major_locator().set_params(integer=True)
    return _save(plt, figure, path)


def _save(plt, figure, path: str) -> str:
    figure.tight_layout()
    with staged_path(path) as temporary:  # atomic: a kill never leaves half a PNG
        figure.savefig(temporary, dpi=100)
    plt.close(figure)
    return path


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts: row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(labels, np.int64), np.asarray(predictions, np.int64)), 1)
    return matrix


def per_class_scores(matrix: np.ndarray, class_names) -> list[dict]:
    """Precision, recall, F1 and support of each class from a confusion matrix."""
    rows = []
    for i, name in enumerate(class_names):
        tp = matrix[i, i]
        predicted, actual = matrix[:, i].sum(), matrix[i].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"class": name, "precision": float(precision), "recall": float(recall), "f1": float(f1),
                     "support": int(actual)})
    return rows


def plot_confusion(labels, predictions, class_names, path: str) -> str:
    return plot_confusion_matrix(confusion_matrix(labels, predictions, len(class_names)), class_names, path)


def plot_confusion_matrix(matrix: np.ndarray, class_names, path: str, *, what: str = "accuracy") -> str:
    """A confusion matrix (row: true class) as a PNG; ``what`` names its trace share in the title."""
    plt = _pyplot()
    matrix = np.asarray(matrix, np.int64)
    size = max(4.0, 0.45 * len(class_names) + 2)
    figure, axis = plt.subplots(figsize=(size + 1, size))
    image = axis.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axis, label="count")
    ticks = np.arange(len(class_names))
    axis.set_xticks(ticks, class_names, rotation=90 if len(class_names) > 12 else 0)
    axis.set_yticks(ticks, class_names)
    axis.set(xlabel="predicted class", ylabel="true class",
             title=f"Confusion matrix ({what} {np.trace(matrix) / max(matrix.sum(), 1):.4f})")
    if len(class_names) <= 20:
        threshold = matrix.max() / 2 if matrix.size else 0
        for (i, j), count in np.ndenumerate(matrix):
            axis.text(j, i, str(count), ha="center", va="center", fontsize=8,
                      color="white" if count > threshold else "black")
    return _save(plt, figure, path)
