"""``kcnn`` subcommands of the data and training package. Importing this module stays cheap."""

from __future__ import annotations

import argparse


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
    from pipelines.preemption import TrainingPreempted
    from pipelines.train import TrainingDiverged, train

    config = configuration.load(args.config, args.set or [])
    # runs/<config name> by default: rerunning the same command finds the same run and resumes it.
    run_dir = args.run_dir or os.path.join("runs", os.path.splitext(os.path.basename(args.config))[0])
    try:
        train(config, run_dir)
    except TrainingDiverged as error:
        print(f"kcnn train: {error}", file=sys.stderr)
        return 1
    except TrainingPreempted as error:  # the platform restarts the job (exit 42 is not counted as a failure)
        print(f"kcnn train: {error}", file=sys.stderr)
        return error.exit_code
    except Exception as error:
        line = _out_of_space_line(error, run_dir)
        if line is None:
            raise
        print(f"kcnn train: error: {line}", file=sys.stderr)
        return 2
    return 0


def _out_of_space_line(error: BaseException, run_dir: str) -> str | None:
    """The one line for a run that filled its disk (a checkpoint, best.keras, the history...), or None.

    Every file of a run is written whole or not at all (checkpoints by TensorFlow's staged SaveV2), so
    what the run saved before is intact and the same command resumes from its newest checkpoint.
    """
    import tensorflow as tf

    from pipelines import fs
    from pipelines.run_dir import RunDir

    reason = fs.out_of_space(error)
    if reason is None:
        return None
    where = fs.out_of_space_path(error, reason) or run_dir
    checkpoints = RunDir(run_dir).checkpoints
    try:  # the epoch the newest checkpoint holds (ckpt-N need not be epoch N: pipelines.checkpoints)
        newest = tf.train.latest_checkpoint(checkpoints)
        if newest:
            epoch = int(tf.train.load_checkpoint(newest).get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE"))
            saved = f"the run's checkpoint after epoch {epoch} is intact"
        else:
            saved = "no epoch had been checkpointed yet"
    except Exception:  # a damaged state file or checkpoint: the resume skips or rebuilds it
        saved = f"the checkpoints in {checkpoints} are kept"
    return (f"{reason} writing {where}; {saved}. Free space there (or pass another --run-dir) and run the same "
            "command again to continue")


def _evaluate(args) -> int:
    from pipelines.evaluate import evaluate, format_evaluation

    import sys
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        result = evaluate(args.run_dir, tta=args.tta, split=args.split, flip=args.flip)
    for warning in caught:
        if "ten-crop TTA" in str(warning.message):  # ours: one line, no source location
            print(f"kcnn evaluate: warning: {warning.message}", file=sys.stderr)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    print(format_evaluation(result))
    return 0


def register(sub) -> None:
    """Add this package's subcommands to the ``kcnn`` parser."""
    from pipelines.choices import AUGMENT_PRESETS, MIXES, SPLITS, TTA_MODES

    preview = sub.add_parser(
        "augment-preview", help="draw a grid of images beside their augmented versions",
        description="Write a PNG grid: each row an image from SOURCE (digits, shapes, scenes, tfds:NAME, "
                    "folder:PATH, tfrecord:GLOB), first as the evaluation pipeline sees it, then augmented by the "
                    "preset.")
    preview.add_argument("source", help="data source, e.g. digits or folder:path/to/images")
    preview.add_argument("--preset", default="inception", choices=AUGMENT_PRESETS,
                         help="augmentation preset to draw (default inception)")
    preview.add_argument("--mix", choices=MIXES, help="also apply MixUp or CutMix (captions show weights)")
    preview.add_argument("--out", default="augment_preview.png", help="output PNG path")
    preview.add_argument("--split", default="train", choices=SPLITS, help="split to draw images from")
    preview.add_argument("--rows", type=int, default=6, help="images (rows) in the grid")
    preview.add_argument("--versions", type=int, default=5, help="augmented draws per image")
    preview.add_argument("--image-size", type=int, default=64, help="side of the square images, in pixels")
    preview.add_argument("--seed", type=int, default=0, help="random seed of the augmentations")
    preview.add_argument("--data-dir", help="TFDS data directory (tfds:NAME sources)")
    preview.set_defaults(func=_augment_preview)

    train = sub.add_parser(
        "train", help="train a model from a YAML config (resumes an interrupted run)",
        description="Train as CONFIG.yaml says (see pipelines/configs/ and docs/config.md). The run directory "
                    "gets the resolved config, checkpoints, TensorBoard logs, history.csv, metrics.json, plots "
                    "and model.keras. Running the same command again after an interruption resumes from the "
                    "last epoch, or from the step at which a SIGTERM (preemption) stopped it, which exits "
                    "with code 42 once that step is saved.")
    train.add_argument("config", help="YAML config, e.g. pipelines/configs/digits.yaml")
    train.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                       help="override a config value, e.g. --set train.epochs=5 (repeatable)")
    train.add_argument("--run-dir", help="run directory (default: runs/<config name>)")
    train.set_defaults(func=_train)

    evaluate = sub.add_parser(
        "evaluate", help="top-1/top-5, per-class scores and plots of a finished run",
        description="Evaluate RUN_DIR's model.keras on a split with the run's own preprocessing; writes "
                    "evaluation.json (evaluation_ten_crop.json with --tta ten_crop) and confusion-matrix plots.")
    evaluate.add_argument("run_dir", help="a finished run directory (from kcnn train)")
    evaluate.add_argument("--tta", default="none", choices=TTA_MODES,
                          help="ten_crop: average over the four corner and centre crops of a 1/0.875 larger view, "
                               "and their mirror images unless --no-flip")
    evaluate.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                          help="include mirrored crops in ten-crop TTA (default: yes, with a warning when the "
                               "run's augmentation never mirrored images, as for digits)")
    evaluate.add_argument("--split", help="split to evaluate (default: the config's test split)")
    evaluate.set_defaults(func=_evaluate)
