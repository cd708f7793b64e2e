"""Render a ModelReport as a 100-column table, Markdown, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
import textwrap

from kcnn.analysis.report import ModelReport

FORMATS = ("table", "markdown", "csv", "json")


def human(count: float) -> str:
    """1234567 -> '1.23M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(count) >= scale:
            return f"{count / scale:.3g}{unit}"
    return str(int(count))


def _shape(shape) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)


def _pair(values) -> str:
    if values is None:
        return "-"
    if isinstance(values, str):
        return values
    return str(values[0]) if len(set(values)) == 1 else _shape(values)


def _count(layer, key: str) -> str:
    """Exact counts as the notes print them: '?' when not analysed, '-' when the layer has none."""
    value = getattr(layer, key)
    return "?" if not layer.analysed else f"{value:,}" if value else "-"


def _macs(layer) -> str:
    return "?" if layer.macs is None else human(layer.macs) if layer.macs else "-"


# key -> (header, width, cell); a table's first two columns are left-aligned, the rest right-aligned.
COLUMN_SPECS = {
    "name": ("name", 24, lambda l: l.name),
    "type": ("type", 19, lambda l: l.type),
    "kernel": ("kernel", 7, lambda l: _pair(l.kernel)),
    "strides": ("stride", 6, lambda l: _pair(l.strides)),
    "padding": ("padding", 7, lambda l: l.padding if isinstance(l.padding, str) else "-" if l.padding is None
                else str(l.padding).replace(" ", "")),
    "dilation": ("dil", 4, lambda l: _pair(l.dilation)),
    "output": ("output", 14, lambda l: _shape(l.output_shape)),
    "params": ("params", 12, lambda l: f"{l.params:,}"),
    "macs": ("MACs", 9, _macs),
    "rf": ("RF", 9, lambda l: _pair(l.receptive_field)),
    "jump": ("jump", 5, lambda l: _pair(l.jump)),
    "activations": ("activations", 11, lambda l: human(l.activations)),
    "neurons": ("neurons", 11, lambda l: _count(l, "neurons")),
    "connections": ("connections", 13, lambda l: _count(l, "connections")),
    "weights_per_unit": ("w/unit", 7, lambda l: _count(l, "weights_per_unit")),
    "multiplications": ("mults", 13, lambda l: _count(l, "multiplications")),
    "additions": ("adds", 13, lambda l: _count(l, "additions")),
    "accumulations_notes": ("acc (notes)", 13, lambda l: "0" if l.analysed and l.weights_per_unit and
                            not l.accumulations_notes else _count(l, "accumulations_notes")),  # 1x1: (1 - 1) = 0
    "bias_additions": ("bias adds", 11, lambda l: _count(l, "bias_additions")),
    "pooling_ops": ("pool ops", 11, lambda l: _count(l, "pooling_ops")),
}
DEFAULT_COLUMNS = ("name", "type", "output", "params", "macs", "rf", "jump")
CSV_FIELDS = ("name", "type", "kernel", "strides", "padding", "dilation", "input_shape", "output_shape", "params",
              "macs", "activations", "receptive_field", "jump", "notes", "analysed", "neurons", "connections",
              "weights_per_unit", "multiplications", "additions", "accumulations_notes", "bias_additions",
              "pooling_ops")


def parse_columns(columns) -> tuple:
    """'name,params,neurons' or a sequence of keys -> the column keys, checked."""
    if columns is None:
        return DEFAULT_COLUMNS
    keys = [c.strip().lower() for c in (columns.split(",") if isinstance(columns, str) else columns) if c.strip()]
    unknown = [key for key in keys if key not in COLUMN_SPECS]
    if unknown or not keys:
        raise ValueError(f"unknown column(s) {', '.join(unknown) or '(none given)'}; choose from "
                         f"{', '.join(COLUMN_SPECS)}")
    return tuple(keys)


def _totals(report: ModelReport) -> list[str]:
    missing = report.not_analysed
    macs = f"MACs {report.total_macs:,} ({human(report.total_macs)})"
    if missing:
        macs = (f"MACs unknown: at least {report.total_macs:,}, {len(missing)} layer(s) not analysed "
                f"({', '.join(missing)})")
    lines = [
        f"input {_shape(report.input_shape)}; params {report.total_params:,} "
        f"(trainable {report.trainable_params:,}, non-trainable {report.non_trainable_params:,})",
        f"{macs}; FLOPs {'at least ' if missing else ''}{human(report.flops)}; "
        f"activations {human(report.activation_bytes)}B per image",
    ]
    if report.total_pooling_ops:
        lines.append(f"pooling: {report.total_pooling_ops:,} comparisons/additions (not in MACs)")
    return lines


def render(report: ModelReport, fmt: str = "table", columns=None) -> str:
    """The report as ``fmt``; ``columns`` (keys of ``COLUMN_SPECS``) picks the table's and Markdown's columns."""
    keys = parse_columns(columns)
    specs = [COLUMN_SPECS[key] for key in keys]
    if fmt == "json":
        return json.dumps(report.as_dict(), indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_FIELDS)
        for layer in report.layers:
            row = layer.as_dict()
            row["notes"] = "; ".join(row["notes"])
            writer.writerow([row[key] for key in CSV_FIELDS])
        return out.getvalue()
    if fmt == "markdown":
        lines = [f"## {report.model}", "", "| " + " | ".join(spec[0] for spec in specs) + " |",
                 "|" + "|".join("---" for _ in specs) + "|"]
        lines += ["| " + " | ".join(spec[2](layer) for spec in specs) + " |" for layer in report.layers]
        lines += [""] + [f"- {line}" for line in _totals(report)]
        lines += [f"- **{layer.name}**: {note}" for layer in report.mismatches for note in layer.notes]
        return "\n".join(lines) + "\n"
    if fmt == "table":
        widths = [spec[1] for spec in specs]  # the default columns take 98 characters, room for a " !" flag

        def line(cells):
            fitted = [c if len(c) <= w else c[: w - 1] + "~" for c, w in zip(cells, widths)]
            return " ".join(c.ljust(w) if key in ("name", "type") else c.rjust(w)
                            for key, c, w in zip(keys, fitted, widths))

        rule = "-" * (sum(widths) + len(widths) - 1)
        lines = [f"Model: {report.model}", rule, line([spec[0] for spec in specs]), rule]
        lines += [line([spec[2](layer) for spec in specs]) + (" !" if layer.notes else "")
                  for layer in report.layers]
        lines += [rule] + [textwrap.fill(t, 100, subsequent_indent="  ") for t in _totals(report)]
        if report.mismatches:
            lines += ["", "Flagged layers (!):"]
            lines += [textwrap.fill(f"{layer.name}: {note}", 100, initial_indent="  ", subsequent_indent="    ")
                      for layer in report.mismatches for note in layer.notes]
        return "\n".join(lines) + "\n"
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
