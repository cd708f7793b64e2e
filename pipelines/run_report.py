"""``write_report(run_dir)``: one self-contained HTML page about a finished run (``RUN_DIR/report.html``).

Sections: the test figures, training curves, confusion matrix, per-class precision/recall/F1, the
model's analysis table (kcnn.analysis), the most confidently wrong test images each with its Grad-CAM
overlay, and the first layer's filters. Every picture is an inline PNG (a data: URL); the page has no
scripts and loads nothing, so it opens offline.

Everything read from the run directory goes through ``read_run`` (one place to adapt when the run
directory's layout changes).
"""

from __future__ import annotations

import base64
import csv
import heapq
import html
import json
import os
import tempfile
from dataclasses import dataclass

import numpy as np

from pipelines import report as plots
from kcnn.files import atomic_write

REPORT_NAME = "report.html"
SECTIONS = (("summary", "Summary"), ("curves", "Training curves"), ("confusion", "Confusion matrix"),
            ("per-class", "Per-class precision, recall and F1"), ("analysis", "Model analysis"),
            ("wrong", "Most confidently wrong test images, with Grad-CAM"), ("filters", "First-layer filters"))


@dataclass
class Run:
    """What the report needs from a run directory."""

    path: str
    config: object
    model: object
    history: list
    metrics: dict
    class_names: list
    plots: dict  # name -> path of a PNG the run already holds ("curves", "confusion")


def read_run(run_dir: str, model=None) -> Run:
    """A finished run's files; ``model`` (the one just saved as model.keras) spares loading it again."""
    from pipelines.evaluate import load_run, read_config

    config, model = (read_config(run_dir), model) if model is not None else load_run(run_dir)
    history = []
    history_path = os.path.join(run_dir, "history.csv")
    if os.path.exists(history_path):
        with open(history_path, newline="") as handle:
            history = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    metrics = _json(os.path.join(run_dir, "metrics.json"), {})
    names = _json(os.path.join(run_dir, "class_names.json"), None)
    pictures = {name: os.path.join(run_dir, "plots", file)
                for name, file in (("curves", "curves.png"), ("confusion", "confusion_matrix.png"))}
    pictures = {name: path for name, path in pictures.items() if os.path.exists(path)}
    return Run(run_dir, config, model, history, metrics, names, pictures)


def _json(path, default):
    if not os.path.exists(path):
        return default
    with open(path) as handle:
        return json.load(handle)


PREDICTION_BATCH = 128  # images per eager call when the report scores the test split


def test_predictions(run: Run, *, keep_wrong: int = 8):
    """Labels, predictions and the ``keep_wrong`` most confidently wrong (confidence, image, label, predicted)."""
    from pipelines.data import DataSpec, make_dataset
    from pipelines.run_dir import RunDir

    spec = DataSpec.from_config(run.config.data, preprocessing=RunDir(run.path).preprocessing())
    # One eager pass: large batches (whatever the training batch was) keep the per-call overhead small.
    spec = spec.evaluation(cache=False, batch_size=max(spec.batch_size, PREDICTION_BATCH))
    dataset, info = make_dataset(spec, spec.test_split)
    labels, predictions, wrong, seen = [], [], [], 0
    for images, batch_labels in dataset:
        probabilities = np.asarray(run.model(images, training=False))  # eager: no tracing for one pass
        truth = batch_labels.numpy()
        guess = probabilities.argmax(-1)
        labels.append(truth)
        predictions.append(guess)
        for i in np.where(guess != truth)[0]:
            item = (float(probabilities[i, guess[i]]), seen + int(i), images[i].numpy(), int(truth[i]), int(guess[i]))
            (heapq.heappush if len(wrong) < keep_wrong else heapq.heappushpop)(wrong, item)
        seen += len(truth)
    wrong = sorted(wrong, key=lambda item: -item[0])
    return np.concatenate(labels), np.concatenate(predictions), list(info.class_names), wrong


def _png_tag(data: bytes, alt: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="{html.escape(alt)}">'


def _plot_bytes(run: Run, name: str, draw, *args) -> bytes:
    """The run's own plot ``name`` when it has one (kcnn train draws them), else drawn now."""
    if name in run.plots:
        with open(run.plots[name], "rb") as handle:
            return handle.read()
    with tempfile.TemporaryDirectory() as scratch:
        path = draw(*args, os.path.join(scratch, "plot.png"))
        with open(path, "rb") as handle:
            return handle.read()


def _table(header, rows) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _analysis_table(model) -> str:
    from kcnn.analysis import analyze
    from kcnn.analysis.format import human

    report = analyze(model)
    shape = lambda s: "x".join("?" if d is None else str(d) for d in s)  # noqa: E731
    rows = [(layer.name, layer.type, shape(layer.output_shape), f"{layer.params:,}",
             human(layer.macs) if layer.macs else "-", shape(layer.receptive_field), shape(layer.jump))
            for layer in report.layers]
    totals = (f"<p>Input {shape(report.input_shape)}; {report.total_params:,} parameters "
              f"({report.trainable_params:,} trainable); {human(report.total_macs)} MACs per image.</p>")
    return totals + _table(("layer", "type", "output", "params", "MACs", "receptive field", "jump"), rows)


def _wrong_section(model, wrong, names) -> str:
    from kcnn import insight
    from kcnn.insight import draw

    if not wrong:
        return "<p>Every test image is classified correctly.</p>"
    images = np.stack([item[2] for item in wrong])
    predicted = [item[4] for item in wrong]
    cams = insight.grad_cam(model, images, class_index=predicted)
    figures = []
    for (confidence, index, image, label, guess), cam in zip(wrong, cams):
        title = f"test #{index}: true {names[label]}, predicted {names[guess]} ({confidence:.2f})"
        scale = max(1, 128 // image.shape[0])  # small images magnified to at least 128 pixels
        picture = draw.array_png(draw.side_by_side([draw.to_display(image), draw.overlay(image, cam)]), scale=scale)
        figures.append(f"<figure>{_png_tag(picture, title)}<figcaption>{html.escape(title)}</figcaption></figure>")
    layer = insight.last_conv_layer(model).name
    return (f"<p>Each image beside its Grad-CAM overlay (layer <code>{html.escape(layer)}</code>, predicted class; "
            "red is where the model looked) for the test images it got wrong with the highest confidence.</p>"
            + "".join(figures))


def _filters_section(model) -> str:
    from kcnn import insight
    from kcnn.insight import draw

    layer = insight.first_conv_layer(model)
    grid = insight.filters(model, layer)
    return _png_tag(draw.grid_png(grid, title=f"{layer.name}: {len(grid)} filters"), f"filters of {layer.name}")


def _unless_no_conv(section, model, *args) -> str:
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
img { max-width: 100%; } figure { display: inline-block; margin: .5em; } figcaption { font-size: .85em; }
"""


def render_report(run: Run, *, keep_wrong: int = 8) -> str:
    """The report page as one HTML string."""
    labels, predictions, names, wrong = test_predictions(run, keep_wrong=keep_wrong)
    names = run.class_names or names
    matrix = plots.confusion_matrix(labels, predictions, len(names))
    scores = plots.per_class_scores(matrix, names)
    accuracy = float(np.mean(labels == predictions)) if len(labels) else float("nan")
    summary_rows = [("test images", len(labels)), ("test accuracy", f"{accuracy:.4f}")]
    summary_rows += [(key, f"{value:.4f}" if isinstance(value, float) else value)
                     for key, value in run.metrics.items() if key != "test_accuracy"]
    data = run.config.data
    curves = (_png_tag(_plot_bytes(run, "curves", plots.plot_curves, run.history), "training curves")
              if run.history else "<p>No history.csv in this run.</p>")
    confusion = _plot_bytes(run, "confusion", plots.plot_confusion, labels, predictions, names)
    body = {
        "summary": f"<p>{html.escape(run.config.model.name)} on {html.escape(data.source)}, "
                   f"{data.image_size}x{data.image_size}.</p>" + _table(("figure", "value"), summary_rows),
        "curves": curves,
        "confusion": _png_tag(confusion, "confusion matrix"),
        "per-class": _table(("class", "precision", "recall", "F1", "support"),
                            [(r["class"], f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}",
                              r["support"]) for r in scores]),
        "analysis": _analysis_table(run.model),
        "wrong": _unless_no_conv(_wrong_section, run.model, wrong, names),
        "filters": _unless_no_conv(_filters_section, run.model),
    }
    title = f"kcnn run report: {os.path.basename(os.path.abspath(run.path))}"
    sections = "".join(f'<section id="{key}"><h2>{html.escape(heading)}</h2>{body[key]}</section>'
                       for key, heading in SECTIONS)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{sections}</body></html>\n")


def write_report(run_dir: str, *, keep_wrong: int = 8, model=None) -> str:
    """Write ``run_dir/report.html`` atomically; returns its path. ``model``: the run's model.keras, in memory."""
    page = render_report(read_run(run_dir, model), keep_wrong=keep_wrong)
    path = os.path.join(run_dir, REPORT_NAME)
    return atomic_write(path, page)
