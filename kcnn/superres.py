"""Single-image super-resolution networks: ESPCN, SRCNN and the bicubic baseline they are measured against.

Every builder returns a functional ``keras.Model`` from a low-resolution image ``[batch, h, w,
channels]`` in [0, 1] (any ``h`` and ``w``) to the image at ``scale`` times the size, ``[batch,
scale*h, scale*w, channels]``, with its last layer in float32 for mixed precision. Outputs are
not clipped: clip to [0, 1] before measuring (``kcnn.quality``). Both papers work on the Y
channel of YCbCr, hence ``channels=1``.

- ``espcn`` (Shi et al., CVPR 2016): convolutions in low-resolution space, then a sub-pixel
  convolution whose ``channels * scale**2`` maps :class:`PixelShuffle` rearranges into the
  large image. Cheap: every convolution runs at the small size.
- ``srcnn`` (Dong et al., ECCV 2014 / TPAMI 2016): bicubic upscaling first (inside the model),
  then patch extraction (9x9), non-linear mapping (1x1) and reconstruction (5x5).
- ``bicubic``: just the bicubic upscaling, the baseline every paper reports beside its network.

``SUPER_RESOLUTION.entry(name).metadata`` holds the paper and the parameter counts per scale
for ``channels=1`` (the tests pin them against the papers' layer shapes). Loading a saved
ESPCN's :class:`kcnn.layers.PixelShuffle` is registered with kcnn's other layers (``import kcnn``). Backend-agnostic:
keras, keras.ops and numpy only.
"""

from __future__ import annotations

import keras
from keras import layers

from kcnn.blocks import conv_bn_act
from kcnn.layers import BicubicUpsampling, PixelShuffle
from kcnn.registry import Registry

SUPER_RESOLUTION = Registry("super-resolution model")

SCALES = (2, 3, 4)  # the factors both papers report

ESPCN_PAPER = ("Shi et al., 'Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel "
               "Convolutional Neural Network', CVPR 2016 (arXiv:1609.05158): l = 3, (f1, n1) = (5, 64), "
               "(f2, n2) = (3, 32), f3 = 3, tanh")
SRCNN_PAPER = ("Dong et al., 'Image Super-Resolution Using Deep Convolutional Networks', ECCV 2014 and "
               "TPAMI 2016 (arXiv:1501.00092): the 9-1-5 network, n1 = 64, n2 = 32, ReLU, on the bicubic-"
               "upscaled image; TPAMI section 4.3.2 gives 8,032 parameters (weights) for 9-1-5")

# ESPCN's hidden layers (kernel f_l, maps n_l); the sub-pixel convolution after them is 3x3.
ESPCN_LAYERS = ((5, 64), (3, 32))
ESPCN_OUTPUT_KERNEL = 3
# SRCNN: kernel sizes f1-f2-f3 and the widths n1, n2 of its first two layers.
SRCNN_KERNELS = (9, 1, 5)
SRCNN_FILTERS = (64, 32)


# Parameter counts at channels=1, per scale (tests/kcnn/test_superres.py derives them from the layer shapes).
ESPCN_PARAMS = {2: 21_284, 3: 22_729, 4: 24_752}
SRCNN_PARAMS = {2: 8_129, 3: 8_129, 4: 8_129}  # the bicubic upscaling has no weights: the same at every scale
SRCNN_WEIGHTS = 8_032  # without the 97 biases: the figure Dong et al. give


@SUPER_RESOLUTION.register("espcn", paper=ESPCN_PAPER, input_shape=(None, None, 1), scales=SCALES,
                           params=ESPCN_PARAMS)
def espcn(scale: int = 3, channels: int = 1, *, activation="tanh", residual: bool = False,
          name: str = "espcn") -> keras.Model:
    """ESPCN: 5x5x64 and 3x3x32 convolutions with tanh, a 3x3 convolution to ``channels * scale**2``
    maps, then :class:`PixelShuffle`. All three convolutions keep the low-resolution size ("same"
    padding; the paper trains without padding, which changes no weight). ``residual=True`` (not in
    the paper; no weights added) adds the bicubic upscaling to the shuffled output, so the network
    learns only the missing detail and trains in a fraction of the steps.
    """
    inputs = _low_resolution_input(scale, channels)
    x = inputs
    for index, (kernel, filters) in enumerate(ESPCN_LAYERS, start=1):
        x = conv_bn_act(x, filters, kernel, activation=activation, batch_norm=False, name=f"{name}_layer{index}")
    x = layers.Conv2D(channels * scale * scale, ESPCN_OUTPUT_KERNEL, padding="same", dtype="float32",
                      name=f"{name}_subpixel_conv")(x)
    outputs = PixelShuffle(scale, dtype="float32", name=f"{name}_pixel_shuffle")(x)
    if residual:
        outputs = layers.Add(dtype="float32", name=f"{name}_residual")([_bicubic(inputs, scale, f"{name}_bicubic"),
                                                                      outputs])
    return keras.Model(inputs, outputs, name=name)


@SUPER_RESOLUTION.register("srcnn", paper=SRCNN_PAPER, input_shape=(None, None, 1), scales=SCALES,
                           params=SRCNN_PARAMS, weights=SRCNN_WEIGHTS)
def srcnn(scale: int = 3, channels: int = 1, *, kernels=SRCNN_KERNELS, filters=SRCNN_FILTERS,
          residual: bool = False, name: str = "srcnn") -> keras.Model:
    """SRCNN: bicubic upscaling, then f1 x f1 x n1 patch extraction (ReLU), f2 x f2 x n2 non-linear
    mapping (ReLU) and an f3 x f3 linear reconstruction, 9-1-5 with 64 and 32 maps by default
    (``kernels=(9, 3, 5)`` or ``(9, 5, 5)`` are the paper's larger variants).

    Convolutions use "same" padding so the output has the upscaled size; the paper trains
    without padding, on an output 12 pixels smaller each way. ``residual=True`` (not in the paper)
    adds the bicubic image to the reconstruction, so the network learns only the detail.
    """
    if (len(kernels) != 3 or len(filters) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in (*kernels, *filters))):
        raise ValueError(f"SRCNN takes three positive kernel sizes and two positive widths, got "
                         f"kernels={kernels!r}, filters={filters!r}")
    inputs = _low_resolution_input(scale, channels)
    upscaled = _bicubic(inputs, scale, f"{name}_bicubic")
    x = upscaled
    for stage, kernel, width in zip(("extraction", "mapping"), kernels, filters):
        x = conv_bn_act(x, width, kernel, activation="relu", batch_norm=False, name=f"{name}_{stage}")
    x = layers.Conv2D(channels, kernels[2], padding="same", dtype="float32", name=f"{name}_reconstruction")(x)
    if residual:
        x = layers.Add(dtype="float32", name=f"{name}_residual")([upscaled, x])
    return keras.Model(inputs, x, name=name)


@SUPER_RESOLUTION.register("bicubic", paper="bicubic interpolation (Keys 1981, a = -0.5), the papers' baseline",
                           input_shape=(None, None, 1), scales=SCALES, params={s: 0 for s in SCALES})
def bicubic(scale: int = 3, channels: int = 1, *, name: str = "bicubic") -> keras.Model:
    """Bicubic upscaling alone (no weights): the baseline a super-resolution network must beat."""
    inputs = _low_resolution_input(scale, channels)
    return keras.Model(inputs, _bicubic(inputs, scale, f"{name}_upsampling"), name=name)


def _bicubic(x, scale: int, name: str):
    """Bicubic resize (Keys' cubic, a = -0.5, half-pixel centres) at any run-time size, kept in float32."""
    return BicubicUpsampling(scale, dtype="float32", name=name)(x)


def _low_resolution_input(scale, channels):
    if not _is_int(scale, 2):
        raise ValueError(f"scale must be an integer >= 2 (the papers report x2, x3 and x4), got {scale!r}")
    if not _is_int(channels, 1):
        raise ValueError(f"channels must be an integer >= 1 (1: the Y channel, as the papers; 3: RGB), "
                         f"got {channels!r}")
    return keras.Input(shape=(None, None, channels), name="low_resolution")


def _is_int(value, minimum: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= minimum
