"""The layers kcnn needs that Keras does not ship; all are registered for safe loading."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="kcnn")
class LocalResponseNormalization(keras.layers.Layer):
    """Cross-channel local response normalisation (Krizhevsky et al., 2012, section 3.3).

    ``b = a / (k + alpha * sum_{j in window} a_j^2) ** beta`` over ``size``
    neighbouring channels, with the paper's constants as defaults (k=2, n=5,
    alpha=1e-4, beta=0.75). Channels-last input.
    """

    def __init__(self, size: int = 5, k: float = 2.0, alpha: float = 1e-4, beta: float = 0.75, **kwargs):
        super().__init__(**kwargs)
        if size < 1 or size % 2 == 0:
            raise ValueError(f"LocalResponseNormalization size must be an odd integer >= 1, got {size}")
        self.size = size
        self.k = k
        self.alpha = alpha
        self.beta = beta

    def call(self, inputs):
        squared = ops.square(inputs)
        half = self.size // 2
        channels = inputs.shape[-1]
        padded = ops.pad(squared, [[0, 0], [0, 0], [0, 0], [half, half]])
        window = padded[..., 0:channels]
        for offset in range(1, self.size):
            window = window + padded[..., offset : offset + channels]
        return inputs / ops.power(self.k + self.alpha * window, self.beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "size": self.size, "k": self.k, "alpha": self.alpha, "beta": self.beta}


@keras.saving.register_keras_serializable(package="kcnn")
class MatchSpatial(keras.layers.Layer):
    """Crop or zero-pad ``x`` (bottom and right) to the height and width of ``reference``.

    FCN upsampling of a map whose size was floored by a stride-2 layer comes back
    one pixel short or long; this aligns it with the skip it is fused with. Works
    with spatial sizes unknown until run time.
    """

    def call(self, inputs):
        x, reference = inputs
        static = (x.shape[1], x.shape[2], reference.shape[1], reference.shape[2])
        if None not in static:  # constant crop and pad amounts when every size is known
            x_h, x_w, height, width = static
            x = x[:, : min(x_h, height), : min(x_w, width), :]
            pad_h, pad_w = max(0, height - x_h), max(0, width - x_w)
            if pad_h or pad_w:
                x = ops.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
            return x
        height, width = ops.shape(reference)[1], ops.shape(reference)[2]
        x = x[:, :height, :width, :]
        pad_h = height - ops.shape(x)[1]
        pad_w = width - ops.shape(x)[2]
        return ops.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])

    def compute_output_shape(self, input_shapes):
        x_shape, ref_shape = input_shapes
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])


@keras.saving.register_keras_serializable(package="kcnn")
class ReflectionPadding2D(keras.layers.Layer):
    """Pad height and width by mirroring the border (no edge repeated), as fast style-transfer networks do.

    ``padding`` is an int or ``(pad_height, pad_width)``; channels-last input. Zero padding
    would put dark frames around a stylised image; reflection keeps borders image-like.
    """

    def __init__(self, padding: int | tuple = 1, **kwargs):
        super().__init__(**kwargs)
        pad = (padding, padding) if isinstance(padding, int) else tuple(padding)
        if len(pad) != 2 or any(not isinstance(p, int) or p < 0 for p in pad):
            raise ValueError(f"ReflectionPadding2D padding must be an int >= 0 or two of them, got {padding!r}")
        self.padding = pad

    def call(self, inputs):
        ph, pw = self.padding
        return ops.pad(inputs, [[0, 0], [ph, ph], [pw, pw], [0, 0]], mode="reflect")

    def compute_output_shape(self, input_shape):
        ph, pw = self.padding
        batch, height, width, channels = input_shape
        return (batch, None if height is None else height + 2 * ph, None if width is None else width + 2 * pw,
                channels)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding}


@keras.saving.register_keras_serializable(package="kcnn")
class WSConv2D(keras.layers.Conv2D):
    """Conv2D with scaled weight standardisation (Brock et al., 2021, NFNets, section 3 / eq. 2).

    Every call convolves with ``gain * (W - mean(W)) / (std(W) * sqrt(fan_in))``, the mean and
    standard deviation taken per output channel over its fan-in, so each output unit keeps the
    variance of its input at initialisation without batch normalisation. ``gain`` is a learned
    per-channel scale initialised to one; ``epsilon`` bounds the variance term from below.
    """

    def __init__(self, *args, epsilon: float = 1e-4, **kwargs):
        super().__init__(*args, **kwargs)
        if epsilon <= 0:
            raise ValueError(f"epsilon must be > 0, got {epsilon}")
        self.epsilon = epsilon

    def build(self, input_shape):
        super().build(input_shape)
        self.gain = self.add_weight(name="gain", shape=(self.filters,), initializer="ones", trainable=True)

    def standardized_kernel(self, kernel):
        fan_in = int(kernel.shape[0] * kernel.shape[1] * kernel.shape[2])
        mean = ops.mean(kernel, axis=(0, 1, 2), keepdims=True)
        variance = ops.var(kernel, axis=(0, 1, 2), keepdims=True)
        scale = ops.rsqrt(ops.maximum(variance * fan_in, self.epsilon)) * ops.cast(self.gain, kernel.dtype)
        return (kernel - mean) * scale

    def convolution_op(self, inputs, kernel):
        return super().convolution_op(inputs, self.standardized_kernel(kernel))

    def save_own_variables(self, store):
        # Conv2D stores only kernel and bias: store kernel, bias, gain in order.
        if self.built:
            for i, variable in enumerate(self._own_variables()):
                store[str(i)] = variable

    def load_own_variables(self, store):
        if self.built:
            variables = self._own_variables()
            if len(store.keys()) != len(variables):
                raise ValueError(f"layer {self.name!r} expects {len(variables)} saved variables "
                                 f"(kernel, bias, gain), found {len(store.keys())}")
            for i, variable in enumerate(variables):
                variable.assign(store[str(i)])

    def _own_variables(self):
        return [self.kernel] + ([self.bias] if self.use_bias else []) + [self.gain]

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="kcnn")
class ScalarGain(keras.layers.Layer):
    """Multiply by one learned scalar, initialised to ``initial`` (NFNets' skip gain, zero at start)."""

    def __init__(self, initial: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.initial = float(initial)

    def build(self, input_shape):
        self.gain = self.add_weight(name="gain", shape=(), initializer=keras.initializers.Constant(self.initial),
                                    trainable=True)

    def call(self, inputs):
        return inputs * ops.cast(self.gain, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "initial": self.initial}


@keras.saving.register_keras_serializable(package="kcnn")
class FractalPathSampler(keras.layers.Layer):
    """Draws, once per training batch, which drop-path mode FractalNet's joins use (Larsson et al., 2016, 3.1).

    With probability ``global_ratio`` the batch is "global": one column index in ``[0, columns)``
    is drawn and every join keeps only that column, so one single path runs through the whole
    network; otherwise the output is -1 and each join drops its inputs locally. Outside
    training it is always -1 (joins then average all inputs). Output: ``(batch, 1)``, the same
    code for every example. The input only ties the layer into the graph.
    """

    def __init__(self, columns: int, global_ratio: float = 0.5, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if columns < 1:
            raise ValueError(f"columns must be >= 1, got {columns}")
        if not 0 <= global_ratio <= 1:
            raise ValueError(f"global_ratio must be in [0, 1], got {global_ratio}")
        self.columns = columns
        self.global_ratio = global_ratio
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        none = ops.zeros_like(ops.reshape(inputs, (ops.shape(inputs)[0], -1))[:, :1], dtype="float32") - 1.0
        if not training:
            return none
        draws = keras.random.uniform((2,), seed=self.seed_generator)
        column = ops.minimum(ops.floor(draws[1] * self.columns), self.columns - 1)
        return none + ops.where(draws[0] < self.global_ratio, column + 1.0, 0.0)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)

    def get_config(self):
        return {**super().get_config(), "columns": self.columns, "global_ratio": self.global_ratio,
                "seed": self.seed}


@keras.saving.register_keras_serializable(package="kcnn")
class FractalJoin(keras.layers.Layer):
    """FractalNet's join: the element-wise mean of its inputs, with drop-path while training.

    Inputs: the branch tensors, then the code from :class:`FractalPathSampler`. ``columns``
    gives each branch's column index. In a global batch the join keeps the branch of the
    drawn column (all branches if it has none: that join is off the drawn path); in a local
    batch each branch is dropped with ``drop_rate``, at least one always kept. The mean is
    over the kept branches. At inference it is the plain mean.
    """

    def __init__(self, columns, drop_rate: float = 0.15, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= drop_rate < 1:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        self.columns = [int(c) for c in columns]
        self.drop_rate = drop_rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        branches, code = inputs[:-1], inputs[-1]
        if len(branches) != len(self.columns):
            raise ValueError(f"{self.name}: got {len(branches)} branches for columns {self.columns}")
        if not training:
            return ops.mean(ops.stack(branches, axis=0), axis=0)
        n = len(branches)
        chosen = code[0, 0]
        on_path = ops.cast(ops.equal(ops.convert_to_tensor(self.columns, "float32"), chosen), "float32")
        on_path = ops.where(ops.sum(on_path) > 0, on_path, ops.ones((n,)))
        kept = ops.cast(keras.random.uniform((n,), seed=self.seed_generator) >= self.drop_rate, "float32")
        rescue = ops.one_hot(keras.random.randint((), 0, n, seed=self.seed_generator), n)
        kept = ops.where(ops.sum(kept) > 0, kept, rescue)
        mask = ops.where(chosen >= 0, on_path, kept)
        mask = ops.cast(mask / ops.sum(mask), branches[0].dtype)
        return sum(branch * mask[i] for i, branch in enumerate(branches))

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]

    def get_config(self):
        return {**super().get_config(), "columns": self.columns, "drop_rate": self.drop_rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="kcnn")
class PixelShuffle(keras.layers.Layer):
    """Periodic shuffling (ESPCN's sub-pixel layer): ``[b, h, w, c * r * r]`` -> ``[b, r * h, r * w, c]``.

    Channel ``(dy * r + dx) * c + k`` of input pixel ``(y, x)`` becomes channel ``k`` of output
    pixel ``(r * y + dy, r * x + dx)``: the order of TensorFlow's ``depth_to_space`` (PyTorch's
    ``PixelShuffle`` orders the channels ``k * r * r + dy * r + dx``). Written with reshape and
    transpose, so it runs on every backend and at sizes known only at run time.
    """

    def __init__(self, scale: int, **kwargs):
        super().__init__(**kwargs)
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
            raise ValueError(f"PixelShuffle scale must be an integer >= 1, got {scale!r}")
        self.scale = scale

    def build(self, input_shape):
        depth = input_shape[-1]
        if depth is None or depth % (self.scale * self.scale):
            raise ValueError(f"{self.name}: the channel count must be a multiple of scale**2 = "
                             f"{self.scale * self.scale}, got {depth}")

    def call(self, inputs):
        r = self.scale
        channels = inputs.shape[-1] // (r * r)
        shape = ops.shape(inputs)
        height, width = shape[1], shape[2]
        x = ops.reshape(inputs, (-1, height, width, r, r, channels))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))  # [b, h, dy, w, dx, c]
        return ops.reshape(x, (-1, height * r, width * r, channels))

    def compute_output_shape(self, input_shape):
        batch, height, width, depth = input_shape
        r = self.scale
        return (batch, None if height is None else height * r, None if width is None else width * r,
                depth // (r * r))

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


def _keys_cubic(x: float, a: float = -0.5) -> float:
    """Keys' (1981) cubic convolution kernel at distance ``x``."""
    x = abs(x)
    if x <= 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    if x < 2.0:
        return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    return 0.0


def bicubic_phase_taps(scale: int, table_size: int = 1024) -> list[list[tuple[int, float]]]:
    """For each of the ``scale`` output phases, its four (input offset, weight) pairs.

    Output pixel ``i * scale + k`` sits, with half-pixel centres, at input coordinate
    ``i + (k + 0.5) / scale - 0.5``; its taps are the four input pixels around that point.
    The fraction is rounded to ``1 / table_size`` as TensorFlow's ResizeBicubic kernel does
    (it reads the weights from a 1024-entry table), so the layer matches ``tf.image.resize``
    to float rounding; ``table_size=None`` gives the exact weights.
    """
    phases = []
    for k in range(scale):
        position = (k + 0.5) / scale - 0.5
        base = int(np.floor(position))
        fraction = position - base
        if table_size:
            fraction = round(fraction * table_size) / table_size
        phases.append([(base + j, float(np.float32(_keys_cubic(fraction - j)))) for j in (-1, 0, 1, 2)])
    return phases


@keras.saving.register_keras_serializable(package="kcnn")
class BicubicUpsampling(keras.layers.Layer):
    """Bicubic upscaling by an integer ``scale``: what ``tf.image.resize(method="bicubic")`` computes.

    Keys' cubic (a = -0.5), half-pixel centres, no antialiasing, and TensorFlow's borders:
    a tap that falls outside the image gets weight 0 and the rest are renormalised to sum to 1
    (JAX's ``scale_and_translate`` treats borders the same way). ``keras.layers.UpSampling2D``
    computes the new size from the static shape, so it fails where height and width are known
    only when the graph runs (a ``tf.function`` over images of any size, as kcnn's evaluation and
    exported signatures are). Upscaling by an integer factor is a fixed separable filter: each
    output phase is a weighted sum of four shifted copies of the input, so this layer needs only
    ``keras.ops`` and works on every backend and at any run-time size.
    """

    def __init__(self, scale: int, **kwargs):
        super().__init__(**kwargs)
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
            raise ValueError(f"BicubicUpsampling scale must be an integer >= 1, got {scale!r}")
        self.scale = scale
        self._taps = bicubic_phase_taps(scale)

    def _upsample_axis(self, x, axis: int):
        """Upscale ``x`` along ``axis`` (1: height, 2: width): zero-padded taps, phases interleaved."""
        reach = 2  # offsets run from -2 to 2 for every integer scale
        padding = [(0, 0)] * 4
        padding[axis] = (reach, reach)
        padded = ops.pad(x, padding)

        def shifted(offset):
            start, stop = offset + reach, offset - reach
            index = [slice(None)] * 4
            index[axis] = slice(start, stop if stop else None)
            return padded[tuple(index)]

        copies = {offset: shifted(offset) for offset in range(-reach, reach + 1)}
        phases = [sum(weight * copies[offset] for offset, weight in taps if weight != 0.0) for taps in self._taps]
        stacked = ops.stack(phases, axis=axis + 1)  # [..., n, scale, ...]
        shape = ops.shape(x)
        new_shape = [shape[0], shape[1], shape[2], shape[3]]
        new_shape[axis] = shape[axis] * self.scale
        return ops.reshape(stacked, new_shape)

    def call(self, inputs):
        if self.scale == 1:
            return inputs
        # A channel of ones goes through the same filter: its result is each output's sum of
        # in-image weights, which renormalises the border pixels as TensorFlow's kernel does.
        x = ops.concatenate([inputs, ops.ones_like(inputs[..., :1])], axis=-1)
        x = self._upsample_axis(self._upsample_axis(x, 1), 2)
        return x[..., :-1] / x[..., -1:]

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        r = self.scale
        return (batch, None if height is None else height * r, None if width is None else width * r, channels)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


# Importing this module registers every layer kcnn writes into a model file, wherever it is defined, so
# that one `import kcnn.layers` before keras.saving.load_model loads any kcnn model.
from kcnn import detection as _detection  # noqa: E402,F401  (FCOSDecode, LevelScale, ExpStride)
from kcnn.compress import folding as _folding  # noqa: E402,F401  (FoldedBatchNorm)
from kcnn.compress import pruning as _pruning  # noqa: E402,F401  (MaskedConv2D, MaskedDense)
