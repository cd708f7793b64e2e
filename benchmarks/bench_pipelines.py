"""kcnn's input pipelines against the same operations built from Keras preprocessing layers.

Three cases, each kcnn vs Keras interleaved in one process (A, B, B, A, ...),
median images per second over rounds and the median of per-round ratios:

1. 32x32 from in-memory uint8 arrays, ``cifar`` preset (pad 4, random crop, flip) plus CutMix.
   Keras: ZeroPadding2D, RandomCrop, RandomFlip, Rescaling, Normalization, CutMix on batches.
2. 224x224 from a folder of JPEGs, ``inception`` preset (random resized crop, flip, colour jitter).
3. The same images from sharded TFRecords.
   Keras for 2 and 3: decode the whole JPEG, Resizing to 256, RandomCrop 224, RandomFlip,
   RandomColorJitter, Normalization. (Keras has no random-resized-crop layer; crop-after-resize
   is the nearest it offers, and it decodes every pixel where kcnn decodes only the crop window.)

It also measures how fast ``mobilenet_v2`` consumes images in a training step at
the same sizes, so the pipelines can be compared with what training needs.

    python benchmarks/bench_pipelines.py            # about 3 minutes on 2 CPU cores

The last line printed is ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

import kcnn  # noqa: E402
from pipelines import sources  # noqa: E402
from pipelines.data import load_dataset  # noqa: E402
from pipelines.shapes import make_shapes  # noqa: E402
from result import print_result  # noqa: E402 - the RESULT line with the wall time

AUTOTUNE = tf.data.AUTOTUNE


def keras_cifar_cutmix(images, labels, batch, num_classes, seed):
    pad = keras.layers.ZeroPadding2D(4)
    crop = keras.layers.RandomCrop(32, 32, seed=seed)
    flip = keras.layers.RandomFlip("horizontal", seed=seed)
    scale = keras.layers.Rescaling(1 / 127.5, offset=-1.0)
    cutmix = keras.layers.CutMix(seed=seed)

    def batch_ops(x, y):
        x = scale(flip(crop(pad(tf.cast(x, tf.float32)), training=True), training=True))
        out = cutmix({"images": x, "labels": tf.one_hot(y, num_classes)}, training=True)
        return out["images"], out["labels"]

    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(len(images), seed=seed).repeat()
    return dataset.batch(batch, drop_remainder=True).map(batch_ops, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def keras_inception(encoded_pairs: tf.data.Dataset, batch, seed):
    resize = keras.layers.Resizing(256, 256)
    crop = keras.layers.RandomCrop(224, 224, seed=seed)
    flip = keras.layers.RandomFlip("horizontal", seed=seed)
    jitter = keras.layers.RandomColorJitter(value_range=(0, 1), brightness_factor=0.4, contrast_factor=0.4,
                                            saturation_factor=0.4, hue_factor=0.1, seed=seed)

    def per_image(encoded, y):
        image = tf.io.decode_jpeg(encoded, channels=3)
        return crop(resize(tf.cast(image, tf.float32) / 255.0), training=True), y

    def batch_ops(x, y):
        return (jitter(flip(x, training=True), training=True) - 0.5) / 0.5, y

    dataset = encoded_pairs.shuffle(1000, seed=seed).repeat().map(per_image, num_parallel_calls=AUTOTUNE)
    return dataset.batch(batch, drop_remainder=True).map(batch_ops, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def write_jpeg_folder(root: str, count: int) -> None:
    images, labels, _ = make_shapes(count, size=320, seed=7)
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = os.path.join(root, f"class{label}")
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(image[:, :288]).save(os.path.join(folder, f"{i:04d}.jpg"), quality=90)  # 320x288


def images_per_second(dataset, batches: int, batch: int) -> float:
    iterator = iter(dataset)
    next(iterator)  # the first batch pays for start-up; time the steady state
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch / (time.perf_counter() - start)


def training_rate(image_size: int, batch: int, steps: int) -> float:
    model = kcnn.build("mobilenet_v2", num_classes=10, input_shape=(image_size, image_size, 3))
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).random((batch, image_size, image_size, 3), dtype=np.float32)
    y = np.zeros(batch, np.int32)
    model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * batch / (time.perf_counter() - start)


def compare(pair: dict, rounds: int, batches: int, batch: int) -> dict:
    rates = {name: [] for name in pair}
    order = list(pair)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            rates[name].append(images_per_second(pair[name], batches, batch))
    ratios = [a / b for a, b in zip(rates["kcnn"], rates["keras"])]
    return {"kcnn_images_per_second": statistics.median(rates["kcnn"]),
            "keras_images_per_second": statistics.median(rates["keras"]),
            "speed_ratio_kcnn_over_keras": statistics.median(ratios)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jpegs", type=int, default=256)
    args = parser.parse_args()
    results = {}

    images, labels = sources.digits_arrays("train")
    cifar_like = np.repeat(tf.image.resize(images, [32, 32]).numpy().astype(np.uint8), 3, axis=-1)
    small_batch = 128
    kcnn_small, _ = load_dataset((cifar_like, labels), image_size=32, batch_size=small_batch, augment="cifar",
                                 mix="cutmix", seed=0, repeat=True)
    keras_small = keras_cifar_cutmix(cifar_like, labels, small_batch, 10, seed=0)
    results["cifar_cutmix_32"] = compare({"kcnn": kcnn_small, "keras": keras_small}, args.rounds, 40, small_batch)
    print("32x32 cifar+cutmix", results["cifar_cutmix_32"], flush=True)

    with tempfile.TemporaryDirectory() as root:
        folder = os.path.join(root, "jpegs")
        write_jpeg_folder(folder, args.jpegs)
        source = sources.folder(folder)
        sources.write_tfrecords(source, os.path.join(root, "records"), "train", shards=4)
        big_batch = 32
        for case, spec in (("folder_inception_224", f"folder:{folder}"),
                           ("tfrecord_inception_224", f"tfrecord:{root}/records/train-*.tfrecord")):
            ours, _ = load_dataset(spec, image_size=224, batch_size=big_batch, augment="inception", seed=0,
                                   repeat=True)
            theirs = keras_inception(sources.load_source(spec).dataset, big_batch, seed=0)
            results[case] = compare({"kcnn": ours, "keras": theirs}, args.rounds, 6, big_batch)
            print(case, results[case], flush=True)

    results["mobilenet_v2_train_images_per_second"] = {"32": training_rate(32, small_batch, 5),
                                                       "224": training_rate(224, 16, 3)}
    for case, size in (("cifar_cutmix_32", "32"), ("folder_inception_224", "224"), ("tfrecord_inception_224", "224")):
        results[case]["pipeline_over_training_rate"] = (
            results[case]["kcnn_images_per_second"] / results["mobilenet_v2_train_images_per_second"][size])
    summary = {"benchmark": "bench_pipelines", "tensorflow": tf.__version__, "keras": keras.__version__,
               "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "rounds": args.rounds, **results}
    print_result(summary, sort_keys=True)


if __name__ == "__main__":
    main()
