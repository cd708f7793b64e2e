"""The exported signature against the same Keras model in a tf.function, batch norm folded and not.

The digits recipe's architecture (ResNet-18, fully convolutional head, 32x32 grey input; latency does not
depend on the weights, so it is built untrained, its batch-norm statistics set to random values so that
folding has something to fold). It is exported three times: as ``kcnn export`` does by default (batch
norm folded into the convolutions, the weights frozen into graph constants), with ``--no-freeze``, and
with ``--no-fold-bn --no-freeze``; every SavedModel is loaded in this process, and each call, batch 1 and
batch 16 of uint8 images, is timed against the Keras model in a ``tf.function`` on the same images
(normalised inside, as the signature does). Calls are interleaved in rounds, rotating the
order; the figures are medians. Also checked: every export's probabilities equal the Keras model's
to 1e-4.

    python benchmarks/bench_export.py            # about a minute on 2 CPU cores

The last line printed is ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.result import print_result  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=10, help="calls per variant per round")
    args = parser.parse_args()

    import keras

    import kcnn
    from pipelines.preprocess import Preprocessing
    from serving.export import export

    keras.utils.set_random_seed(0)
    model = kcnn.build("resnet18", num_classes=10, head="fully_conv", input_shape=(32, 32, 1))
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape))
    spec = Preprocessing(image_size=32, channels=1, mean=(0.5,), std=(0.5,))
    root = tempfile.mkdtemp(prefix="bench_export_")
    classes = [str(i) for i in range(10)]
    signatures = {}
    variants = {"default": {}, "no_freeze": {"freeze": False}, "no_fold_no_freeze": {"freeze": False, "fold_bn": False}}
    for name, options in variants.items():
        result = export(model, os.path.join(root, name), class_names=classes, preprocessing=spec, warmup=False,
                        **options)
        signatures[name] = tf.saved_model.load(result.path).signatures["serving_default"]
        print(f"export {name}: matches the Keras model to {result.max_abs_difference:.2g}")

    @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 1], tf.uint8)])
    def keras_call(images):
        return model((tf.cast(images, tf.float32) / 255.0 - 0.5) / 0.5, training=False)

    calls = {"keras_tf_function": lambda x: keras_call(x)}
    calls.update({f"export_{name}": (lambda x, f=signature: f(images=x)) for name, signature in signatures.items()})
    summary = {}
    for batch in (1, 16):
        images = tf.constant(rng.integers(0, 256, (batch, 32, 32, 1), dtype=np.uint8))
        expected = keras_call(images).numpy()
        difference = max(float(np.abs(signature(images=images)["probabilities"].numpy() - expected).max())
                         for signature in signatures.values())
        assert difference < 1e-4, difference
        for call in calls.values():  # warm up every graph
            call(images)
        times = {name: [] for name in calls}
        for round_index in range(args.rounds):
            names = list(calls)
            names = names[round_index % len(names):] + names[:round_index % len(names)]
            for name in names:
                started = time.perf_counter()
                for _ in range(args.calls):
                    calls[name](images)
                times[name].append((time.perf_counter() - started) / args.calls * 1e3)
        medians = {name: statistics.median(values) for name, values in times.items()}
        keras_ms = medians["keras_tf_function"]
        summary[f"batch_{batch}"] = {**{f"{k}_ms": round(v, 3) for k, v in medians.items()},
                                     **{f"{k}_vs_keras": round(keras_ms / v, 3) for k, v in medians.items()
                                        if k != "keras_tf_function"},
                                     "max_abs_difference": difference}
        print(f"batch {batch}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in medians.items())
              + f"; the default export {keras_ms / medians['export_default']:.2f}x the Keras tf.function")
    print_result(summary)


if __name__ == "__main__":
    main()
