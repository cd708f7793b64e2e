"""Image sizes from headers (PNG, JPEG, GIF, BMP, WebP) and the pixel limit, checked before decoding."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipelines.image_header import check_pixels, image_dimensions, image_format

CASES = [  # (Pillow format, save options, mode); Pillow writes each format's header as its specification says
    ("PNG", {}, "RGB"), ("PNG", {}, "L"), ("JPEG", {"quality": 90}, "RGB"), ("JPEG", {"progressive": True}, "L"),
    ("GIF", {}, "P"), ("BMP", {}, "RGB"), ("WEBP", {"lossless": False}, "RGB"), ("WEBP", {"lossless": True}, "RGB"),
    ("WEBP", {"lossless": False}, "RGBA"),  # alpha makes Pillow write the extended (VP8X) layout
]


def encode(fmt, options, mode, height, width) -> bytes:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt,options,mode", CASES)
@pytest.mark.parametrize("height,width", [(37, 61), (300, 7)])
def test_dimensions_match_the_decoder(fmt, options, mode, height, width):
    data = encode(fmt, options, mode, height, width)
    assert image_format(tf.constant(data)).numpy().decode() == {"WEBP": "webp", "JPEG": "jpeg"}.get(fmt, fmt.lower())
    assert image_dimensions(tf.constant(data)).numpy().tolist() == [height, width]
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.size == (width, height)


def test_top_down_bmp_and_unknown_formats():
    data = bytearray(encode("BMP", {}, "RGB", 5, 9))
    data[22:26] = (-5).to_bytes(4, "little", signed=True)  # a top-down BMP stores a negative height
    assert image_dimensions(tf.constant(bytes(data))).numpy().tolist() == [5, 9]
    assert image_dimensions(tf.constant(b"not an image at all")).numpy().tolist() == [-1, -1]
    truncated = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"  # the signature and no size fields
    assert image_dimensions(tf.constant(truncated)).numpy().tolist() == [0, 0]  # zeros, no out-of-range read


def test_a_tiny_file_declaring_a_huge_image_is_refused_before_decoding():
    # The hostile request: an all-black 8192x8192 PNG compresses to about 200 KB.
    buffer = io.BytesIO()
    Image.new("L", (8192, 8192)).save(buffer, format="PNG", optimize=True)
    data = buffer.getvalue()
    assert len(data) < 300_000
    with pytest.raises(tf.errors.InvalidArgumentError, match="limit of 16777216 pixels"):
        check_pixels(tf.constant(data), 4096 * 4096).numpy()
    assert check_pixels(tf.constant(data), 8192 * 8192).numpy().tolist() == [8192, 8192]


def test_the_check_runs_inside_a_graph():
    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def guarded(encoded):
        check_pixels(encoded, 100)
        return tf.io.decode_image(encoded, channels=3, expand_animations=False)

    assert guarded(tf.constant(encode("PNG", {}, "RGB", 10, 10))).shape == (10, 10, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="limit of 100 pixels"):
        guarded(tf.constant(encode("GIF", {}, "P", 11, 10)))
