"""``write_report(run_dir)``: one self-contained HTML page about a finished run (``RUN_DIR/report.html``).

Sections: the test figures and training curves, then the run's task's own sections (its
``report_sections``: for classification the confusion matrix, per-class precision/recall/F1 and the
most confidently wrong test images with Grad-CAM; for segmentation per-class IoU and overlays; for
super-resolution the PSNR/SSIM table against bicubic and side-by-side crops), then the model's
analysis table (kcnn.analysis) and the first layer's filters. Every picture is an inline PNG (a
data: URL); the page has no scripts and loads nothing, so it opens offline.

Everything read from the run directory goes through ``read_run`` (one place to adapt when the run
directory's layout changes).
"""

from __future__ import annotations

import base64
import csv
import html
import json
import os
import tempfile
from dataclasses import dataclass

import numpy as np

from pipelines import report as plots
from kcnn.files import atomic_write

REPORT_NAME = "report.html"
# A classification run's sections, in page order: the summary and curves, the task's own (pipelines/tasks), then
# the model's analysis and first-layer filters.
SECTIONS = (("summary", "Summary"), ("curves", "Training curves"), ("confusion", "Confusion matrix"),
            ("per-class", "Per-class precision, recall and F1"),
            ("wrong", "Most confidently wrong test images, with Grad-CAM"), ("analysis", "Model analysis"),
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


def png_tag(data: bytes, alt: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="{html.escape(alt)}">'


def plot_bytes(run: Run, name: str, draw, *args) -> bytes:
    """The run's own plot ``name`` when it has one (kcnn train draws them), else drawn now."""
    if name in run.plots:
        with open(run.plots[name], "rb") as handle:
            return handle.read()
    with tempfile.TemporaryDirectory() as scratch:
        path = draw(*args, os.path.join(scratch, "plot.png"))
        with open(path, "rb") as handle:
            return handle.read()


def table(header, rows) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def analysis_table(model, input_shape: tuple | None = None) -> str:
    """The analysis table; a model of any input size (fully convolutional) is analysed at ``input_shape``."""
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
    return totals + table(("layer", "type", "output", "params", "MACs", "receptive field", "jump"), rows)


def wrong_section(model, wrong, names) -> str:
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
        figures.append(f"<figure>{png_tag(picture, title)}<figcaption>{html.escape(title)}</figcaption></figure>")
    layer = insight.last_conv_layer(model).name
    return (f"<p>Each image beside its Grad-CAM overlay (layer <code>{html.escape(layer)}</code>, predicted class; "
            "red is where the model looked) for the test images it got wrong with the highest confidence.</p>"
            + "".join(figures))


def filters_section(model) -> str:
    from kcnn import insight
    from kcnn.insight import draw

    layer = insight.first_conv_layer(model)
    grid = insight.filters(model, layer)
    return png_tag(draw.grid_png(grid, title=f"{layer.name}: {len(grid)} filters"), f"filters of {layer.name}")


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
img { max-width: 100%; } figure { display: inline-block; margin: .5em; } figcaption { font-size: .85em; }
"""


def render_report(run: Run, *, keep_wrong: int = 8) -> str:
    """The report page as one HTML string: the generic sections around the run's task's own."""
    from pipelines.tasks import task_of

    task = task_of(run.config)
    sections = task.report_sections(run, examples=keep_wrong)
    summary_rows = next((body for key, _, body in sections if key == "summary"), [])
    shown = {str(row[0]).replace(" ", "_") for row in summary_rows}
    summary_rows = list(summary_rows) + [(key, f"{value:.4f}" if isinstance(value, float) else value)
                                         for key, value in run.metrics.items()
                                         if not isinstance(value, (list, dict)) and key not in shown]
    data = run.config.data
    curves = (png_tag(plot_bytes(run, "curves", plots.plot_curves, run.history, task.train_metric, task.monitor),
                      "training curves") if run.history else "<p>No history.csv in this run.</p>")
    parts = [("summary", "Summary", f"<p>{html.escape(run.config.model.name)} ({html.escape(task.name)}) on "
                                    f"{html.escape(data.source)}, {data.image_size}x{data.image_size}.</p>"
              + table(("figure", "value"), summary_rows)),
             ("curves", "Training curves", curves)]
    parts += [section for section in sections if section[0] != "summary"]
    pre = _json(os.path.join(run.path, "preprocessing.json"), None)  # the size the model sees
    size = (pre["image_size"], pre["image_size"], pre["channels"]) if pre else None
    parts += [("analysis", "Model analysis", analysis_table(run.model, size)),
              ("filters", "First-layer filters", unless_no_conv(filters_section, run.model))]
    title = f"kcnn run report: {os.path.basename(os.path.abspath(run.path))}"
    body = "".join(f'<section id="{key}"><h2>{html.escape(heading)}</h2>{content}</section>'
                   for key, heading, content in parts)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n")


def write_report(run_dir: str, *, keep_wrong: int = 8, model=None) -> str:
    """Write ``run_dir/report.html`` atomically; returns its path. ``model``: the run's model.keras, in memory."""
    page = render_report(read_run(run_dir, model), keep_wrong=keep_wrong)
    path = os.path.join(run_dir, REPORT_NAME)
    return atomic_write(path, page)
