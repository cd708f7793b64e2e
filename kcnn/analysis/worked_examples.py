"""The course notes' worked examples as plain Keras models, for ``kcnn summary`` and docs/analysis.md.

``python -m kcnn.analysis.worked_examples DIR`` saves each as ``DIR/NAME.keras``;
``kcnn summary --model DIR/NAME.keras`` then prints the notes' numbers. The
models use only ``keras.layers`` (no kcnn block), so the counts check kcnn's
reading of Keras itself. Each entry: (name, source, builder).
"""

from __future__ import annotations

import argparse
import os
import sys

import keras
from keras import layers
from kcnn.files import staged_path


def lenet_c1():
    """LeNet-5's first layer: 6 filters of 5x5 on a 32x32 image."""
    inputs = keras.Input((32, 32, 1))
    return keras.Model(inputs, layers.Conv2D(6, 5, name="c1")(inputs), name="lenet_c1")


def alexnet_conv1():
    """AlexNet's conv1 at 227x227 (the size its 55x55 output implies) and its overlapping 3x3/2 max pooling."""
    inputs = keras.Input((227, 227, 3))
    x = layers.Conv2D(96, 11, strides=4, name="conv1")(inputs)
    return keras.Model(inputs, layers.MaxPooling2D(3, strides=2, name="pool1")(x), name="alexnet_conv1")


def dqn(actions: int = 18):
    """The Atari Q-network: 84x84x4 frames, 32 8x8/4, 64 4x4/2, 64 3x3/1, 512 units, one output per action."""
    inputs = keras.Input((84, 84, 4))
    x = layers.Conv2D(32, 8, strides=4, activation="relu", name="conv1")(inputs)
    x = layers.Conv2D(64, 4, strides=2, activation="relu", name="conv2")(x)
    x = layers.Conv2D(64, 3, strides=1, activation="relu", name="conv3")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(512, activation="relu", name="fc4")(x)
    return keras.Model(inputs, layers.Dense(actions, name="q_values")(x), name="dqn")


def conv3x3_28x28x128():
    """The notes' cost example: 32 filters of 3x3 over a 28x28x128 volume, no padding."""
    inputs = keras.Input((28, 28, 128))
    return keras.Model(inputs, layers.Conv2D(32, 3, name="conv3x3")(inputs), name="conv3x3_28x28x128")


def bottleneck_28x28x128(width: int = 16):
    """The exercise: the same 3x3 layer after a 1x1 convolution down to ``width`` channels."""
    inputs = keras.Input((28, 28, 128))
    x = layers.Conv2D(width, 1, name="reduce1x1")(inputs)
    return keras.Model(inputs, layers.Conv2D(32, 3, name="conv3x3")(x), name="bottleneck_28x28x128")


def guide_dilated():
    """Dumoulin & Visin's dilated example: a 3x3 kernel, dilation 2, on a 7x7 input."""
    inputs = keras.Input((7, 7, 1))
    return keras.Model(inputs, layers.Conv2D(1, 3, dilation_rate=2, name="dilated")(inputs), name="guide_dilated")


def guide_transposed():
    """Dumoulin & Visin's strided example and its transpose: 5x5 -> 2x2 (3x3 kernel, stride 2) -> 5x5."""
    inputs = keras.Input((5, 5, 1))
    down = layers.Conv2D(1, 3, strides=2, name="down")(inputs)
    return keras.Model(inputs, layers.Conv2DTranspose(1, 3, strides=2, name="up")(down), name="guide_transposed")


def guide_transposed_odd():
    """The guide's odd case: 6x6 with padding 1 -> 3x3 -> 6x6, which needs ``a = 1``.

    The guide's padding of 1 is ZeroPadding2D before the convolution and
    Cropping2D after the transposed one; its ``a`` is Keras' ``output_padding``.
    """
    inputs = keras.Input((6, 6, 1))
    x = layers.ZeroPadding2D(1, name="pad")(inputs)
    x = layers.Conv2D(1, 3, strides=2, name="down")(x)
    x = layers.Conv2DTranspose(1, 3, strides=2, output_padding=1, name="up")(x)
    return keras.Model(inputs, layers.Cropping2D(1, name="crop")(x), name="guide_transposed_odd")


def timeseries():
    """A 1-D model of 128 steps of 3-axis accelerometer readings into 4 activity classes."""
    inputs = keras.Input((128, 3))
    x = layers.Conv1D(16, 5, activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling1D(2, name="pool1")(x)
    x = layers.Conv1D(32, 3, dilation_rate=2, activation="relu", name="conv2")(x)
    x = layers.GlobalAveragePooling1D(name="gap")(x)
    return keras.Model(inputs, layers.Dense(4, name="classes")(x), name="timeseries")


EXAMPLES = (
    ("lenet_c1", "LeCun et al. 1998, section II.B", lenet_c1),
    ("alexnet_conv1", "Krizhevsky et al. 2012, sections 3.4 and 3.5", alexnet_conv1),
    ("dqn", "Mnih et al. 2015, Methods: model architecture", dqn),
    ("conv3x3_28x28x128", "the course notes' cost example", conv3x3_28x28x128),
    ("bottleneck_28x28x128", "the course notes' 1x1-bottleneck exercise", bottleneck_28x28x128),
    ("guide_dilated", "Dumoulin & Visin 2016, relationship 15 and its figure", guide_dilated),
    ("guide_transposed", "Dumoulin & Visin 2016, relationship 12 and its figure", guide_transposed),
    ("guide_transposed_odd", "Dumoulin & Visin 2016, relationship 14 and its figure", guide_transposed_odd),
    ("timeseries", "kcnn's own 1-D example", timeseries),
)


def save_all(directory: str) -> list[str]:
    """Save every example as DIRECTORY/NAME.keras (each written atomically); returns the paths."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for name, _, build in EXAMPLES:
        path = os.path.join(directory, f"{name}.keras")
        with staged_path(path) as temporary:
            build().save(temporary)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kcnn.analysis.worked_examples",
                                     description="Save the course notes' worked examples as .keras models.")
    parser.add_argument("directory", help="folder to write NAME.keras into (created if missing)")
    args = parser.parse_args(argv)
    for path in save_all(args.directory):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
