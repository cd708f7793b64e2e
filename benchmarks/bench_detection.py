"""Detection: kcnn's FCOS against KerasHub's RetinaNetObjectDetector, trained side by side on the same batches.

Both detectors get a ResNet-18 (basic blocks 2-2-2-2, random initialisation) with a feature
pyramid over its stride-4, 8 and 16 maps (levels 2-4), the shipped recipe's data (``scenes``
at 64x64, flips and scale-and-crop moving the boxes: ``pipelines/configs/detection.yaml``), the
same AdamW with linear warm-up and cosine decay, and the very same batches: each batch is drawn
once and given to both. Training steps alternate between them in rounds (the first to go
alternates too); images per second are medians over the rounds. Afterwards both detect on the
test split with the same non-maximum suppression settings (score 0.05, IoU 0.6, 100 per image)
and pycocotools scores them (``pipelines.coco``).

kcnn trains with its own step (``pipelines.train``, the one ``kcnn train`` runs) and the FCOS
loss; KerasHub with its ``train_on_batch`` and RetinaNet's own losses (focal classification,
Huber boxes, anchors matched by IoU). KerasHub's heads are fixed at 256 channels, kcnn's are the
recipe's 64; both use ``convs`` conv-GroupNorm-ReLU layers per tower. RetinaNet's anchors are
scaled to the image (``--anchor-size``, 2 by default: 8 to 13 pixels at stride 4, as the
objects of 64-pixel scenes need; KerasHub's default 4 is for COCO-sized images).

KerasHub is not a kcnn dependency. Install it beside kcnn without its text extras:

    pip install --no-deps keras-hub kagglehub kagglesdk==0.1.28 regex rich markdown-it-py mdurl \
        pygments tokenizers sentencepiece
    python benchmarks/bench_detection.py                  # 1500 steps each, batch 16
    python benchmarks/bench_detection.py --steps 100      # a quick look

The last line printed is ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from result import print_result  # noqa: E402 - the RESULT line with the wall time

RECIPE = os.path.join(os.path.dirname(__file__), "..", "pipelines", "configs", "detection.yaml")
NMS = {"score_threshold": 0.05, "iou_threshold": 0.6, "max_detections": 100}


def schedule(args):
    return keras.optimizers.schedules.CosineDecay(0.0, args.steps, warmup_target=args.learning_rate,
                                                  warmup_steps=max(1, args.steps // 30))


def optimizer(args):
    return keras.optimizers.AdamW(schedule(args), weight_decay=1e-4)


def kcnn_detector(config, task, spec, args):
    """kcnn's recipe model and its training step."""
    from pipelines.train import _make_train_step

    keras.utils.set_random_seed(0)
    model = task.build_model(config.model, 3, (args.image_size, args.image_size, 3))
    opt = optimizer(args)
    opt.build(model.trainable_variables)
    step = _make_train_step(task, model, opt, tf.distribute.get_strategy(), args.batch, False, config)
    return model, lambda images, targets: float(step(images, targets)[0])


def kerashub_detector(args):
    """KerasHub's RetinaNet on a ResNet-18 of its own, the same pyramid levels and NMS."""
    import keras_hub
    from keras_hub.layers import AnchorGenerator
    from keras_hub.src.layers.modeling.non_max_supression import NonMaxSuppression

    keras.utils.set_random_seed(0)
    shape = (args.image_size, args.image_size, 3)
    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 128, 256, 512],
        stackwise_num_blocks=[2, 2, 2, 2], stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block",
        image_shape=shape)
    backbone = keras_hub.models.RetinaNetBackbone(image_encoder=encoder, min_level=2, max_level=4, use_p5=False,
                                                  image_shape=shape)
    anchors = AnchorGenerator("yxyx", min_level=2, max_level=4, num_scales=3, aspect_ratios=[0.5, 1.0, 2.0],
                              anchor_size=args.anchor_size)
    decoder = NonMaxSuppression("yxyx", from_logits=True, iou_threshold=NMS["iou_threshold"],
                                confidence_threshold=NMS["score_threshold"], max_detections=NMS["max_detections"])
    model = keras_hub.models.RetinaNetObjectDetector(
        backbone=backbone, num_classes=3, bounding_box_format="yxyx", anchor_generator=anchors,
        use_prediction_head_norm=True, pre_logits_num_conv_layers=args.convs, prediction_decoder=decoder)
    model.compile(optimizer=optimizer(args))

    def step(images, targets):
        labels = tf.cast(targets["classes"], tf.float32)
        # keras.Model's own train_on_batch: KerasHub 0.32's PipelineModel override cannot take dict targets
        result = keras.Model.train_on_batch(model, images, {"boxes": targets["boxes"], "labels": labels})
        return float(result[0] if isinstance(result, (list, tuple)) else result)

    return model, step


def gathered(split_data, detect_batch):
    """Ground truth and padded detections over a split, for pipelines.coco."""
    parts = {key: [] for key in ("true_boxes", "true_classes", "boxes", "scores", "classes", "counts")}
    for images, targets in split_data:
        found = detect_batch(images)
        parts["true_boxes"].append(targets["boxes"].numpy())
        parts["true_classes"].append(targets["classes"].numpy())
        for key in ("boxes", "scores", "classes", "counts"):
            parts[key].append(np.asarray(found[key]))
    return {key: np.concatenate(value) for key, value in parts.items()}


def score(found):
    from pipelines.coco import coco_map

    return coco_map(found["true_boxes"], found["true_classes"], ["circle", "square", "triangle"], found["boxes"],
                    found["scores"], found["classes"], found["counts"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1500, help="training steps of each detector")
    parser.add_argument("--round", type=int, default=50, help="steps per detector per round")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--convs", type=int, default=2, help="conv-GroupNorm-ReLU layers per head tower")
    parser.add_argument("--anchor-size", type=float, default=2.0, help="RetinaNet anchor size in strides")
    args = parser.parse_args()

    from pipelines import config as C
    from pipelines.data import DataSpec, make_dataset
    from pipelines.tasks import get_task
    from pipelines.tasks.detection import detect

    config = C.load(RECIPE)
    task = get_task("detection")
    spec = task.data_spec(DataSpec.from_config(config.data), config.model)
    train_data, _ = make_dataset(spec, spec.train_split, repeat=True)
    test_data, _ = make_dataset(spec.evaluation(cache=False), spec.test_split)

    fcos_model, fcos_step = kcnn_detector(config, task, spec, args)
    retina_model, retina_step = kerashub_detector(args)
    steps = {"kcnn_fcos": fcos_step, "kerashub_retinanet": retina_step}
    batches = iter(train_data)
    warm = next(batches)
    warnings.filterwarnings("ignore", message="Gradients do not exist")  # RetinaNet leaves ResNet's stride-32 stage
    for step in steps.values():  # trace and compile outside the timings
        step(*warm)
    rates = {name: [] for name in steps}
    losses = {name: float("nan") for name in steps}
    done = 0
    while done < args.steps:
        count = min(args.round, args.steps - done)
        chunk = [next(batches) for _ in range(count)]
        order = list(steps) if (done // args.round) % 2 == 0 else list(reversed(steps))
        for name in order:
            start = time.perf_counter()
            for images, targets in chunk:
                losses[name] = steps[name](images, targets)
            rates[name].append(count * args.batch / (time.perf_counter() - start))
        done += count
        print(f"step {done}: " + ", ".join(f"{n} loss {losses[n]:.3f} {rates[n][-1]:.0f} img/s" for n in steps),
              flush=True)

    options = task.bind(fcos_model, {**task.resolve_options(config.model.task_options), **NMS})

    def fcos_detect(images):
        found = detect(fcos_model(images, training=False), 3, args.image_size, options)
        return {**{k: v.numpy() for k, v in found.items()}, "boxes": found["boxes"].numpy() * args.image_size}

    def retina_detect(images):
        found = retina_model.decode_predictions(retina_model(images, training=False), images)  # its predict_step
        return {key: np.asarray(found[name]) for key, name in (("boxes", "boxes"), ("scores", "confidence"),
                                                               ("classes", "labels"), ("counts", "num_detections"))}

    results = {}
    for name, detect_batch in (("kcnn_fcos", fcos_detect), ("kerashub_retinanet", retina_detect)):
        figures = score(gathered(test_data, detect_batch))
        results[name] = {"map": round(figures["map"], 4), "ap50": round(figures["ap50"], 4),
                         "ap75": round(figures["ap75"], 4), "images_per_second": round(statistics.median(rates[name]), 1),
                         "parameters": int(sum(np.prod(v.shape) for v in (fcos_model if name == "kcnn_fcos" else
                                                                           retina_model).weights))}
        print(f"{name}: test mAP {figures['map']:.4f}, AP50 {figures['ap50']:.4f}, AP75 {figures['ap75']:.4f}; "
              f"{results[name]['images_per_second']} training images/s (median of {len(rates[name])} rounds)")
    kcnn_, peer = results["kcnn_fcos"], results["kerashub_retinanet"]
    print_result({"steps": args.steps, "batch": args.batch, "image_size": args.image_size, **results,
                  "map_difference": round(kcnn_["map"] - peer["map"], 4),
                  "throughput_ratio": round(kcnn_["images_per_second"] / peer["images_per_second"], 3)})


if __name__ == "__main__":
    main()
