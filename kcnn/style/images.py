"""Image handling for style transfer: loading, sizes, luminance, atomic PNG writes (numpy + Pillow)."""

from __future__ import annotations

import os

import numpy as np

from kcnn.files import atomic_write

# ITU-R BT.601 luma and the YIQ chroma axes (the colour space Gatys et al. 2017 use for luminance-only transfer).
RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], "float32")
YIQ_TO_RGB = np.linalg.inv(RGB_TO_YIQ).astype("float32")


def load_rgb(image, what: str = "image") -> np.ndarray:
    """A path, PIL image or array ``[h, w, 3]`` / ``[h, w]`` as float32 RGB in [0, 255]."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, (str, os.PathLike)):
        try:
            with Image.open(image) as opened:
                image = opened.convert("RGB")
        except FileNotFoundError:
            raise ValueError(f"{what} image {os.fspath(image)!r} does not exist") from None
        except UnidentifiedImageError:
            raise ValueError(f"{what} image {os.fspath(image)!r} is not an image Pillow can read "
                             "(use PNG, JPEG, GIF, BMP or WebP)") from None
    if hasattr(image, "convert"):
        image = image.convert("RGB")
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or min(array.shape[:2]) < 1:
        raise ValueError(f"{what} image must be [height, width, 3], got shape {array.shape}")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    array = array[..., :3].astype("float32")
    if array.max(initial=0) > 255.0 or array.min(initial=0) < 0.0:
        raise ValueError(f"{what} image pixels must be in [0, 255], got [{array.min()}, {array.max()}]")
    return array


def fit_size(shape, size: int) -> tuple[int, int]:
    """``(height, width)`` scaled so the longer side is ``size``, aspect ratio kept."""
    height, width = shape
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bicubic resize of a float image in [0, 255] (Pillow, per channel in float mode)."""
    from PIL import Image

    if image.shape[:2] == (height, width):
        return image.astype("float32")
    channels = [np.asarray(Image.fromarray(image[..., c].astype("float32"), mode="F")
                           .resize((width, height), Image.Resampling.BICUBIC)) for c in range(image.shape[-1])]
    return np.clip(np.stack(channels, axis=-1), 0, 255).astype("float32")


def to_yiq(image: np.ndarray) -> np.ndarray:
    return image @ RGB_TO_YIQ.T


def to_rgb(yiq: np.ndarray) -> np.ndarray:
    return yiq @ YIQ_TO_RGB.T


def luminance_transfer_inputs(content: np.ndarray, style: np.ndarray):
    """Grey (luminance-only) content and style images, the style's luminance matched to the content's
    mean and standard deviation (Gatys et al. 2017, eq. 6)."""
    content_y = to_yiq(content)[..., 0]
    style_y = to_yiq(style)[..., 0]
    style_y = (style_y - style_y.mean()) * (content_y.std() / max(style_y.std(), 1e-6)) + content_y.mean()
    grey = lambda y: np.repeat(np.clip(y, 0, 255)[..., None], 3, axis=-1).astype("float32")  # noqa: E731
    return grey(content_y), grey(style_y)


def combine_luminance(result: np.ndarray, content: np.ndarray) -> np.ndarray:
    """The result's luminance with the content image's chroma (I and Q), back in RGB."""
    yiq = to_yiq(content)
    yiq[..., 0] = to_yiq(result)[..., 0]
    return np.clip(to_rgb(yiq), 0, 255)


def save_png(image: np.ndarray, path: str) -> str:
    """Write a uint8 ``[h, w, 3]`` image as PNG, atomically."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return atomic_write(path, buffer.getvalue())


def save_figure(figure, path: str) -> str:
    """Write a matplotlib figure as PNG, atomically."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return atomic_write(path, buffer.getvalue())


def sample_images() -> dict:
    """scikit-learn's two bundled photographs (no download), as uint8 arrays by name."""
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    return {os.path.basename(name).split(".")[0]: image for name, image in zip(bunch.filenames, bunch.images)}
