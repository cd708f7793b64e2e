"""Are class maximisation's pictures one network's quirk or what the architecture learns? A second opinion.

``kcnn visualize RUN --method maximize`` draws, per class, the input that most raises its score
(Yosinski et al.'s regularisers, ``kcnn.insight.render.MAXIMIZE_OPTIONS``). Each picture is then
classified by other runs of the same recipe (another seed: independently trained networks). A picture
that only exploits the first network's particular weights (an adversarial pattern) gets chance-level
probabilities from them; one made of what the recipe's networks all key on gets its class.

    kcnn train pipelines/configs/shapes.yaml --run-dir runs/shapes
    kcnn train pipelines/configs/shapes.yaml --run-dir runs/shapes-seed1 --set train.seed=1
    python benchmarks/bench_maximize.py runs/shapes runs/shapes-seed1     # about a minute on 2 CPU cores

The last line printed is ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.result import print_result  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="the run whose classes are maximised")
    parser.add_argument("judges", nargs="+", help="other runs (same classes, same preprocessing) that classify them")
    parser.add_argument("--steps", type=int, default=150, help="ascent steps (kcnn visualize's default)")
    args = parser.parse_args()

    from kcnn.insight import graph, render

    target = render.load_target(args.run_dir)
    judges = {path: render.load_target(path) for path in args.judges}
    for path, judge in judges.items():
        if judge.class_names != target.class_names or judge.image_size != target.image_size:
            raise SystemExit(f"{path}: its classes or image size differ from {args.run_dir}'s")
    classes = len(target.class_names)
    images, scores = [], []
    for unit in range(classes):
        image, history = render.maximized(target, None, unit, args.steps)
        images.append(image)
        scores.append(float(history[-1]))
    images = np.stack(images)
    own = graph.predict(target.model, images)
    result = {"classes": list(target.class_names), "own_probability": [float(own[c, c]) for c in range(classes)],
              "judges": {}}
    print(f"{args.run_dir}: its own probability for each maximised class: "
          + ", ".join(f"{n} {own[c, c]:.3f}" for c, n in enumerate(target.class_names)))
    for path, judge in judges.items():
        probabilities = graph.predict(judge.model, images)
        diagonal = [float(probabilities[c, c]) for c in range(classes)]
        right = int(sum(probabilities[c].argmax() == c for c in range(classes)))
        result["judges"][path] = {"probability": diagonal, "classified_right": right}
        print(f"{path}: " + ", ".join(f"{n} {p:.3f}" for n, p in zip(target.class_names, diagonal))
              + f" ({right} of {classes} classified as the class maximised; chance {1 / classes:.3f})")
    print_result({"benchmark": "bench_maximize", "steps": args.steps, "scores": scores, **result})


if __name__ == "__main__":
    main()
