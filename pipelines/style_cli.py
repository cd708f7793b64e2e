"""``kcnn stylize`` and ``kcnn train-style``: neural style transfer from the command line.

Importing this module stays cheap; the work (and TensorFlow/Keras) is imported inside each command.
"""

from __future__ import annotations

SAMPLES = ("china", "flower")


def _image(value: str):
    """A file path, or the name of one of scikit-learn's bundled photographs."""
    if value in SAMPLES:
        from kcnn.style import sample_images

        return sample_images()[value]
    return value


def step_reporter(command: str, every_seconds: float = 5.0):
    """A progress function printing one line per ``every_seconds`` (and the last step): step, losses, time."""
    import time

    started = time.perf_counter()
    last = [started]

    def report(done: int, total: int, record) -> None:
        now = time.perf_counter()
        if now - last[0] < every_seconds and done < total:
            return
        last[0] = now
        parts = record if isinstance(record, dict) else {"loss": record}
        losses = ", ".join(f"{key} {value:.4g}" for key, value in parts.items())
        print(f"{command}: step {done}/{total}: {losses} ({now - started:.0f} s)", flush=True)

    return report


def _stylize(args) -> int:
    import os
    import warnings

    import numpy as np

    from kcnn.style import load_rgb, save_png

    if args.method == "gatys":
        from kcnn.style import transfer

        if not args.style:
            raise ValueError("--method gatys needs a STYLE image (a file, or china / flower)")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = transfer(_image(args.content), _image(args.style), weights=args.weights, steps=args.steps,
                              size=args.size, optimizer=args.optimizer, scales=args.scales,
                              preserve_color=args.preserve_color, content_weight=args.content_weight,
                              style_weight=args.style_weight, tv_weight=args.tv_weight, seed=args.seed,
                              progress=step_reporter("stylize"))
        for warning in caught:
            print(f"kcnn stylize: warning: {warning.message}")
        save_png(result.image, args.out)
        if args.losses_plot:
            result.plot_losses(args.losses_plot)
        print(f"wrote {args.out} ({result.image.shape[1]}x{result.image.shape[0]}): total loss "
              f"{result.losses[0]['total']:.4g} -> {result.losses[-1]['total']:.4g} "
              f"({result.reduction:.1f}x lower) in {len(result.losses)} steps, {result.seconds:.1f} s")
        return 0
    from kcnn.files import load_keras_model  # registers kcnn's custom layers before loading
    from kcnn.style import images
    from pipelines.style import STYLIZER_FILE

    if not args.model:
        raise ValueError("--method fast needs --model RUN_DIR (a `kcnn train-style` run) or a stylizer .keras file")
    path = os.path.join(args.model, STYLIZER_FILE) if os.path.isdir(args.model) else args.model
    if not os.path.exists(path):
        raise FileNotFoundError(f"no stylizer at {path}; train one with `kcnn train-style "
                                "pipelines/configs/style_fast.yaml --run-dir RUN_DIR`")
    stylizer = load_keras_model(path)
    content = load_rgb(_image(args.content), "content")
    content = images.resize(content, *images.fit_size(content.shape[:2], args.size))
    import tensorflow as tf

    from serving.stylizer import stylize_batch

    output = stylize_batch(stylizer, tf.constant(np.round(content).astype(np.uint8)[None])).numpy()[0]
    save_png(output, args.out)
    print(f"wrote {args.out} ({output.shape[1]}x{output.shape[0]}) with the stylizer in {path}")
    return 0


def _train_style(args) -> int:
    import os

    from pipelines.style import load_style_config, train_style

    config = load_style_config(args.config, args.set or [])
    run_dir = args.run_dir or os.path.join("runs", os.path.splitext(os.path.basename(args.config))[0])
    result = train_style(config, run_dir, progress=step_reporter("train-style"))
    print(f"trained {result['steps']} steps: loss {result['first_loss']:.4g} -> {result['last_loss']:.4g}; "
          f"stylizer in {run_dir}; export it with `kcnn export {run_dir} --base-path models/style`")
    return 0


def register(sub) -> None:
    """Add the style-transfer subcommands to the ``kcnn`` parser."""
    stylize = sub.add_parser(
        "stylize", help="render an image in the style of another (Gatys optimisation or a fast stylizer)",
        description="Neural style transfer. --method gatys optimises the pixels against VGG-19 features "
                    "(Gatys et al., 2016); --method fast runs a stylizer trained with `kcnn train-style` "
                    "(Johnson et al., 2016). Images are files or the bundled photographs china and flower.")
    stylize.add_argument("content", help="content image: a file, or china / flower")
    stylize.add_argument("style", nargs="?", help="style image for --method gatys: a file, or china / flower")
    stylize.add_argument("--out", required=True, help="output PNG path")
    stylize.add_argument("--method", choices=["gatys", "fast"], default="gatys", help="default: gatys")
    stylize.add_argument("--model", help="for --method fast: a train-style run directory or a stylizer .keras")
    stylize.add_argument("--size", type=int, default=256, help="longer side of the output in pixels (default 256)")
    stylize.add_argument("--steps", type=int, default=100, help="optimiser iterations per scale (default 100)")
    stylize.add_argument("--optimizer", choices=["lbfgs", "adam"], default="lbfgs", help="default: lbfgs")
    stylize.add_argument("--scales", type=int, default=1, help="coarse-to-fine scales, halving (default 1)")
    stylize.add_argument("--weights", help="VGG-19 weights: imagenet or a checkpoint path (default: random, "
                                           "texture-like results)")
    stylize.add_argument("--preserve-color", action="store_true", help="transfer luminance only, keep the "
                                                                       "content's colours")
    stylize.add_argument("--content-weight", type=float, default=1.0, help="alpha (default 1)")
    stylize.add_argument("--style-weight", type=float, default=1e4, help="beta (default 1e4)")
    stylize.add_argument("--tv-weight", type=float, default=1e-2, help="total variation weight (default 1e-2)")
    stylize.add_argument("--seed", type=int, default=0, help="seed for a noise start (default 0)")
    stylize.add_argument("--losses-plot", help="also write the per-step losses as a PNG here")
    stylize.set_defaults(func=_stylize)

    train = sub.add_parser(
        "train-style", help="train a fast feed-forward stylizer for one style image",
        description="Train Johnson et al.'s stylizer with the perceptual loss from a recipe such as "
                    "pipelines/configs/style_fast.yaml.")
    train.add_argument("config", help="style recipe (YAML)")
    train.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a key, repeatable")
    train.add_argument("--run-dir", help="output directory (default runs/<config name>)")
    train.set_defaults(func=_train_style)
