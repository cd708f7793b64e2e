"""The ``kcnn`` command line. Subcommands register here; heavy imports happen inside each.

``kcnn`` itself only builds and analyses; the data, training and serving commands
come from ``pipelines.cli`` and ``serving.cli``, loaded by name when they are
installed, so kcnn imports neither (and ``kcnn summary`` works without TensorFlow).
Building the parser imports neither Keras nor TensorFlow: ``kcnn --help``,
``kcnn --version`` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

COMMAND_MODULES = ("pipelines.cli", "pipelines.style_cli", "serving.cli", "kcnn.insight_cli", "pipelines.report_cli",
                   "kcnn.compress_cli")

# TensorFlow's C++ start-up logs (CUDA probing, oneDNN notices) are noise on a command line: silence them in
# this process (TensorFlow is imported later, by the commands that need it) and in the processes the commands
# start (kcnn demo's training run). Set the variables yourself to see the logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

# kcnn.analysis.format.FORMATS, written out so that building the parser imports no Keras (a test keeps them equal)
SUMMARY_FORMATS = ("table", "markdown", "csv", "json")


def _summary(args) -> int:
    import kcnn
    from kcnn.analysis import FilterDoesNotFit, analyze, render
    from kcnn.analysis.format import parse_columns

    parse_columns(args.columns)  # a misspelt column fails before the model is built
    input_shape = None
    if args.model:
        from kcnn.files import load_keras_model  # registers kcnn's custom layers before loading

        model = load_keras_model(args.model)
        if args.input_size:  # every spatial axis (length; height, width; depth, height, width) at that size
            spatial_axes = len(model.inputs[0].shape) - 2
            input_shape = (args.input_size,) * spatial_axes + (model.inputs[0].shape[-1],)
    else:
        if not args.name:
            raise SystemExit("kcnn summary: give a registered NAME or --model PATH.keras")
        shape = None
        if args.input_size:
            channels = kcnn.backbones.BACKBONES.entry(args.name).metadata["input_shape"][2]
            shape = (args.input_size, args.input_size, channels)
        model = kcnn.build(args.name, num_classes=args.classes, head=args.head, input_shape=shape)
    try:
        report = analyze(model, input_shape=input_shape, strict=args.strict)
    except FilterDoesNotFit as error:
        raise SystemExit(f"kcnn summary: {error}") from None
    sys.stdout.write(render(report, args.format, columns=args.columns))
    return 0


def _models(args) -> int:
    import kcnn

    names = kcnn.backbones.BACKBONES.list(args.pattern)
    if not names:
        raise ValueError(f"no architecture matches {args.pattern!r}; run `kcnn models` to list them all")
    rows = []
    for name in names:
        meta = kcnn.backbones.BACKBONES.entry(name).metadata
        params = "" if args.no_params else f"{kcnn.build(name, num_classes=args.classes).count_params():,}"
        rows.append((name, "x".join(map(str, meta["input_shape"])), meta["head"], params, meta["paper"]))
    header = ("name", "input", "head", f"params ({args.classes} classes)" if not args.no_params else "", "paper")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        print("  ".join(f"{cell:>{w}}" if i == 3 else f"{cell:<{w}}" for i, (cell, w) in enumerate(zip(row, widths)))
              + "  " + row[4])
    return 0


def build_parser() -> argparse.ArgumentParser:
    from kcnn import __version__

    parser = argparse.ArgumentParser(prog="kcnn", description="Build, analyse, train, export and serve CNNs. "
                                     "`kcnn COMMAND --help` describes each command.")
    parser.add_argument("--version", action="version", version=f"kcnn {__version__}",
                        help="print kcnn's version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    models = sub.add_parser(
        "models", help="list the registered architectures with input size, head, parameters and paper",
        description="List registered backbones whose name matches PATTERN (fnmatch, e.g. 'resnet*'), each built "
                    "at its paper's input size with its default head to count the parameters.")
    models.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern of names (default: all)")
    models.add_argument("--classes", type=int, default=1000, help="classes of the head counted (default 1000)")
    models.add_argument("--no-params", action="store_true", help="skip building the models to count parameters")
    models.set_defaults(func=_models)
    summary = sub.add_parser(
        "summary", help="per-layer shapes, parameters, MACs, the notes' counts and receptive fields of a model",
        description="Analyse a registered architecture (NAME) or a saved .keras model.",
    )
    summary.add_argument("name", nargs="?", help="registered backbone name, e.g. squeezenet1_0")
    summary.add_argument("--model", help="a saved .keras model to analyse instead of NAME")
    summary.add_argument("--head", help="head name (default: the paper's own head)")
    summary.add_argument("--input-size", type=int,
                         help="input size on every spatial axis, e.g. 224 for 224x224 (default: the paper's)")
    summary.add_argument("--classes", type=int, default=1000, help="number of classes (default 1000)")
    summary.add_argument("--format", choices=SUMMARY_FORMATS, default="table",
                         help="table (100 columns), markdown, csv or json (a stable contract)")
    summary.add_argument("--strict", action="store_true", help="fail when a filter does not fit its input")
    summary.add_argument(
        "--columns", metavar="KEYS",
        help="comma-separated columns of the table and Markdown output, from: name, type, kernel, strides, "
             "padding, dilation, output, params, macs, rf, jump, activations, neurons, connections, "
             "weights_per_unit, multiplications, additions, accumulations_notes, bias_additions, pooling_ops "
             "(default: name,type,output,params,macs,rf,jump)")
    summary.set_defaults(func=_summary)
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name and module_name.startswith(error.name):
                continue  # that package is not installed here
            raise
        module.register(sub)
    return parser


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow (when Keras will use it) with file descriptor 2 pointed at /dev/null.

    TensorFlow 2.21 logs its CUDA probing through absl before absl's logging is
    initialised, which ignores TF_CPP_MIN_LOG_LEVEL; silencing the descriptor for the
    import is the one way to keep those lines off a command's output. Python errors of
    a failed import are raised after the descriptor is restored, so they still show.
    """
    if "tensorflow" in sys.modules or os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        return
    if importlib.util.find_spec("tensorflow") is None:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        importlib.import_module("tensorflow")
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _import_tensorflow_quietly()
    try:
        return args.func(args)
    except (ValueError, OSError) as error:  # user errors (bad values, missing files, busy ports): no traceback
        print(f"kcnn {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
