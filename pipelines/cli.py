"""``kcnn`` subcommands of the data and training package. Importing this module stays cheap."""

from __future__ import annotations


def _augment_preview(args) -> int:
    from pipelines.preview import augment_grid

    path = augment_grid(args.source, args.out, preset=args.preset, mix=args.mix, split=args.split, rows=args.rows,
                        versions=args.versions, image_size=args.image_size, seed=args.seed, data_dir=args.data_dir)
    print(f"wrote {path}")
    return 0


def _train(args) -> int:
    import os
    import sys

    from pipelines import config as configuration
    from pipelines.train import TrainingDiverged, train

    config = configuration.load(args.config, args.set or [])
    # runs/<config name> by default: rerunning the same command finds the same run and resumes it.
    run_dir = args.run_dir or os.path.join("runs", os.path.splitext(os.path.basename(args.config))[0])
    try:
        train(config, run_dir)
    except TrainingDiverged as error:
        print(f"kcnn train: {error}", file=sys.stderr)
        return 1
    return 0


def _evaluate(args) -> int:
    from pipelines.evaluate import evaluate, format_evaluation

    print(format_evaluation(evaluate(args.run_dir, tta=args.tta, split=args.split)))
    return 0


def register(sub) -> None:
    """Add this package's subcommands to the ``kcnn`` parser."""
    from pipelines.augment import MIXES, PRESETS

    preview = sub.add_parser(
        "augment-preview", help="draw a grid of images beside their augmented versions",
        description="Write a PNG grid: each row an image from SOURCE (digits, shapes, tfds:NAME, folder:PATH, "
                    "tfrecord:GLOB), first as the evaluation pipeline sees it, then augmented by the preset.")
    preview.add_argument("source", help="data source, e.g. digits or folder:path/to/images")
    preview.add_argument("--preset", default="inception", choices=list(PRESETS))
    preview.add_argument("--mix", choices=list(MIXES), help="also apply MixUp or CutMix (captions show weights)")
    preview.add_argument("--out", default="augment_preview.png", help="output PNG path")
    preview.add_argument("--split", default="train")
    preview.add_argument("--rows", type=int, default=6)
    preview.add_argument("--versions", type=int, default=5, help="augmented draws per image")
    preview.add_argument("--image-size", type=int, default=64)
    preview.add_argument("--seed", type=int, default=0)
    preview.add_argument("--data-dir", help="TFDS data directory")
    preview.set_defaults(func=_augment_preview)

    train = sub.add_parser(
        "train", help="train a model from a YAML config (resumes an interrupted run)",
        description="Train as CONFIG.yaml says (see pipelines/configs/). The run directory gets the resolved "
                    "config, checkpoints, TensorBoard logs, history.csv, metrics.json, plots and model.keras. "
                    "Running the same command again after an interruption resumes from the last epoch.")
    train.add_argument("config", help="YAML config, e.g. pipelines/configs/digits.yaml")
    train.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                       help="override a config value, e.g. --set train.epochs=5 (repeatable)")
    train.add_argument("--run-dir", help="run directory (default: runs/<config name>)")
    train.set_defaults(func=_train)

    evaluate = sub.add_parser("evaluate", help="top-1/top-5, per-class scores and plots of a finished run")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--tta", default="none", choices=["none", "ten_crop"],
                          help="ten_crop: average over four corner and centre crops and their mirror images")
    evaluate.add_argument("--split", help="split to evaluate (default: the config's test split)")
    evaluate.set_defaults(func=_evaluate)
