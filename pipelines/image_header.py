"""Image sizes read from file headers, in the graph, before anything is decoded.

A 196 KB PNG of 8192x8192 black pixels decodes to 201 MB of uint8 and more as float32: a small
request can cost a server gigabytes. ``image_dimensions`` reads height and width from the header
of PNG, JPEG, GIF, BMP and WebP files with TensorFlow string ops (so the check runs inside an
exported SavedModel, under TF Serving as under kcnn serve), and ``check_pixels`` fails with
INVALID_ARGUMENT naming the limit before the decoder allocates anything.

Header layouts (all from the formats' specifications):
- PNG: 8-byte signature, then the IHDR chunk: width and height as big-endian uint32 at bytes 16 and 20.
- GIF: "GIF87a"/"GIF89a", then the logical screen's width and height as little-endian uint16 at 6 and 8.
- BMP: "BM", a 14-byte file header, then the DIB header: BITMAPCOREHEADER (size 12) has int16 width and
  height at 18 and 20; the later headers (size >= 40) int32 at 18 and 22 (height negative for top-down).
- WebP: "RIFF" size "WEBP", then a "VP8 " (lossy: 14-bit width and height at 26 and 28), "VP8L"
  (lossless: 14-bit width-1 and height-1 packed from byte 21) or "VP8X" (extended: 24-bit canvas width-1
  and height-1 at 24 and 27) chunk.
- JPEG: the first SOFn segment, found by ``tf.io.extract_jpeg_shape`` (walks the markers, decodes nothing).
"""

from __future__ import annotations

import tensorflow as tf

DEFAULT_MAX_PIXELS = 4096 * 4096
UNKNOWN = -1


HEADER_BYTES = 32  # every fixed-offset field above lies in the first 32 bytes


def _header(encoded) -> tf.Tensor:
    """The first HEADER_BYTES bytes, zero-padded when the file is shorter (so no read is out of range)."""
    return tf.strings.substr(tf.strings.join([tf.strings.substr(encoded, 0, HEADER_BYTES),
                                              tf.constant(b"\0" * HEADER_BYTES)]), 0, HEADER_BYTES)


def _bytes(header, start: int, length: int) -> tf.Tensor:
    """``length`` bytes of the padded header from ``start``, as int64."""
    return tf.cast(tf.io.decode_raw(tf.strings.substr(header, start, length), tf.uint8), tf.int64)


def _little(encoded, start: int, length: int) -> tf.Tensor:
    values = _bytes(encoded, start, length)
    return tf.reduce_sum(values * tf.constant([256 ** i for i in range(length)], tf.int64))


def _big(encoded, start: int, length: int) -> tf.Tensor:
    values = _bytes(encoded, start, length)
    return tf.reduce_sum(values * tf.constant([256 ** (length - 1 - i) for i in range(length)], tf.int64))


def _signed(value: tf.Tensor, bits: int) -> tf.Tensor:
    return tf.where(value >= 2 ** (bits - 1), value - 2 ** bits, value)


def _png(encoded):
    return _big(encoded, 20, 4), _big(encoded, 16, 4)


def _gif(encoded):
    return _little(encoded, 8, 2), _little(encoded, 6, 2)


def _bmp(encoded):
    core = tf.equal(_little(encoded, 14, 4), 12)
    height = tf.where(core, _signed(_little(encoded, 20, 2), 16), _signed(_little(encoded, 22, 4), 32))
    width = tf.where(core, _little(encoded, 18, 2), _signed(_little(encoded, 18, 4), 32))
    return tf.abs(height), tf.abs(width)


def _webp(encoded):
    chunk = tf.strings.substr(encoded, 12, 4)
    lossy = (_little(encoded, 28, 2) % 16384, _little(encoded, 26, 2) % 16384)
    packed = _little(encoded, 21, 4)
    lossless = ((packed // 16384) % 16384 + 1, packed % 16384 + 1)
    extended = (_little(encoded, 27, 3) + 1, _little(encoded, 24, 3) + 1)
    unknown = (tf.constant(UNKNOWN, tf.int64), tf.constant(UNKNOWN, tf.int64))
    return tuple(
        tf.where(tf.equal(chunk, "VP8 "), lossy[i],
                 tf.where(tf.equal(chunk, "VP8L"), lossless[i], tf.where(tf.equal(chunk, "VP8X"), extended[i],
                                                                         unknown[i])))
        for i in range(2))


def _jpeg(encoded):
    shape = tf.cast(tf.io.extract_jpeg_shape(encoded), tf.int64)
    return shape[0], shape[1]


# Each format's magic bytes as (offset, bytes) pairs that must all match; the first format matched wins.
MAGIC = (("png", ((0, b"\x89PNG\r\n\x1a\n"),)), ("jpeg", ((0, b"\xff\xd8\xff"),)), ("gif", ((0, b"GIF87a"),)),
         ("gif", ((0, b"GIF89a"),)), ("bmp", ((0, b"BM"),)), ("webp", ((0, b"RIFF"), (8, b"WEBP"))))
FORMAT_NAMES = "JPEG, PNG, GIF, BMP or WebP"


def image_format(encoded: tf.Tensor) -> tf.Tensor:
    """``"png"``, ``"jpeg"``, ``"gif"``, ``"bmp"``, ``"webp"`` or ``""`` from a file's magic bytes."""
    encoded = _header(encoded)
    result = tf.constant("")
    for name, parts in reversed(MAGIC):
        matched = tf.reduce_all([tf.equal(tf.strings.substr(encoded, offset, len(magic)), magic)
                                 for offset, magic in parts])
        result = tf.where(matched, tf.constant(name), result)
    return result


def file_format(data: bytes) -> str:
    """``image_format`` in plain Python, for checking a file before it is sent anywhere."""
    for name, parts in MAGIC:
        if all(data[offset:offset + len(magic)] == magic for offset, magic in parts):
            return name
    return ""


def image_dimensions(encoded: tf.Tensor) -> tf.Tensor:
    """``[height, width]`` (int64) from one encoded image's header; ``[-1, -1]`` for an unknown format."""
    kind = image_format(encoded)
    header = _header(encoded)
    unknown = lambda: (tf.constant(UNKNOWN, tf.int64), tf.constant(UNKNOWN, tf.int64))  # noqa: E731
    branches = {"png": lambda: _png(header), "gif": lambda: _gif(header), "bmp": lambda: _bmp(header),
                "webp": lambda: _webp(header), "jpeg": lambda: _jpeg(encoded)}
    result = unknown()
    for name, reader in branches.items():
        result = tf.cond(tf.equal(kind, name), reader, lambda result=result: result)
    return tf.stack(result)


def check_pixels(encoded: tf.Tensor, max_pixels: int) -> tf.Tensor:
    """Assert that one encoded image has at most ``max_pixels`` pixels; returns its ``[height, width]``.

    Fails with INVALID_ARGUMENT (``tf.errors.InvalidArgumentError``) before any decoding.
    """
    dims = image_dimensions(encoded)
    pixels = dims[0] * dims[1]
    message = (f"image is larger than this model's limit of {max_pixels} pixels "
               f"(set at export with --max-image-pixels); send a smaller image")
    with tf.control_dependencies([tf.debugging.assert_less_equal(pixels, tf.constant(max_pixels, tf.int64),
                                                                 message=message)]):
        return tf.identity(dims)
