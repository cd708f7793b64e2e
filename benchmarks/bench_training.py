"""Training throughput on this machine: float32 vs mixed precision, XLA off vs on, side by side.

Each configuration builds the same model under its precision policy and runs kcnn's
own distributed training step (the one ``kcnn train`` uses) on a fixed batch.
Rounds interleave the configurations (rotating order); images per second are medians
over rounds, and each is also given as a fraction of a float32 matmul's FLOP/s
measured in the same run (training counts 3x the forward FLOPs). On CPUs the mixed
policy is mixed_bfloat16; on GPUs it is mixed_float16 (with loss scaling).

    python benchmarks/bench_training.py                      # resnet18 at 64x64, batch 32
    python benchmarks/bench_training.py --model resnet50 --image-size 224 --batch 64   # on a GPU

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
import tensorflow as tf  # noqa: E402

import kcnn  # noqa: E402
from bench_models import matmul_flops_per_second  # noqa: E402 - one matmul yardstick for both benchmarks
from kcnn.analysis import analyze  # noqa: E402
from pipelines import config as C  # noqa: E402
from pipelines.tasks import get_task  # noqa: E402
from pipelines.train import _make_train_step  # noqa: E402
from result import print_result  # noqa: E402 - the RESULT line with the wall time

# The step `kcnn train` runs for the digits recipe's classification task (its loss options: label smoothing...).
CONFIG = C.load(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pipelines", "configs",
                             "digits.yaml"))
TASK = get_task("classification")


def make_config(name: str, policy: str, jit: bool, args):
    keras.config.set_dtype_policy(policy)
    try:
        model = kcnn.build(args.model, num_classes=10, input_shape=(args.image_size, args.image_size, 3))
    finally:
        keras.config.set_dtype_policy("float32")
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    if policy == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
    step = _make_train_step(TASK, model, optimizer, tf.distribute.get_strategy(), args.batch, jit, CONFIG)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.random((args.batch, args.image_size, args.image_size, 3), dtype=np.float32))
    labels = tf.constant(rng.integers(0, 10, args.batch), tf.int32)
    for _ in range(2):  # trace, compile
        [t.numpy() for t in step(images, labels)]
    macs = analyze(model).total_macs
    return lambda: [t.numpy() for t in step(images, labels)], macs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    mixed = "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
    configs = {}
    for policy in ("float32", mixed):
        for jit in (False, True):
            configs[f"{policy}{'_xla' if jit else ''}"] = make_config(policy, policy, jit, args)
    peak = matmul_flops_per_second()
    rates = {name: [] for name in configs}
    names = list(configs)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            step, _ = configs[name]
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            rates[name].append(args.steps * args.batch / (time.perf_counter() - start))
    results = {}
    for name, (_, macs) in configs.items():
        rate = statistics.median(rates[name])
        results[name] = {"images_per_second": rate, "fraction_of_matmul": rate * 3 * 2 * macs / peak}
    base = results["float32"]["images_per_second"]
    for name in results:
        results[name]["speed_over_float32"] = results[name]["images_per_second"] / base
        print(f"{name:22s} {results[name]['images_per_second']:8.1f} images/s  "
              f"x{results[name]['speed_over_float32']:.2f}  {results[name]['fraction_of_matmul']:.2f} of matmul",
              flush=True)
    summary = {"benchmark": "bench_training", "model": args.model, "image_size": args.image_size,
               "batch": args.batch, "rounds": args.rounds, "steps_per_round": args.steps,
               "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
               "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "tensorflow": tf.__version__,
               "matmul_gflops_per_second": peak / 1e9, "results": results}
    print_result(summary, sort_keys=True)


if __name__ == "__main__":
    main()
