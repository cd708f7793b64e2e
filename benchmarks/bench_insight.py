"""How often each heatmap method points at the object: the pointing game on a trained `shapes` run.

For every correctly classified image of the shapes test split (120 images, masks from the generator,
both resized to the run's image size),
a method hits when its heatmap's maximum lies on the shape (Zhang et al. 2016, "Top-down neural
attention by excitation backprop"; also counted as they count it, within 15 pixels of
the object, the 15 scaled from their 224-pixel images to the run's size); a random point hits as often as the shapes' mean area. The run
directory supplies the model, its preprocessing and its image size, as ``kcnn visualize`` uses them.

    kcnn train pipelines/configs/shapes.yaml --run-dir runs/shapes
    python benchmarks/bench_insight.py runs/shapes

The last line printed is ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.result import print_result  # noqa: E402

METHODS = ("gradcam", "gradcam++", "saliency", "smoothgrad")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a finished `kcnn train pipelines/configs/shapes.yaml` run")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--layer", help="Grad-CAM's layer (default: the last convolution, as kcnn visualize)")
    args = parser.parse_args()

    from kcnn.insight import evaluation, graph, render
    from pipelines.shapes import load_split

    from PIL import Image

    target = render.load_target(args.run_dir)
    pixels, labels, masks = load_split("test")  # as the `shapes` source serves it (64 px), resized as kcnn
    size = (target.image_size, target.image_size)  # visualize resizes a file: bilinear; masks nearest
    inputs = np.stack([target.preprocess(np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR)))
                       for image in pixels])
    masks = np.stack([np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST)) for mask in masks])
    correct = np.where(graph.predict(target.model, inputs).argmax(-1) == labels)[0]
    # Zhang et al.'s 15-pixel tolerance was set for PASCAL and COCO images (224 pixels and up): scaled to ours.
    tolerance = 15 * target.image_size / 224
    rates, near = {}, {}
    for method in args.methods:
        options = {"layer": args.layer} if args.layer and method.startswith("gradcam") else {}
        heatmaps = render.HEATMAPS[method](target.model, inputs[correct], **options)
        rates[method] = float(np.mean([evaluation.pointing_hit(h, masks[i]) for h, i in zip(heatmaps, correct)]))
        near[method] = float(np.mean([evaluation.pointing_hit(h, masks[i], tolerance)
                                      for h, i in zip(heatmaps, correct)]))
        print(f"{method:<11} peak on the shape for {rates[method]:.3f} of {len(correct)} correctly classified, "
              f"within {tolerance:.1f} px {near[method]:.3f}")
    random_point = float(np.mean(masks[correct] > 0))
    grid = np.indices(size).reshape(2, -1).T
    random_near = float(np.mean([np.mean([evaluation.pointing_hit(np.eye(1, grid.shape[0], k).reshape(size),
                                                                  masks[i], tolerance) for k in range(0, len(grid), 7)])
                                 for i in correct[:24]]))
    print(f"{'random':<11} {random_point:.3f} (the shapes' mean area), within {tolerance:.1f} px {random_near:.3f}")
    print_result({"run_dir": args.run_dir, "model": target.model.name, "correct": int(len(correct)),
                  "test_images": int(len(labels)), "layer": args.layer, "pointing": rates, "tolerance_px": tolerance, "pointing_within_tolerance": near,
                  "random_point": random_point, "random_point_within_tolerance": random_near})


if __name__ == "__main__":
    main()
