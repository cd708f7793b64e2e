"""``kcnn report RUN_DIR``: the run's self-contained HTML page. Importing this module stays cheap."""

from __future__ import annotations


def _report(args) -> int:
    from pipelines.run_report import write_report

    print(f"wrote {write_report(args.run_dir, keep_wrong=args.wrong)}")
    return 0


def register(sub) -> None:
    """Add ``kcnn report`` to the ``kcnn`` parser."""
    parser = sub.add_parser(
        "report", help="write RUN_DIR/report.html: figures, run record, config, curves, confusion matrix, scores, "
                       "analysis, Grad-CAM, filters",
        description="Write one self-contained HTML page (pictures inlined, opens offline) about a finished run: "
                    "the test figures; the run's start and finish dates (UTC), the kcnn, Keras, TensorFlow and "
                    "Python versions it ran on, its starting weights, fine-tuning and pruning; its resolved "
                    "config.yaml; the training curves beside the learning rate per epoch; the confusion matrix, "
                    "per-class precision/recall/F1, the model's analysis table, Grad-CAM overlays on the test "
                    "images it got wrong (the most confident first) and, after them, those it was least sure of, "
                    "and the first-layer filters. kcnn train writes it at the end of every run and prints its path.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished kcnn run directory")
    parser.add_argument("--wrong", type=int, default=8,
                        help="how many test images to show with Grad-CAM: the wrong ones first, then the right ones "
                             "it was least sure of (default 8)")
    parser.set_defaults(func=_report)
