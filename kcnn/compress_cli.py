"""``kcnn compress RUN_DIR``: prune, share weights and Huffman-code a trained run (Deep Compression).

Importing this module stays cheap: keras and the compress package load inside the handler.
"""

from __future__ import annotations

import json
import os
import shutil

RUN_METADATA = ("class_names.json", "preprocessing.json", "config.yaml")
ARTEFACT = "model.kcnn.zip"


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


def compress_run(run_dir: str, out_dir: str, *, densities=None, bits: int = 6, index_bits: int = 8) -> dict:
    """Compress ``run_dir/model.keras`` into ``out_dir`` (artefact, report, decoded model, run metadata)."""
    import keras

    from kcnn import compress
    from kcnn.files import atomic_write, staged_path

    model_path = os.path.join(run_dir, "model.keras")
    if not os.path.exists(model_path):
        raise FileNotFoundError(f"{run_dir} has no model.keras; give a finished run directory (from `kcnn train`)")
    if os.path.abspath(out_dir) == os.path.abspath(run_dir):
        raise ValueError("--out must be a new directory, not the run directory itself")
    import kcnn.layers  # noqa: F401  (registers kcnn's custom layers before loading)

    model = keras.saving.load_model(model_path, safe_mode=True)
    if compress.pruning.masked_layers(model):
        model = compress.strip_pruning(model)  # pruned while training: its masks are in the kernels
    if densities:
        model = compress.strip_pruning(compress.prune(model, densities))
    codes = compress.quantise(model, bits)
    os.makedirs(out_dir, exist_ok=True)
    report = compress.write_artefact(model, codes, os.path.join(out_dir, ARTEFACT), index_bits=index_bits)
    restored = compress.load_artefact(os.path.join(out_dir, ARTEFACT))
    with staged_path(os.path.join(out_dir, "model.keras")) as temporary:
        restored.save(temporary)
    for name in RUN_METADATA:
        if os.path.exists(os.path.join(run_dir, name)):
            shutil.copyfile(os.path.join(run_dir, name), os.path.join(out_dir, name))
    report.update(run_dir=run_dir, artefact=os.path.join(out_dir, ARTEFACT), bits=bits, index_bits=index_bits,
                  table=densities if isinstance(densities, str) else None)
    atomic_write(os.path.join(out_dir, "compression.json"), json.dumps(report, indent=2))
    return report


def format_report(report: dict) -> str:
    """The per-layer table, totals, and (for the SqueezeNet table) the Table 1 comparison."""
    lines = [f"{'layer':<24}{'params':>10}{'after pruning':>15}{'density':>9}{'bits':>6}"
             f"{'bytes':>10}{'huffman':>10}"]
    for row in report["layers"]:
        lines.append(f"{row['layer']:<24}{row['params']:>10,}{row['params_after']:>15,}{row['density']:>9.1%}"
                     f"{row['bits']:>6}{row['bytes_before_huffman']:>10,}{row['bytes_after_huffman']:>10,}")
    lines.append(f"{'total (all weights)':<24}{report['params']:>10,}{report['params_after']:>15,}{'':>15}"
                 f"{report['bytes_before_huffman']:>10,}{report['total_bytes']:>10,}")
    lines.append(f"dense float32 {report['dense_bytes']:,} bytes ({report['dense_bytes'] / 2**20:.2f} MB) -> "
                 f"{report['total_bytes']:,} bytes ({report['total_bytes'] / 2**20:.3f} MB): "
                 f"{report['compression']:.1f}x; artefact file {report['file_bytes']:,} bytes")
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


def _compress(args) -> int:
    report = compress_run(args.run_dir, args.out, densities=_densities(args), bits=args.bits,
                          index_bits=args.index_bits)
    print(format_report(report))
    print(f"wrote {report['artefact']}, {os.path.join(args.out, 'model.keras')} (decoded) and "
          f"{os.path.join(args.out, 'compression.json')}")
    return 0


def register(sub) -> None:
    parser = sub.add_parser(
        "compress", help="prune, quantise and Huffman-code a trained run (Deep Compression)",
        description="Deep Compression of RUN_DIR/model.keras: magnitude pruning to the given densities, k-means "
                    "weight sharing at --bits, sparse relative indices and Huffman coding. Writes OUT/model.kcnn.zip, "
                    "OUT/compression.json (per-layer report), OUT/model.keras decoded from the artefact, and the "
                    "run's class names and preprocessing, so `kcnn evaluate OUT` and `kcnn export OUT` work.")
    parser.add_argument("run_dir", help="a finished run directory (from kcnn train)")
    parser.add_argument("--out", required=True, help="output directory for the artefact and report")
    parser.add_argument("--table", choices=["squeezenet_table1"],
                        help="a named density table (squeezenet_table1: Iandola et al. 2016, Table 1)")
    parser.add_argument("--density", action="append", metavar="LAYER=D",
                        help="density for a layer name or glob, repeatable, e.g. 'conv_scores=0.2'")
    parser.add_argument("--bits", type=int, default=6, help="bits per shared weight (default 6, as Table 1)")
    parser.add_argument("--index-bits", type=int, default=8,
                        help="bits per relative index (default 8, Deep Compression's width for conv layers)")
    parser.set_defaults(func=_compress)
