"""``kcnn compress RUN_DIR``: prune, share weights and Huffman-code a trained run (Deep Compression).

This module compresses (keras and numpy, loaded inside the functions, so importing it stays
cheap). Fine-tuning the shared centroids and scoring top-1 need the run's own data, which only
the pipelines read: where they are installed, ``pipelines.compress_finetune`` registers the
command with this module's arguments and its own handler (as ``kcnn.cli`` loads the pipelines'
commands by name); without them ``kcnn compress`` compresses alone.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil

RUN_METADATA = ("class_names.json", "preprocessing.json", "config.yaml")
ARTEFACT = "model.kcnn.zip"
DEFAULT_BITS = 6  # SqueezeNet's Table 1
DEFAULT_INDEX_BITS = 8
# kcnn.compress.tables.TABLES, written out so that building the parser imports no Keras (a test keeps them equal)
TABLE_NAMES = ("han_alexnet_table4", "han_vgg16_table5", "squeezenet_table1")
RUN_DATA_COMMAND = "pipelines.compress_finetune"
BITS_SYNTAX = ("one width, or KIND_OR_LAYER=WIDTH pairs separated by commas (conv: every Conv2D, fc: every Dense, "
               "or a layer name or glob; later pairs win)")


def parse_bits(text: str, option: str = "--bits"):
    """``"6"`` -> 6; ``"conv=8,fc=5"`` -> ``{"conv": 8, "fc": 5}``; anything else a ValueError naming the syntax."""
    text = text.strip()
    try:
        if "=" not in text:
            return int(text)
        widths = {}
        for item in text.split(","):
            key, _, value = item.partition("=")
            if not key.strip():
                raise ValueError
            widths[key.strip()] = int(value)
        return widths
    except ValueError:
        raise ValueError(f"{option} takes {BITS_SYNTAX}, e.g. '{option} 6' or '{option} conv=8,fc=5'; "
                         f"got {text!r}") from None


def merge_bits(base, given):
    """``given`` over a table's ``base`` widths: an integer replaces them, a mapping overrides some of them."""
    if given is None or base is None:
        return given if given is not None else base
    if not isinstance(given, dict):
        return given
    return {**(base if isinstance(base, dict) else {"*": base}), **given}


def _densities(args):
    if args.table and args.density:
        raise ValueError("give --table or --density, not both")
    if args.table:
        return args.table
    densities = {}
    for item in args.density or []:
        pattern, _, value = item.partition("=")
        try:
            densities[pattern] = float(value)
        except ValueError:
            raise ValueError(f"--density takes LAYER_OR_GLOB=DENSITY, e.g. 'fire*_expand3x3_conv=0.33'; "
                             f"got {item!r}") from None
    return densities or None


def widths_for(table: str | None, bits=None, index_bits=None) -> tuple:
    """(weight bits, index bits): those given, over the table's own (``TABLE_BITS``), over kcnn's defaults."""
    from kcnn.compress.tables import TABLE_BITS, TABLES

    if table is not None and table not in TABLES:
        raise ValueError(f"unknown density table {table!r}; known tables: {', '.join(sorted(TABLES))}")
    table_bits, table_index_bits = TABLE_BITS.get(table, (None, None))
    bits, index_bits = merge_bits(table_bits, bits), merge_bits(table_index_bits, index_bits)
    return (DEFAULT_BITS if bits is None else bits), (DEFAULT_INDEX_BITS if index_bits is None else index_bits)


def check_run(run_dir: str, out_dir: str) -> str:
    """The run's model path, or a one-line error for a directory without one or an ``out_dir`` that is the run."""
    model_path = os.path.join(run_dir, "model.keras")
    if not os.path.exists(model_path):
        raise FileNotFoundError(f"{run_dir} has no model.keras; give a finished run directory (from `kcnn train`)")
    if os.path.abspath(out_dir) == os.path.abspath(run_dir):
        raise ValueError("--out must be a new directory, not the run directory itself")
    return model_path


def compress_run(run_dir: str, out_dir: str, *, densities=None, bits=None, index_bits=None, finetune=None,
                 top1=None) -> dict:
    """Compress ``run_dir/model.keras`` into ``out_dir`` (artefact, report, decoded model, run metadata).

    ``bits`` and ``index_bits`` are one width or a per-layer mapping (``kcnn.compress.resolve_bits``);
    left ``None`` they take the named table's widths (``densities`` a ``TABLES`` name), else 6 and
    8. ``finetune(model, codes) -> dict`` trains the shared centroids before the artefact is written;
    ``top1(model) -> float`` scores a model on the run's test split: the report then has the dense
    model's, the quantised one's (before fine-tuning) and the decoded artefact's top-1.
    """
    from kcnn import compress
    from kcnn.files import atomic_write, staged_path

    bits, index_bits = widths_for(densities if isinstance(densities, str) else None, bits, index_bits)
    model_path = check_run(run_dir, out_dir)
    from kcnn.files import load_keras_model  # registers kcnn's custom layers before loading

    model = load_keras_model(model_path)
    accuracy = {}
    if top1 is not None:
        accuracy["dense"] = top1(model)
    if compress.pruning.masked_layers(model):
        model = compress.strip_pruning(model)  # pruned while training: its masks are in the kernels
    if densities:
        model = compress.strip_pruning(compress.prune(model, densities))
    codes = compress.quantise(model, bits)
    compress.resolve_bits(model, index_bits, what="index bits")  # a bad --index-bits fails before fine-tuning
    if top1 is not None:
        accuracy["quantised"] = top1(model)
    finetuned = finetune(model, codes) if finetune is not None else None
    os.makedirs(out_dir, exist_ok=True)
    report = compress.write_artefact(model, codes, os.path.join(out_dir, ARTEFACT), index_bits=index_bits)
    restored = compress.load_artefact(os.path.join(out_dir, ARTEFACT))
    if top1 is not None:
        accuracy["decoded"] = top1(restored)
    with staged_path(os.path.join(out_dir, "model.keras")) as temporary:
        restored.save(temporary)
    for name in RUN_METADATA:
        if os.path.exists(os.path.join(run_dir, name)):
            shutil.copyfile(os.path.join(run_dir, name), os.path.join(out_dir, name))
    report.update(run_dir=run_dir, artefact=os.path.join(out_dir, ARTEFACT), bits=bits, index_bits=index_bits,
                  table=densities if isinstance(densities, str) else None, finetune=finetuned,
                  top1=accuracy or None)
    atomic_write(os.path.join(out_dir, "compression.json"), json.dumps(report, indent=2))
    return report


def _widths(value) -> str:
    return str(value) if not isinstance(value, dict) else ",".join(f"{k}={v}" for k, v in value.items())


def format_accuracy(report: dict) -> list[str]:
    """The top-1 lines: dense, quantised before fine-tuning, the decoded artefact (after it, when done)."""
    top1 = report.get("top1")
    if not top1:
        return []
    tuned = report.get("finetune")
    after = (f"centroids fine-tuned ({tuned['steps']} steps, {tuned['seconds']:.0f} s) and decoded from the artefact"
             if tuned else "decoded from the artefact (no fine-tuning)")
    return [f"test top-1: dense {top1['dense']:.2%}; pruned and shared at bits {_widths(report['bits'])} "
            f"{top1['quantised']:.2%}; {after} {top1['decoded']:.2%} "
            f"({100 * (top1['decoded'] - top1['dense']):+.1f} points)"]


def format_report(report: dict) -> str:
    """The per-layer table, totals, top-1 when measured, and (for the SqueezeNet table) the Table 1 comparison."""
    lines = [f"{'layer':<24}{'params':>10}{'after pruning':>15}{'density':>9}{'bits':>6}{'index':>6}"
             f"{'bytes':>10}{'huffman':>10}"]
    for row in report["layers"]:
        lines.append(f"{row['layer']:<24}{row['params']:>10,}{row['params_after']:>15,}{row['density']:>9.1%}"
                     f"{row['bits']:>6}{row['index_bits']:>6}{row['bytes_before_huffman']:>10,}"
                     f"{row['bytes_after_huffman']:>10,}")
    lines.append(f"{'total (all weights)':<24}{report['params']:>10,}{report['params_after']:>15,}{'':>21}"
                 f"{report['bytes_before_huffman']:>10,}{report['total_bytes']:>10,}")
    lines.append(f"dense float32 {report['dense_bytes']:,} bytes ({report['dense_bytes'] / 2**20:.2f} MB) -> "
                 f"{report['total_bytes']:,} bytes ({report['total_bytes'] / 2**20:.3f} MB): "
                 f"{report['compression']:.1f}x; artefact file {report['file_bytes']:,} bytes")
    lines += format_accuracy(report)
    if report.get("table") == "squeezenet_table1":
        from kcnn.compress.tables import SQUEEZENET_TABLE1_PARAMS, squeezenet_module

        after = {}
        for row in report["layers"]:
            module = squeezenet_module(row["layer"])
            after[module] = after.get(module, 0) + row["params_after"]
        lines.append(f"\n{'Table 1 row':<12}{'after pruning':>15}{'paper':>10}{'difference':>12}")
        for module, (_, paper) in SQUEEZENET_TABLE1_PARAMS.items():
            if module in after:
                lines.append(f"{module:<12}{after[module]:>15,}{paper:>10,}{after[module] / paper - 1:>12.2%}")
        lines.append("(conv1 and conv10 depend on the input channels and the classes: Table 1 has 3 and 1000)")
    return "\n".join(lines)


def compress_args(args) -> dict:
    """The keyword arguments of ``compress_run`` that the command line gives (bad syntax: a ValueError)."""
    return {"densities": _densities(args),
            "bits": parse_bits(args.bits) if args.bits is not None else None,
            "index_bits": parse_bits(args.index_bits, "--index-bits") if args.index_bits is not None else None}


def print_result(report: dict, out_dir: str) -> None:
    print(format_report(report))
    print(f"wrote {report['artefact']}, {os.path.join(out_dir, 'model.keras')} (decoded) and "
          f"{os.path.join(out_dir, 'compression.json')}")


def _compress(args) -> int:
    report = compress_run(args.run_dir, args.out, **compress_args(args))
    print_result(report, args.out)
    return 0


def add_parser(sub):
    """The ``kcnn compress`` parser with the compression arguments (its handler is set by the caller)."""
    parser = sub.add_parser(
        "compress", help="prune, quantise and Huffman-code a trained run (Deep Compression)",
        description="Deep Compression of RUN_DIR/model.keras: magnitude pruning to the given densities, k-means "
                    "weight sharing at --bits, sparse relative indices and Huffman coding. Writes OUT/model.kcnn.zip, "
                    "OUT/compression.json (per-layer report), OUT/model.keras decoded from the artefact, and the "
                    "run's class names and preprocessing, so `kcnn evaluate OUT` and `kcnn export OUT` work.")
    parser.add_argument("run_dir", help="a finished run directory (from kcnn train)")
    parser.add_argument("--out", required=True, help="output directory for the artefact and report")
    parser.add_argument("--table", metavar="NAME",
                        help=f"a named density table: {', '.join(TABLE_NAMES)} (Iandola et al. 2016 Table 1; "
                             "Han et al. 2016 Tables 4 and 5, for alexnet with groups=2 and vgg16); it also sets "
                             "its paper's widths (6 bits; conv 8 / fc 5) unless --bits / --index-bits say otherwise")
    parser.add_argument("--density", action="append", metavar="LAYER=D",
                        help="density for a layer name or glob, repeatable, e.g. 'conv_scores=0.2'")
    parser.add_argument("--bits", metavar="WIDTHS",
                        help=f"bits per shared weight: {BITS_SYNTAX}, e.g. 6 or conv=8,fc=5 (default: the table's, "
                             "else 6)")
    parser.add_argument("--index-bits", metavar="WIDTHS",
                        help="bits per relative index, as --bits (default: the table's, else 8)")
    return parser


def register(sub) -> None:
    try:
        module = importlib.import_module(RUN_DATA_COMMAND)
    except ModuleNotFoundError as error:
        if not (error.name and RUN_DATA_COMMAND.startswith(error.name)):
            raise
        add_parser(sub).set_defaults(func=_compress)  # no pipelines here: compress without the run's data
        return
    module.register(sub)
