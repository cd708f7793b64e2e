"""``write_report(run_dir)``: one self-contained HTML page about a finished run (``RUN_DIR/report.html``).

Sections: the test figures; the run itself (start and finish dates in UTC, the kcnn, Keras,
TensorFlow and Python versions it ran on, the starting weights, fine-tuning and pruning); the
configuration (headline hyper-parameters, and the resolved config.yaml, collapsed); the training
curves beside the learning rate per epoch; then the run's task's own sections (its
``report_sections``: for classification the confusion matrix, per-class precision/recall/F1 and
the wrong or least sure test images with Grad-CAM; for segmentation per-class IoU and overlays; for
super-resolution the PSNR/SSIM table against bicubic and side-by-side crops), then the model's
analysis (totals visible, the per-layer table collapsed) and the first layer's filters. Every figure
is a captioned inline PNG (a data: URL) with a title and labelled axes; every figure of the summary
has a readable label with its unit. The page has no scripts and loads nothing, so it opens offline.

Everything read from the run directory goes through ``read_run`` (one place to adapt when the run
directory's layout changes).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from pipelines import fs
from pipelines import report as plots
from pipelines.fs import atomic_write
from pipelines.prune import pruning_densities
from pipelines.run_dir import VERSION_NAMES, RunDir

REPORT_NAME = "report.html"
# A classification run's sections, in page order: the summary, the run, its config and its curves, the task's own
# (pipelines/tasks), then the model's analysis and first-layer filters.
SECTIONS = (("summary", "Summary"), ("run", "Run: dates, versions, starting weights"),
            ("config", "Configuration"), ("curves", "Training curves and learning rate"),
            ("confusion", "Confusion matrix"),
            ("per-class", "Per-class precision, recall and F1"),
            ("wrong", "Where it looked: the test images it got wrong or found hardest, with Grad-CAM"),
            ("analysis", "Model analysis"),
            ("filters", "First-layer filters"))


@dataclass
class Run:
    """What the report needs from a run directory."""

    path: str
    config: object
    model: object
    history: list
    metrics: dict
    class_names: list
    plots: dict  # name -> path of a PNG the run already holds ("curves", "learning_rate", "confusion")
    config_text: str | None = None  # config.yaml as training wrote it (resolved, overrides applied)
    info: dict = field(default_factory=dict)  # run_info.json: sessions (start, versions) and finish


def read_run(run_dir: str, model=None) -> Run:
    """A finished run's files; ``model`` (the one just saved as model.keras) spares loading it again."""
    from pipelines.evaluate import load_run, read_config

    config, model = (read_config(run_dir), model) if model is not None else load_run(run_dir)
    history = []
    history_path = os.path.join(run_dir, "history.csv")
    if fs.exists(history_path):
        history = [{k: float(v) for k, v in row.items()}
                   for row in csv.DictReader(io.StringIO(fs.read_text(history_path)))]
    metrics = _json(os.path.join(run_dir, "metrics.json"), {})
    names = _json(os.path.join(run_dir, "class_names.json"), None)
    pictures = {name: os.path.join(run_dir, "plots", file)
                for name, file in (("curves", "curves.png"), ("learning_rate", "learning_rate.png"),
                                   ("confusion", "confusion_matrix.png"))}
    pictures = {name: path for name, path in pictures.items() if fs.exists(path)}
    directory = RunDir(run_dir)
    return Run(run_dir, config, model, history, metrics, names, pictures, directory.read_config_text(),
               directory.run_info())


def _json(path, default):
    return json.loads(fs.read_text(path)) if fs.exists(path) else default


def png_tag(data: bytes, alt: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="{html.escape(alt)}">'


def figure(data: bytes, caption: str) -> str:
    """A PNG with its caption (also its alt text)."""
    return f"<figure>{png_tag(data, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def plot_bytes(run: Run, name: str, draw, *args) -> bytes:
    """The run's own plot ``name`` when it has one (kcnn train draws them), else drawn now."""
    if name in run.plots:
        return fs.read_bytes(run.plots[name])
    with tempfile.TemporaryDirectory() as scratch:
        path = draw(*args, os.path.join(scratch, "plot.png"))
        with open(path, "rb") as handle:
            return handle.read()


def table(header, rows) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def collapsed(element_id: str, summary: str, content: str) -> str:
    """``content`` folded away under a one-line ``summary`` that stays visible (a closed ``<details>``)."""
    return f'<details id="{element_id}"><summary>{html.escape(summary)}</summary>{content}</details>'


# ---------------------------------------------------------------------------------------------- summary figures

# metrics.json key -> (its label on the page, with its unit, and the format of its value). A key not listed is shown
# under readable_label's name; lists and dicts (per-class tables, curves) are the task sections' to show.
FIGURES = {
    "task": ("task", ""), "num_classes": ("classes", ","),
    "test_accuracy": ("test accuracy", ".4f"), "test_top5_accuracy": ("test top-5 accuracy", ".4f"),
    "test_loss": ("test loss", ".4f"), "val_accuracy": ("best validation accuracy", ".4f"),
    "test_mean_iou": ("test mean IoU", ".4f"), "test_pixel_accuracy": ("test pixel accuracy", ".4f"),
    "scale": ("scale", ""), "test_psnr": ("test PSNR (dB)", ".2f"), "test_ssim": ("test SSIM", ".4f"),
    "bicubic_psnr": ("bicubic PSNR (dB)", ".2f"), "bicubic_ssim": ("bicubic SSIM", ".4f"),
    "test_map": ("test mAP@[.5:.95]", ".4f"), "test_ap50": ("test AP50", ".4f"), "test_ap75": ("test AP75", ".4f"),
    "val_mean_iou": ("best validation mean IoU", ".4f"), "val_psnr": ("best validation PSNR (dB)", ".2f"),
    "val_map": ("best validation mAP@[.5:.95]", ".4f"),
    "epochs_completed": ("epochs completed", ","),
    "train_images_per_second": ("training throughput (images/s, median epoch)", ",.0f"),
    "wall_seconds_this_session": ("wall-clock time of the last training session (s)", ",.1f"),
    "precision_policy": ("precision policy", ""), "strategy": ("distribution strategy", ""),
    "replicas": ("replicas", ","),
}
_WORDS = {"val": "validation", "top5": "top-5", "iou": "IoU", "psnr": "PSNR", "ssim": "SSIM", "map": "mAP",
          "ap": "AP", "ar": "AR", "num": "number of"}


def readable_label(key: str) -> str:
    """A metrics.json key as the page names it: ``test_ap_small`` -> ``test AP small``, ``test_ar100`` ->
    ``test AR100``; a ``*_seconds`` key gets its unit."""
    if key in FIGURES:
        return FIGURES[key][0]
    words = [_WORDS.get(word) or re.sub(r"^(ap|ar)(\d+)$", lambda m: m.group(1).upper() + m.group(2), word)
             for word in key.split("_")]
    if words[-1] == "seconds":
        return " ".join(words[:-1] + ["time (s)"])
    return " ".join(words)


def format_figure(key: str, value) -> str:
    unlisted = ",.1f" if key.endswith("_seconds") else ".4f" if isinstance(value, float) else ""
    spec = FIGURES.get(key, ("", unlisted))[1]
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-" if value is None else str(value)
    return format(value, spec)


def summary_rows(run: Run, task_rows) -> list:
    """The task's rows, then every scalar of metrics.json they do not show, labelled; top-5 figures only when
    there are more than five classes (with five or fewer the top five is every class, always right), the number
    of classes only when the task has classes."""
    classes = len(run.class_names) if run.class_names else run.metrics.get("num_classes", 0)
    shown = {str(label).lower() for label, _ in task_rows}
    rows = list(task_rows)
    for key, value in run.metrics.items():
        if isinstance(value, (list, dict)) or readable_label(key).lower() in shown or key.replace("_", " ") in shown:
            continue
        if ("top5" in key and classes <= 5) or (key == "num_classes" and not value):
            continue
        rows.append((readable_label(key), format_figure(key, value)))
    return rows


# ---------------------------------------------------------------------------------------------- the run

NOT_RECORDED = "not recorded (the run predates run_info.json)"


def show_utc(stamp: str | None) -> str:
    """``2026-03-01T12:00:00+00:00`` -> ``2026-03-01 12:00:00 UTC``."""
    return datetime.fromisoformat(stamp).strftime("%Y-%m-%d %H:%M:%S UTC") if stamp else "-"


def frozen_part(freeze: str) -> str:
    """What ``model.freeze`` freezes, in words."""
    return "the backbone" if freeze == "backbone" else f"every layer up to and including {freeze}"


def starting_weights(config) -> str:
    """Where ``model.weights`` starts the model: random initialisation, a pretrained checkpoint, or a run."""
    weights = config.model.weights
    if weights is None:
        return f"none: random initialisation (train.seed {config.train.seed})"
    if weights == "imagenet":
        return f"imagenet: the pretrained ImageNet checkpoint of {config.model.name} (kcnn.weights)"
    if os.path.isdir(weights):
        return f"the previous run {weights}: its backbone's weights (the head starts afresh)"
    return f"the checkpoint file {weights}"


def fine_tuning(config) -> str:
    """Which layers train when: ``model.freeze`` and the two-stage recipe of ``train.unfreeze_at_epoch``."""
    freeze, boundary = config.model.freeze, config.train.unfreeze_at_epoch
    rate = config.train.unfreeze_learning_rate or config.optimizer.learning_rate  # finetune.make_stage_optimizer's
    if boundary is None:
        if freeze == "none":
            return "none: every layer trains from the first epoch"
        return f"{frozen_part(freeze)} frozen for the whole run (model.freeze: {freeze})"
    first = "epoch 1" if boundary == 1 else f"epochs 1-{boundary}"
    if freeze == "none":
        return (f"two learning-rate stages (train.unfreeze_at_epoch: {boundary}): the second from epoch "
                f"{boundary + 1}, peak rate {rate:g}; nothing frozen (model.freeze: none)")
    return (f"{frozen_part(freeze)} frozen for {first} (model.freeze: {freeze}), unfrozen from epoch {boundary + 1} "
            f"(train.unfreeze_at_epoch: {boundary}) at peak learning rate {rate:g}; batch-norm layers stay frozen")


def pruning_schedule(train_config) -> str | None:
    """The pruning ``train.prune_*`` asks for, in words (target density, begin and end epochs); None when off."""
    if pruning_densities(train_config) is None:
        return None
    if train_config.prune_density is not None:
        density = train_config.prune_density
        target = f"density {density:g} ({density:.0%} of the weights kept) in every Conv2D and Dense layer"
    else:
        target = f"the per-layer densities of table {train_config.prune_table} (kcnn.compress.TABLES)"
    if train_config.prune_end_epoch is None:
        return f"to {target}, once by weight magnitude before the first step, then held"
    return (f"gradually to {target}: from density 1 at the start of epoch 1 to the target by the end of epoch "
            f"{train_config.prune_end_epoch} (Zhu and Gupta's cubic schedule), then held")


def run_section(run: Run) -> str:
    sessions = run.info.get("sessions", [])
    rows = [("started (UTC)", show_utc(sessions[0]["started_utc"]) if sessions else NOT_RECORDED),
            ("finished (UTC)", show_utc(run.info.get("finished_utc")) if sessions else NOT_RECORDED)]
    if len(sessions) > 1:
        rows.append(("training sessions", f"{len(sessions)}: resumed after epoch "
                                          + ", ".join(str(s["start_epoch"]) for s in sessions[1:])))
    versions = sessions[-1]["versions"] if sessions else {}
    rows += [(f"{name} version", versions.get(key, NOT_RECORDED if not sessions else "-"))
             for key, name in VERSION_NAMES]
    earlier = sorted({f"{name} {s['versions'].get(key)}" for s in sessions[:-1] for key, name in VERSION_NAMES
                      if s["versions"].get(key) != versions.get(key)})
    if earlier:
        rows.append(("versions of earlier sessions", ", ".join(earlier)))
    rows += [("starting weights (model.weights)", starting_weights(run.config)),
             ("fine-tuning", fine_tuning(run.config)),
             ("pruning (train.prune_*)", pruning_schedule(run.config.train) or "off")]
    return table(("property", "value"), rows)


def config_section(run: Run) -> str:
    """The headline hyper-parameters, then the whole resolved config.yaml, collapsed."""
    config = run.config
    optimizer, data, train = config.optimizer, config.data, config.train
    rate = f"{optimizer.learning_rate:g}" + (
        f" (scaled linearly with the global batch from batch {optimizer.base_batch_size})"
        if optimizer.lr_scaling == "linear" else "")
    rows = [("model", f"{config.model.name}" + (f", head {config.model.head}" if config.model.head else "")),
            ("optimizer", optimizer.name), ("peak learning rate", rate),
            ("schedule", f"{optimizer.schedule}, warm-up {optimizer.warmup_epochs:g} epochs"),
            ("weight decay", f"{optimizer.weight_decay:g}"),
            ("global batch size (images)", f"{data.batch_size:,}"), ("epochs", f"{train.epochs:,}"),
            ("augmentation", data.augment), ("precision (train.precision)", train.precision),
            ("seed", train.seed)]
    text = run.config_text if run.config_text is not None else config.to_yaml()
    lines = text.count("\n")
    yaml = collapsed("config-yaml", f"config.yaml as resolved (the run's config with every --set override applied): "
                                    f"{lines} lines; click to show",
                     f"<pre>{html.escape(text)}</pre>")
    return table(("hyper-parameter", "value"), rows) + yaml


def curves_section(run: Run, task) -> str:
    if not run.history:
        return "<p>No history.csv in this run.</p>"
    monitor = task.monitor.replace("_", " ")
    measured = monitor if task.train_metric == task.monitor else (
        f"training {task.train_metric.replace('_', ' ')} and validation {monitor}")
    parts = [figure(plot_bytes(run, "curves", plots.plot_curves, run.history, task.train_metric, task.monitor),
                    f"Loss (left) and {measured} (right) per epoch, on the training and validation splits")]
    if "learning_rate" in run.history[0]:
        parts.append(figure(plot_bytes(run, "learning_rate", plots.plot_learning_rate, run.history),
                            "Learning rate per epoch (the rate at the end of each epoch: the next step's)"))
    return f'<div class="row">{"".join(parts)}</div>'  # side by side, at the same height (10 and 5 inches wide)


# ---------------------------------------------------------------------------------------------- the model

def analysis_table(model, input_shape: tuple | None = None) -> str:
    """The analysis totals, then the per-layer table collapsed under a one-line summary; a model of any input
    size (fully convolutional) is analysed at ``input_shape``."""
    from kcnn.analysis import analyze
    from kcnn.analysis.format import human

    sizes_unknown = any(d is None for d in model.inputs[0].shape[1:])
    report = analyze(model, input_shape=input_shape if sizes_unknown else None)
    shape = lambda s: "x".join("?" if d is None else str(d) for d in s)  # noqa: E731
    rows = [(layer.name, layer.type, shape(layer.output_shape), f"{layer.params:,}",
             human(layer.macs) if layer.macs else "-", shape(layer.receptive_field), shape(layer.jump))
            for layer in report.layers]
    totals = (f"<p>Input {shape(report.input_shape)}; {report.total_params:,} parameters "
              f"({report.trainable_params:,} trainable); {human(report.total_macs)} MACs per image.</p>")
    layers = table(("layer", "type", "output shape", "parameters", "MACs per image", "receptive field (pixels)",
                    "jump (pixels)"), rows)
    return totals + collapsed("analysis-layers", f"Per-layer table: {len(rows)} layers (output shape, parameters, "
                                                 "MACs, receptive field, jump); click to show", layers)


def wrong_section(model, examples, names) -> str:
    """Grad-CAM of the predicted class beside each of ``examples`` (confidence, index, image, label, guess):
    the wrong ones first, then the least confident right ones (:func:`pipelines.tasks.classification.test_predictions`)."""
    from kcnn import insight
    from kcnn.insight import draw

    if not examples:
        return "<p>The test split is empty.</p>"
    images = np.stack([item[2] for item in examples])
    predicted = [item[4] for item in examples]
    cams = insight.grad_cam(model, images, class_index=predicted)
    figures = []
    for (confidence, index, image, label, guess), cam in zip(examples, cams):
        outcome = (f"true {names[label]}, predicted {names[guess]}" if guess != label
                   else f"{names[label]}, right")
        scale = max(1, 128 // image.shape[0])  # small images magnified to at least 128 pixels
        picture = draw.array_png(draw.side_by_side([draw.to_display(image), draw.overlay(image, cam)]), scale=scale)
        figures.append(figure(picture, f"test #{index}: {outcome} ({confidence:.2f})"))
    wrong = sum(guess != label for _, _, _, label, guess in examples)
    which = ("the test images it got wrong with the highest confidence" if wrong == len(examples) else
             "every test image it got wrong, then the right ones it was least sure of" if wrong else
             "the test images it was least sure of (it got every one right)")
    layer = insight.last_conv_layer(model).name
    return (f"<p>Each image beside its Grad-CAM overlay (layer <code>{html.escape(layer)}</code>, predicted class; "
            f"red is where the model looked), for {which}.</p>" + "".join(figures))


def filters_section(model) -> str:
    from kcnn import insight
    from kcnn.insight import draw

    layer = insight.first_conv_layer(model)
    grid = insight.filters(model, layer)
    return figure(draw.grid_png(grid, title=f"{layer.name}: {len(grid)} filters"),
                  f"The {len(grid)} filters of the first convolution layer, {layer.name}, one tile each")


def unless_no_conv(section, model, *args) -> str:
    """A section that needs a convolution layer; a model without one gets a line saying so."""
    from kcnn.insight import first_conv_layer

    try:
        first_conv_layer(model)
    except ValueError as error:
        return f"<p>{html.escape(str(error))}.</p>"
    return section(model, *args)


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: .9em; } td, th { border: 1px solid #ddd; padding: .25em .6em; }
th { background: #f3f3f3; } td { text-align: right; } td:first-child, td:nth-child(2) { text-align: left; }
img { max-width: 100%; } figure { display: inline-block; margin: .5em; vertical-align: top; }
figcaption { font-size: .85em; max-width: 1000px; }
.row { display: flex; gap: .5em; align-items: flex-start; } .row figure { margin: 0; min-width: 0; flex: 2; }
.row figure + figure { flex: 1; }
details { margin: .6em 0; } summary { cursor: pointer; color: #245; }
pre { background: #f7f7f7; padding: .6em; font-size: .85em; overflow-x: auto; }
"""


def render_report(run: Run, *, keep_wrong: int = 8) -> str:
    """The report page as one HTML string: the generic sections around the run's task's own."""
    from pipelines.tasks import task_of

    task = task_of(run.config)
    sections = task.report_sections(run, examples=keep_wrong)
    rows = summary_rows(run, next((body for key, _, body in sections if key == "summary"), []))
    data = run.config.data
    parts = [("summary", "Summary", f"<p>{html.escape(run.config.model.name)} ({html.escape(task.name)}) on "
                                    f"{html.escape(data.source)}, {data.image_size}x{data.image_size}.</p>"
              + table(("figure", "value"), rows)),
             ("run", "Run: dates, versions, starting weights", run_section(run)),
             ("config", "Configuration", config_section(run)),
             ("curves", "Training curves and learning rate", curves_section(run, task))]
    parts += [(key, heading, content) for key, heading, content in sections if key != "summary"]
    pre = _json(os.path.join(run.path, "preprocessing.json"), None)  # the size the model sees
    size = (pre["image_size"], pre["image_size"], pre["channels"]) if pre else None
    parts += [("analysis", "Model analysis", analysis_table(run.model, size)),
              ("filters", "First-layer filters", unless_no_conv(filters_section, run.model))]
    where = os.path.abspath(run.path) if fs.is_local(run.path) else run.path.rstrip("/")
    title = f"kcnn run report: {os.path.basename(where)}"
    body = "".join(f'<section id="{key}"><h2>{html.escape(heading)}</h2>{content}</section>'
                   for key, heading, content in parts)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n")


def write_report(run_dir: str, *, keep_wrong: int = 8, model=None) -> str:
    """Write ``run_dir/report.html`` atomically; returns its path. ``model``: the run's model.keras, in memory."""
    page = render_report(read_run(run_dir, model), keep_wrong=keep_wrong)
    path = os.path.join(run_dir, REPORT_NAME)
    return atomic_write(path, page)
