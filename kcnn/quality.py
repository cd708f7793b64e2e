"""Image quality as the super-resolution literature measures it: PSNR and SSIM on the Y channel.

The protocol of SRCNN (Dong et al., 2014), ESPCN (Shi et al., 2016) and most papers since:
convert RGB to the luma of ITU-R BT.601 as MATLAB's ``rgb2ycbcr`` does (:func:`rgb_to_y`,
Y in [16, 235] on a [0, 255] scale), crop ``border`` pixels (the scale factor) from every
side, then PSNR with a peak of 255 and SSIM with Wang et al.'s Gaussian window. numpy only.

Both metrics take one 2-D Y image ``[H, W]`` (a float comes back) or a batch ``[N, H, W]``
or ``[N, H, W, 1]`` (one value per image comes back, as papers average per image).
"""

from __future__ import annotations

import numpy as np

# MATLAB rgb2ycbcr (ITU-R BT.601, studio swing): [Y, Cb, Cr] = OFFSET + MATRIX @ [R, G, B] with R, G, B in [0, 1].
YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])
YCBCR_FROM_RGB = np.array([[65.481, 128.553, 24.966],
                           [-37.797, -74.203, 112.0],
                           [112.0, -93.786, -18.214]])

# SSIM constants of Wang, Bovik, Sheikh and Simoncelli, IEEE TIP 2004, section III.C.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def rgb_to_y(images) -> np.ndarray:
    """The BT.601 luma of RGB images ``[..., 3]``: ``Y = 16 + 65.481 R + 128.553 G + 24.966 B``.

    Input: uint8 pixels in [0, 255], or floats in [0, 1] (anything else is an error).
    Returns float64 Y on the [0, 255] scale (in [16, 235]) with the channel axis dropped,
    not rounded (MATLAB's ``rgb2ycbcr`` rounds only for uint8 output).
    """
    rgb = _unit_rgb(images)
    return YCBCR_OFFSET[0] + rgb @ YCBCR_FROM_RGB[0]


def _unit_rgb(images) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim < 1 or images.shape[-1] != 3:
        raise ValueError(f"RGB images must have 3 channels on the last axis, got shape {images.shape}")
    if images.dtype == np.uint8:
        return images.astype(np.float64) / 255.0
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"RGB images must be uint8 in [0, 255] or floats in [0, 1], got {images.dtype}")
    rgb = images.astype(np.float64)
    if rgb.size and (rgb.min() < 0.0 or rgb.max() > 1.0):
        raise ValueError(f"float RGB images must be in [0, 1], got [{rgb.min():.4g}, {rgb.max():.4g}]; "
                         "clip model outputs to [0, 1], and divide [0, 255] floats by 255")
    return rgb


def psnr(reference, test, *, border: int = 0, data_range: float = 255.0):
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)`` in dB, ``border`` pixels cropped per side.

    ``inf`` where the images are equal. A float for ``[H, W]`` input, an array ``[N]`` for a batch.
    """
    reference, test, single = _pair(reference, test, border)
    mse = np.mean(np.square(reference - test), axis=(1, 2))
    with np.errstate(divide="ignore"):
        values = 10.0 * np.log10(float(data_range) ** 2 / mse)
    return float(values[0]) if single else values


def ssim(reference, test, *, border: int = 0, data_range: float = 255.0):
    """Structural similarity (Wang et al., IEEE TIP 2004), ``border`` pixels cropped per side first.

    An 11x11 Gaussian window with sigma 1.5 (normalised to sum 1), K1 = 0.01, K2 = 0.03, population
    (not sample) variances; the SSIM map is computed where the window lies wholly inside the cropped
    image and averaged. This is scikit-image's ``structural_similarity`` with ``gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False``, which also averages over exactly that region.
    A float for ``[H, W]`` input, an array ``[N]`` for a batch.
    """
    reference, test, single = _pair(reference, test, border)
    if min(reference.shape[1:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels after cropping "
                         f"the border, got {reference.shape[1]}x{reference.shape[2]}")
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    mu_x, mu_y = _gaussian_valid(reference), _gaussian_valid(test)
    var_x = _gaussian_valid(reference * reference) - mu_x * mu_x
    var_y = _gaussian_valid(test * test) - mu_y * mu_y
    cov = _gaussian_valid(reference * test) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    values = ssim_map.mean(axis=(1, 2))
    return float(values[0]) if single else values


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The 1-D Gaussian of ``size`` taps, normalised to sum 1 (the 2-D window is its outer product)."""
    offsets = np.arange(size) - (size - 1) / 2
    taps = np.exp(-0.5 * (offsets / sigma) ** 2)
    return taps / taps.sum()


def _gaussian_valid(images: np.ndarray) -> np.ndarray:
    """Separable Gaussian filtering of ``[N, H, W]``, only where the window fits: ``[N, H - 10, W - 10]``."""
    taps = gaussian_window()
    rows = np.lib.stride_tricks.sliding_window_view(images, SSIM_WINDOW, axis=2) @ taps
    return np.lib.stride_tricks.sliding_window_view(rows, SSIM_WINDOW, axis=1) @ taps


def _pair(reference, test, border: int):
    """Both images as float64 ``[N, H, W]`` with the border cropped, and whether a single image was given."""
    if isinstance(border, bool) or not isinstance(border, (int, np.integer)) or border < 0:
        raise ValueError(f"border must be a number of pixels >= 0, got {border!r}")
    reference, single = _as_batch(reference, "reference")
    test, _ = _as_batch(test, "test")
    if reference.shape != test.shape:
        raise ValueError(f"reference and test must have the same shape, got {reference.shape} and {test.shape}")
    height, width = reference.shape[1:]
    if 2 * border >= min(height, width):
        raise ValueError(f"border {border} leaves nothing of a {height}x{width} image")
    if border:
        reference = reference[:, border:-border, border:-border]
        test = test[:, border:-border, border:-border]
    return reference, test, single


def _as_batch(images, what: str):
    images = np.asarray(images, dtype=np.float64)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim == 3 and images.shape[-1] in (3, 4):
        raise ValueError(f"{what} looks like colour images {images.shape}; measure the Y channel: "
                         "kcnn.quality.rgb_to_y(images)")
    if images.ndim == 2:
        return images[np.newaxis], True
    if images.ndim == 3:
        return images, False
    raise ValueError(f"{what} must be a Y image [H, W] or a batch [N, H, W] or [N, H, W, 1], got {images.shape}")
