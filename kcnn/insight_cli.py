"""``kcnn visualize``: the pictures of kcnn.insight for a run directory or a saved model, as PNG files.

Importing this module is cheap (argparse only); the work is imported inside the handler.
"""

from __future__ import annotations

METHODS = ("filters", "activations", "maximize", "deconvnet", "guided", "saliency", "smoothgrad", "gradcam",
           "gradcam++", "occlusion")
NEEDS_IMAGES = ("activations", "deconvnet", "guided", "saliency", "smoothgrad", "gradcam", "gradcam++", "occlusion")


def _visualize(args) -> int:
    from kcnn.insight import render

    written = render.visualize(args.target, args.method, args.out, layer=args.layer, images=args.images or [],
                               units=args.units, steps=args.steps, mean=args.mean, std=args.std,
                               log=lambda line: print(line, flush=True))
    for path in written:
        print(f"wrote {path}")
    return 0


def register(sub) -> None:
    """Add ``kcnn visualize`` to the ``kcnn`` parser."""
    parser = sub.add_parser(
        "visualize", help="pictures of what a model learned and where it looks (filters, Grad-CAM, ...)",
        description="Write PNGs for a run directory (its model.keras, preprocessing.json and class names) or a "
                    "saved MODEL.keras. filters and maximize need no images; the other methods explain each "
                    "image given with --images.")
    parser.add_argument("target", metavar="RUN_DIR|MODEL.keras", help="a finished kcnn run or a .keras file")
    parser.add_argument("--method", required=True, choices=METHODS,
                        help="filters: a convolution's kernels; activations: the strongest feature maps; maximize: "
                             "inputs that excite units most; deconvnet/guided: one unit projected back to pixels; "
                             "saliency, smoothgrad, gradcam, gradcam++, occlusion: heatmaps of the predicted class")
    parser.add_argument("--layer", help="layer name (default: first convolution for filters, last convolution "
                                        "for gradcam, deconvnet and activations, the class scores for maximize)")
    parser.add_argument("--images", nargs="+", metavar="FILE", help="image files (PNG, JPEG, ...) to explain, or "
                                                                   "directories of them; deconvnet and guided "
                                                                   "take each unit's top 9 over all of them")
    parser.add_argument("--units", type=int, nargs="+", metavar="N",
                        help="units (channels or classes) for maximize (default: the first 8) and deconvnet/guided "
                             "(default: the 4 most active over the images)")
    parser.add_argument("--steps", type=int, default=150, help="gradient-ascent steps for maximize (default 150)")
    parser.add_argument("--mean", type=float, nargs="+",
                        help="per-channel mean on pixels in [0, 1] (default: preprocessing.json in the run "
                             "directory or beside MODEL.keras, else 0)")
    parser.add_argument("--std", type=float, nargs="+", help="per-channel std, as --mean (else 1)")
    parser.add_argument("--out", required=True, metavar="DIR", help="directory for the PNG files")
    parser.set_defaults(func=_visualize)
