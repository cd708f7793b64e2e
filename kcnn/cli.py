"""The ``kcnn`` command line. Subcommands register here; heavy imports happen inside each.

``kcnn`` itself only builds and analyses; the data, training and serving commands
come from ``pipelines.cli`` and ``serving.cli``, loaded by name when they are
installed, so kcnn imports neither (and ``kcnn summary`` works without TensorFlow).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMAND_MODULES = ("kcnn.compress_cli", "pipelines.cli", "serving.cli")

# Quieter TensorFlow C++ logs for the processes the commands start (kcnn demo's training run); TensorFlow
# in this process was imported with the kcnn package, before this line. Set it yourself to override.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _summary(args) -> int:
    import keras

    import kcnn
    from kcnn.analysis import FilterDoesNotFit, analyze, render

    input_shape = None
    if args.model:
        model = keras.saving.load_model(args.model, safe_mode=True)
        if args.input_size:
            channels = model.inputs[0].shape[-1]
            input_shape = (args.input_size, args.input_size, channels)
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
    sys.stdout.write(render(report, args.format))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from kcnn.analysis.format import FORMATS

    parser = argparse.ArgumentParser(prog="kcnn", description="Build, analyse, train, export and serve CNNs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    summary = sub.add_parser(
        "summary", help="per-layer shapes, parameters, MACs and receptive fields of a model",
        description="Analyse a registered architecture (NAME) or a saved .keras model.",
    )
    summary.add_argument("name", nargs="?", help="registered backbone name, e.g. squeezenet1_0")
    summary.add_argument("--model", help="a saved .keras model to analyse instead of NAME")
    summary.add_argument("--head", help="head name (default: the paper's own head)")
    summary.add_argument("--input-size", type=int, help="square input size (default: the paper's)")
    summary.add_argument("--classes", type=int, default=1000, help="number of classes (default 1000)")
    summary.add_argument("--format", choices=FORMATS, default="table")
    summary.add_argument("--strict", action="store_true", help="fail when a filter does not fit its input")
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as error:  # user errors (bad values, missing files, busy ports): no traceback
        print(f"kcnn {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
