"""kcnn's builders against keras.applications: inference and training-step throughput.

Same architecture, input size, batch and dtype, in one process. Rounds interleave
the two implementations (A, B, B, A, ...) so drift in machine load hits both; each
figure is the median over rounds and the speed ratio is the median of per-round
ratios. A float32 matmul timed in the same run gives the machine's achievable
FLOP/s, and each model's achieved FLOP/s is reported as a fraction of it (training
counts 3x the forward FLOPs: forward, gradient with respect to activations and to
weights).

    python benchmarks/bench_models.py                 # 224x224, batch 8, 5 rounds
    python benchmarks/bench_models.py --models mobilenet_v1 --image-size 160 --rounds 3
    python benchmarks/bench_models.py --models efficientnet_b0 regnety_008 mobilenet_v3_large --rounds 3

Keras 3's keras.applications has no RegNet, so ``regnety_008`` is compared with the
keras.applications that shipped it, Keras 2's (the ``tf-keras`` package), in the same
process: its own optimizer and compile, the same batch and input.

The last line printed is ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kcnn  # noqa: E402
from kcnn.analysis import analyze  # noqa: E402
from result import print_result  # noqa: E402 - the RESULT line with the wall time

# kcnn name -> the matching keras.applications constructor (same paper layout).
REFERENCES = {
    "mobilenet_v1": lambda shape: keras.applications.MobileNet(input_shape=shape, weights=None, classes=1000),
    "mobilenet_v2": lambda shape: keras.applications.MobileNetV2(input_shape=shape, weights=None, classes=1000),
    "resnet50": lambda shape: keras.applications.ResNet50(input_shape=shape, weights=None, classes=1000),
    "efficientnet_b0": lambda shape: keras.applications.EfficientNetB0(input_shape=shape, weights=None),
    "mobilenet_v3_large": lambda shape: keras.applications.MobileNetV3Large(input_shape=shape, weights=None),
    "regnety_008": lambda shape: _tf_keras().applications.RegNetY008(input_shape=shape, weights=None),
}


def _tf_keras():
    import tf_keras

    return tf_keras



def matmul_flops_per_second(size: int = 1024, repeats: int = 10) -> float:
    """Achieved float32 FLOP/s of a square matmul through the active Keras backend."""
    a = keras.ops.convert_to_tensor(np.random.default_rng(0).random((size, size), dtype=np.float32))
    b = keras.ops.convert_to_tensor(np.random.default_rng(1).random((size, size), dtype=np.float32))
    keras.ops.convert_to_numpy(keras.ops.matmul(a, b))  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        keras.ops.convert_to_numpy(keras.ops.matmul(a, b))
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)


def time_steps(step, steps: int) -> float:
    """Seconds per call of ``step`` over ``steps`` calls (after the caller's warm-up)."""
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def compiled(model) -> keras.Model:
    """Compile with SGD and momentum; a Keras 2 (tf-keras) model gets Keras 2's optimizer."""
    optimizers = keras.optimizers if isinstance(model, keras.Model) else _tf_keras().optimizers
    model.compile(optimizer=optimizers.SGD(0.01, momentum=0.9), loss="sparse_categorical_crossentropy")
    return model


def bench_pair(name: str, image_size: int, batch: int, rounds: int, steps: int) -> dict:
    shape = (image_size, image_size, 3)
    models = {"kcnn": compiled(kcnn.build(name, num_classes=1000, input_shape=shape)),
              "keras": compiled(REFERENCES[name](shape))}
    rng = np.random.default_rng(0)
    images = rng.random((batch, *shape), dtype=np.float32)
    labels = rng.integers(0, 1000, size=(batch,))
    for model in models.values():  # warm-up: trace and compile both functions
        model.predict_on_batch(images)
        model.train_on_batch(images, labels)
    per_round = {impl: {"infer": [], "train": []} for impl in models}
    order = list(models)
    for r in range(rounds):
        for impl in order if r % 2 == 0 else order[::-1]:
            model = models[impl]
            per_round[impl]["infer"].append(time_steps(lambda m=model: m.predict_on_batch(images), steps))
            per_round[impl]["train"].append(time_steps(lambda m=model: m.train_on_batch(images, labels), steps))
    result = {"params": {}, "macs": {}}
    ours = analyze(models["kcnn"]).total_macs
    for impl, model in models.items():
        result["params"][impl] = int(model.count_params())
        # The reference's MACs by kcnn's analysis where it reads the graph; a Keras 2 (tf-keras) model, or
        # one it cannot read, has the same layers as kcnn's (counts pinned in the tests).
        try:
            result["macs"][impl] = analyze(model).total_macs if isinstance(model, keras.Model) else ours
        except (AttributeError, ValueError):
            result["macs"][impl] = ours
        for phase, seconds in per_round[impl].items():
            result[f"{impl}_{phase}_images_per_second"] = batch / statistics.median(seconds)
    for phase in ("infer", "train"):
        ratios = [b / a for a, b in zip(per_round["kcnn"][phase], per_round["keras"][phase])]
        result[f"{phase}_speed_ratio_kcnn_over_keras"] = statistics.median(ratios)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(REFERENCES), choices=list(REFERENCES))
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round and phase")
    args = parser.parse_args()

    peak = matmul_flops_per_second()
    results = {}
    for name in args.models:
        figures = bench_pair(name, args.image_size, args.batch, args.rounds, args.steps)
        flops_per_image = 2 * figures["macs"]["kcnn"]
        for impl in ("kcnn", "keras"):
            infer = figures[f"{impl}_infer_images_per_second"] * 2 * figures["macs"][impl]
            train = figures[f"{impl}_train_images_per_second"] * 3 * 2 * figures["macs"][impl]
            figures[f"{impl}_infer_fraction_of_matmul"] = infer / peak
            figures[f"{impl}_train_fraction_of_matmul"] = train / peak
        figures["forward_gflops_per_image"] = flops_per_image / 1e9
        results[name] = figures
        print(f"{name}: inference {figures['kcnn_infer_images_per_second']:.1f} vs "
              f"{figures['keras_infer_images_per_second']:.1f} img/s (ratio "
              f"{figures['infer_speed_ratio_kcnn_over_keras']:.3f}); training "
              f"{figures['kcnn_train_images_per_second']:.1f} vs {figures['keras_train_images_per_second']:.1f} "
              f"img/s (ratio {figures['train_speed_ratio_kcnn_over_keras']:.3f})", flush=True)
    summary = {
        "benchmark": "bench_models",
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "image_size": args.image_size,
        "batch": args.batch,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "matmul_gflops_per_second": peak / 1e9,
        "models": results,
    }
    print_result(summary, sort_keys=True)


if __name__ == "__main__":
    main()
