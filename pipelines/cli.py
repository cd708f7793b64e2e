"""``kcnn`` subcommands of the data and training package. Importing this module stays cheap."""

from __future__ import annotations


def _augment_preview(args) -> int:
    from pipelines.preview import augment_grid

    path = augment_grid(args.source, args.out, preset=args.preset, mix=args.mix, split=args.split, rows=args.rows,
                        versions=args.versions, image_size=args.image_size, seed=args.seed, data_dir=args.data_dir)
    print(f"wrote {path}")
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
