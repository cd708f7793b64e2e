"""Fast stylizer against Gatys' optimisation: content and style losses on the README's pair, same loss network.

The README's commands, side by side on one VGG-19 (random weights: nothing can be downloaded here;
``--weights PATH`` gives a VGG-19 checkpoint): ``kcnn train-style pipelines/configs/style_fast.yaml``
with ``--steps`` steps (the stylizer learns from crops of the two photographs), then ``china`` through
it; and Gatys' L-BFGS on china + flower given the same wall time as the stylizer's training (its
per-step time measured first, over 20 steps after a warm-up). Both outputs, at the same size, are scored by both objectives on the
same network: Johnson et al.'s perceptual loss (the one the stylizer trains on: relu3_3 content,
normalised Gram matrices at relu1_2 to relu4_3) and Gatys et al.'s (conv4_2 content, Gram matrices at
conv1_1 to conv5_1), each with the weights its command uses.

    python benchmarks/bench_style.py --steps 600

The last line printed is ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.result import print_result  # noqa: E402

RECIPE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pipelines", "configs",
                      "style_fast.yaml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600, help="stylizer training steps (default 600)")
    parser.add_argument("--size", type=int, default=192, help="longer side of the stylised china (README: 192)")
    parser.add_argument("--weights", help="a VGG-19 checkpoint for the loss network (default: random, seed 0)")
    parser.add_argument("--out", default=None, help="directory for the two pictures (default: a temporary one)")
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    import kcnn
    from kcnn import style
    from kcnn.style import fast, gatys, images
    from pipelines.style import load_style_config, style_image, train_style
    from serving.stylizer import stylize_batch

    keras.utils.set_random_seed(0)
    backbone = kcnn.backbones.vgg19(input_shape=(None, None, 3))
    if args.weights:
        from kcnn.weights import load_backbone_weights

        load_backbone_weights(backbone, "vgg19", args.weights)
    johnson = style.FeatureExtractor(backbone, fast.CONTENT_LAYERS + fast.STYLE_LAYERS)
    gatys_features = style.FeatureExtractor(backbone, gatys.CONTENT_LAYERS + gatys.STYLE_LAYERS)
    out = args.out or tempfile.mkdtemp(prefix="bench_style_")
    os.makedirs(out, exist_ok=True)

    config = load_style_config(RECIPE, [f"train.steps={args.steps}"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-weights warning: said once in the docstring
        trained = train_style(config, os.path.join(out, "run"), extractor=johnson,
                              progress=lambda done, total, loss: done % 100 == 0 and print(
                                  f"stylizer step {done}/{total}: loss {loss:.4g}", flush=True))
    stylizer = keras.saving.load_model(os.path.join(out, "run", "stylizer.keras"), safe_mode=True)
    photos = images.sample_images()
    content = photos["china"]
    content = images.resize(content, *images.fit_size(content.shape[:2], args.size))
    fast_image = stylize_batch(stylizer, tf.constant(np.round(content).astype(np.uint8)[None])).numpy()[0]
    images.save_png(fast_image, os.path.join(out, "fast.png"))

    # Gatys' steps for the stylizer's training time, from a per-step time measured after a warm-up (the first
    # steps trace the loss; a 3-step probe alone overestimated the step cost 2.5x and gave Gatys 266 s for 689 s).
    style.transfer(photos["china"], photos["flower"], feature_model=backbone, size=args.size, steps=2)
    probe = style.transfer(photos["china"], photos["flower"], feature_model=backbone, size=args.size, steps=20)
    per_step = probe.seconds / len(probe.losses)
    gatys_steps = max(1, round(trained["seconds"] / per_step))
    started = time.perf_counter()
    result = style.transfer(photos["china"], photos["flower"], feature_model=backbone, size=args.size,
                            steps=gatys_steps)
    gatys_seconds = time.perf_counter() - started
    images.save_png(result.image, os.path.join(out, "gatys.png"))

    style_target = style_image(config)  # the flower at loss.style_size, as the stylizer trained on it
    johnson_loss = fast.PerceptualLoss(johnson, style_target, content_count=len(fast.CONTENT_LAYERS),
                                       content_weight=config.loss.content_weight,
                                       style_weight=config.loss.style_weight, tv_weight=0.0)
    flower = images.resize(photos["flower"], *result.image.shape[:2])
    gatys_objective = gatys._Objective(gatys_features, len(gatys.CONTENT_LAYERS), content.astype("float32"),
                                       flower.astype("float32"), 1.0, 1e4, 0.0)
    scores = {}
    for name, picture in (("fast", fast_image), ("gatys", result.image), ("content", content)):
        picture = np.asarray(picture, "float32")
        parts = johnson_loss.parts(content[None].astype("float32"), picture[None])
        _, gatys_parts = gatys_objective.loss(picture)
        scores[name] = {"johnson_content": float(parts["content"]), "johnson_style": float(parts["style"]),
                        "gatys_content": float(gatys_parts["content"]), "gatys_style": float(gatys_parts["style"])}
        print(f"{name:<8} Johnson content {scores[name]['johnson_content']:.4g} style "
              f"{scores[name]['johnson_style']:.4g}; Gatys content {scores[name]['gatys_content']:.4g} style "
              f"{scores[name]['gatys_style']:.4g}")
    ratio = {key: scores["fast"][key] / scores["gatys"][key] for key in ("johnson_style", "gatys_style")}
    print(f"stylizer: {trained['steps']} steps in {trained['seconds']:.0f} s; Gatys: {len(result.losses)} L-BFGS "
          f"steps in {gatys_seconds:.0f} s; style loss fast / Gatys: {ratio['johnson_style']:.2f} (Johnson's), "
          f"{ratio['gatys_style']:.2f} (Gatys'); pictures in {out}")
    print_result({"stylizer_steps": trained["steps"], "stylizer_seconds": trained["seconds"],
                  "gatys_steps": len(result.losses), "gatys_seconds": gatys_seconds, "size": args.size,
                  "weights": args.weights or "random (seed 0)", "scores": scores,
                  "style_ratio_fast_over_gatys": ratio, "out": out})


if __name__ == "__main__":
    main()
