"""Training/serving skew: the same files through the evaluation pipeline and the exported model give the same inputs.

The exported model here is a flatten: its "probabilities" are its input pixels, so
the test compares the exact model inputs each path produced, not just a prediction.
"""

from __future__ import annotations

import io

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipelines.data import DataSpec, make_dataset
from serving import export as ex

# Odd sizes (neither square nor multiples of the model's size), grey and RGB, lossless and lossy.
FILES = [("L", "PNG", (13, 29)), ("L", "JPEG", (31, 17)), ("RGB", "PNG", (40, 33)), ("RGB", "JPEG", (21, 50)),
         ("RGBA", "PNG", (9, 11))]
SIZE = 8


def encoded_files(seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    files = []
    for mode, fmt, (height, width) in FILES:
        channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
        pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode).save(buffer, format=fmt)
        files.append(buffer.getvalue())
    return files


@pytest.mark.parametrize("channels, crop_fraction, channel_order", [(1, 1.0, "rgb"), (3, 0.875, "rgb"),
                                                                    (3, 0.875, "bgr")])  # bgr: caffe checkpoints
def test_evaluation_pipeline_and_exported_image_bytes_signature_give_identical_model_inputs(
        tmp_path, channels, crop_fraction, channel_order):
    files = encoded_files()
    folder = tmp_path / "images" / "only_class"
    folder.mkdir(parents=True)
    for index, (data, (_, fmt, _)) in enumerate(zip(files, FILES)):
        (folder / f"{index}.{fmt.lower()}").write_bytes(data)
    spec = DataSpec.create(f"folder:{tmp_path / 'images'}", image_size=SIZE, batch_size=len(files), channels=channels,
                           crop_fraction=crop_fraction, mean=(0.4,) if channels == 1 else (0.3, 0.4, 0.5),
                           std=(0.3,), channel_order=channel_order, split_fractions=(1.0, 0, 0))
    dataset, info = make_dataset(spec, "train")  # no augmentation recipe: the evaluation pipeline, every file
    pipeline_inputs = next(iter(dataset))[0].numpy()  # sorted file names: the order of FILES

    flatten = keras.Sequential([keras.Input((SIZE, SIZE, channels)), keras.layers.Flatten()])
    width = SIZE * SIZE * channels
    result = ex.export(flatten, str(tmp_path / "served"), class_names=[str(i) for i in range(width)],
                       preprocessing=info.preprocessing, top_k=1, warmup=False)
    served = tf.saved_model.load(result.path).signatures[ex.SIGNATURE_BYTES](image_bytes=tf.constant(files))
    served_inputs = served["probabilities"].numpy().reshape(len(files), SIZE, SIZE, channels)

    assert pipeline_inputs.shape == served_inputs.shape == (len(files), SIZE, SIZE, channels)
    # Same function on the same decoded pixels; the two graphs (tf.data, SavedModel) may order float ops
    # differently, which moves a value by at most a few float32 steps (~1e-6 here).
    np.testing.assert_allclose(pipeline_inputs, served_inputs, rtol=0, atol=2e-6)
    # And both are the documented preprocessing of the decoded pixels, not merely equal to each other.
    first = np.asarray(Image.open(io.BytesIO(files[2])).convert("RGB"))  # RGB PNG: lossless
    from pipelines.preprocess import preprocess_images
    expected = preprocess_images(tf.constant(first[np.newaxis]), info.preprocessing).numpy()[0]
    np.testing.assert_allclose(served_inputs[2], expected, atol=1e-6)


def test_grey_file_and_its_rgb_copy_give_the_same_grey_model_input(tmp_path):
    """A grey model sees one luminance whether the client sent a grey or an RGB file of the same picture."""
    grey = np.random.default_rng(3).integers(0, 256, (12, 15), dtype=np.uint8)
    as_grey = io.BytesIO()
    Image.fromarray(grey, "L").save(as_grey, format="PNG")
    as_rgb = io.BytesIO()
    Image.fromarray(np.repeat(grey[..., None], 3, axis=-1), "RGB").save(as_rgb, format="PNG")
    from pipelines.preprocess import Preprocessing, preprocess_encoded

    spec = Preprocessing(image_size=SIZE, channels=1)
    a, b = (preprocess_encoded(tf.constant(f.getvalue()), spec).numpy() for f in (as_grey, as_rgb))
    np.testing.assert_array_equal(a, b)
