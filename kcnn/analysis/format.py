"""Render a ModelReport as a 100-column table, Markdown, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
import textwrap

from kcnn.analysis.report import ModelReport

FORMATS = ("table", "markdown", "csv", "json")
COLUMNS = ("name", "type", "output", "params", "MACs", "RF", "jump")


def human(count: float) -> str:
    """1234567 -> '1.23M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(count) >= scale:
            return f"{count / scale:.3g}{unit}"
    return str(int(count))


def _shape(shape) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)


def _pair(values) -> str:
    return str(values[0]) if len(set(values)) == 1 else _shape(values)


def _cells(layer) -> list[str]:
    return [layer.name, layer.type, _shape(layer.output_shape), f"{layer.params:,}",
            human(layer.macs) if layer.macs else "-", _pair(layer.receptive_field), _pair(layer.jump)]


def _totals(report: ModelReport) -> list[str]:
    return [
        f"input {_shape(report.input_shape)}; params {report.total_params:,} "
        f"(trainable {report.trainable_params:,}, non-trainable {report.non_trainable_params:,})",
        f"MACs {report.total_macs:,} ({human(report.total_macs)}); FLOPs {human(report.flops)}; "
        f"activations {human(report.activation_bytes)}B per image",
    ]


def render(report: ModelReport, fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps(report.as_dict(), indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["name", "type", "kernel", "strides", "padding", "dilation", "input_shape", "output_shape",
                         "params", "macs", "activations", "receptive_field", "jump", "notes"])
        for layer in report.layers:
            row = layer.as_dict()
            writer.writerow([row["name"], row["type"], row["kernel"], row["strides"], row["padding"],
                             row["dilation"], row["input_shape"], row["output_shape"], row["params"], row["macs"],
                             row["activations"], row["receptive_field"], row["jump"], "; ".join(row["notes"])])
        return out.getvalue()
    if fmt == "markdown":
        lines = [f"## {report.model}", "", "| " + " | ".join(COLUMNS) + " |",
                 "|" + "|".join("---" for _ in COLUMNS) + "|"]
        lines += ["| " + " | ".join(_cells(layer)) + " |" for layer in report.layers]
        lines += [""] + [f"- {line}" for line in _totals(report)]
        lines += [f"- **{layer.name}**: {note}" for layer in report.mismatches for note in layer.notes]
        return "\n".join(lines) + "\n"
    if fmt == "table":
        widths = (24, 19, 14, 12, 9, 9, 5)  # 98 columns, room for a " !" flag
        def line(cells):
            fitted = [c if len(c) <= w else c[: w - 1] + "~" for c, w in zip(cells, widths)]
            return " ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(fitted, widths)))
        rule = "-" * (sum(widths) + len(widths) - 1)
        lines = [f"Model: {report.model}", rule, line(COLUMNS), rule]
        lines += [line(_cells(layer)) + (" !" if layer.notes else "") for layer in report.layers]
        lines += [rule] + [textwrap.fill(t, 100, subsequent_indent="  ") for t in _totals(report)]
        if report.mismatches:
            lines += ["", "Flagged layers (!):"]
            lines += [textwrap.fill(f"{layer.name}: {note}", 100, initial_indent="  ", subsequent_indent="    ")
                      for layer in report.mismatches for note in layer.notes]
        return "\n".join(lines) + "\n"
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
