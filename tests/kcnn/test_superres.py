"""Super-resolution networks (kcnn.superres) and the literature's quality metrics (kcnn.quality).

Parameter counts are derived here from the papers' layer shapes:
- ESPCN, Shi et al., CVPR 2016 (arXiv:1609.05158): l = 3, (f1, n1) = (5, 64), (f2, n2) = (3, 32),
  f3 = 3, the last layer giving channels * r^2 maps.
- SRCNN, Dong et al., TPAMI 2016 (arXiv:1501.00092), section 4.3.2 (filter size): "the number of
  parameters of 9-1-5, 9-3-5 and 9-5-5 is 8,032, 24,416 and 57,184" (weights, no biases), n1 = 64, n2 = 32.
The metrics are checked against scikit-image's skimage.metrics (the reference implementation).
"""

from __future__ import annotations


import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_save_load_round_trip
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from kcnn import quality
from kcnn.layers import BicubicUpsampling, bicubic_phase_taps
from kcnn.superres import SUPER_RESOLUTION, PixelShuffle, bicubic, espcn, srcnn

SCALES = (2, 3, 4)
MODELS = SUPER_RESOLUTION.list()


def _low(batch=2, height=7, width=9, channels=1, seed=0):
    return np.random.default_rng(seed).random((batch, height, width, channels), dtype=np.float32)


def test_the_registry_holds_the_three_models_with_their_papers():
    assert MODELS == ["bicubic", "espcn", "srcnn"]
    assert [SUPER_RESOLUTION.get(name) for name in MODELS] == [bicubic, espcn, srcnn]  # every public builder
    for name in MODELS:
        metadata = SUPER_RESOLUTION.entry(name).metadata
        assert metadata["scales"] == SCALES and metadata["input_shape"] == (None, None, 1)
        assert metadata["paper"]
    assert "Shi et al." in SUPER_RESOLUTION.entry("espcn").metadata["paper"]
    assert "Dong et al." in SUPER_RESOLUTION.entry("srcnn").metadata["paper"]
    with pytest.raises(ValueError, match="unknown super-resolution model 'espnc'. Did you mean 'espcn'"):
        SUPER_RESOLUTION.get("espnc")


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("scale", SCALES)
def test_each_model_upscales_any_size_by_its_scale(name, scale):
    model = SUPER_RESOLUTION.get(name)(scale=scale)
    assert model.input_shape == (None, None, None, 1) and model.output_shape == (None, None, None, 1)
    out = keras.ops.convert_to_numpy(model(_low()))
    assert out.shape == (2, 7 * scale, 9 * scale, 1) and out.dtype == np.float32
    assert np.all(np.isfinite(out))
    rgb = SUPER_RESOLUTION.get(name)(scale=scale, channels=3)(_low(1, 5, 6, 3))
    assert tuple(rgb.shape) == (1, 5 * scale, 6 * scale, 3)


def _espcn_by_hand(scale: int, c: int = 1) -> int:
    """Weights and biases of (5x5, c -> 64), (3x3, 64 -> 32), (3x3, 32 -> c r^2)."""
    return (5 * 5 * c * 64 + 64) + (3 * 3 * 64 * 32 + 32) + (3 * 3 * 32 * c * scale ** 2 + c * scale ** 2)


def _srcnn_weights(f1, f2, f3, n1=64, n2=32, c=1) -> int:
    return f1 * f1 * c * n1 + f2 * f2 * n1 * n2 + f3 * f3 * n2 * c


@pytest.mark.parametrize("scale", SCALES)
def test_parameter_counts_are_the_papers_layer_shapes(scale):
    pinned = {2: 21_284, 3: 22_729, 4: 24_752}  # ESPCN, channels = 1
    assert _espcn_by_hand(scale) == pinned[scale]
    assert SUPER_RESOLUTION.entry("espcn").metadata["params"][scale] == pinned[scale]
    assert espcn(scale).count_params() == pinned[scale]
    assert espcn(scale, channels=3).count_params() == _espcn_by_hand(scale, 3)

    # SRCNN 9-1-5: Dong et al.'s 8,032 weights plus 64 + 32 + 1 biases, the same at every scale.
    assert _srcnn_weights(9, 1, 5) == 8_032
    assert SUPER_RESOLUTION.entry("srcnn").metadata["weights"] == 8_032
    assert SUPER_RESOLUTION.entry("srcnn").metadata["params"][scale] == 8_032 + 97
    model = srcnn(scale)
    assert model.count_params() == 8_129
    assert sum(int(np.prod(w.shape)) for w in model.weights if w.path.endswith("kernel")) == 8_032
    assert SUPER_RESOLUTION.entry("bicubic").metadata["params"][scale] == bicubic(scale).count_params() == 0


@pytest.mark.parametrize("kernels, weights", [((9, 3, 5), 24_416), ((9, 5, 5), 57_184)])
def test_srcnn_larger_filter_variants_match_the_paper(kernels, weights):
    assert _srcnn_weights(*kernels) == weights
    assert srcnn(3, kernels=kernels).count_params() == weights + 97


def test_layer_names_read_like_the_papers():
    assert [layer.name for layer in espcn(3).layers] == [
        "low_resolution", "espcn_layer1_conv", "espcn_layer1_act", "espcn_layer2_conv", "espcn_layer2_act",
        "espcn_subpixel_conv", "espcn_pixel_shuffle"]
    assert [layer.name for layer in srcnn(3, residual=True).layers] == [
        "low_resolution", "srcnn_bicubic", "srcnn_extraction_conv", "srcnn_extraction_act", "srcnn_mapping_conv",
        "srcnn_mapping_act", "srcnn_reconstruction", "srcnn_residual"]
    layer = espcn(2).get_layer("espcn_layer1_conv")
    assert layer.kernel_size == (5, 5) and layer.filters == 64
    assert espcn(2).get_layer("espcn_layer1_act").get_config()["activation"] == "tanh"
    assert espcn(4).get_layer("espcn_subpixel_conv").filters == 16
    assert srcnn(3).get_layer("srcnn_mapping_conv").kernel_size == (1, 1)


@pytest.mark.parametrize("scale", SCALES)
def test_pixel_shuffle_is_depth_to_space(scale):
    x = _low(2, 3, 4, 2 * scale * scale, seed=scale)
    out = keras.ops.convert_to_numpy(PixelShuffle(scale)(x))
    np.testing.assert_array_equal(out, tf.nn.depth_to_space(x, scale).numpy())
    # by hand: channel (dy * r + dx) * c + k of pixel (y, x) lands on pixel (r y + dy, r x + dx), channel k
    y, x_, dy, dx, k = 2, 1, scale - 1, 0, 1
    assert out[1, scale * y + dy, scale * x_ + dx, k] == x[1, y, x_, (dy * scale + dx) * 2 + k]


def test_bicubic_is_tensorflows_bicubic_resize_and_srcnn_starts_from_it():
    low = _low()
    expected = tf.image.resize(low, (21, 27), method="bicubic").numpy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bicubic(3)(low)), expected, atol=1e-6)
    model = srcnn(3, residual=True)
    reconstruction = model.get_layer("srcnn_reconstruction")
    reconstruction.set_weights([np.zeros_like(w) for w in reconstruction.get_weights()])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(low)), expected, atol=1e-6)


def test_bicubic_taps_are_keys_cubic_at_the_half_pixel_phases():
    # x2, half-pixel centres: output 2i sits at input i - 0.25, so its taps are i-2..i+1 at distances
    # 1.75, 0.75, 0.25, 1.25: Keys (1981) a = -0.5 gives the classic 2x weights below (sum 1).
    (first, second) = bicubic_phase_taps(2)
    assert first == [(-2, -0.0234375), (-1, 0.2265625), (0, 0.8671875), (1, -0.0703125)]
    assert second == [(-offset, weight) for offset, weight in reversed(first)]  # its mirror image about 0
    for scale in (2, 3, 4, 5):
        assert all(sum(w for _, w in taps) == pytest.approx(1.0, abs=1e-6) for taps in bicubic_phase_taps(scale))


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("size", [(1, 1), (2, 5), (7, 9)])
def test_bicubic_layer_equals_tensorflows_resize_at_run_time_sizes(scale, size):
    """Borders included (a one-pixel image is all border), in a graph that knows no sizes until it runs."""
    x = np.random.default_rng(scale).random((2, *size, 3), dtype=np.float32)
    layer = BicubicUpsampling(scale)
    graph = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)])
    expected = tf.image.resize(x, (size[0] * scale, size[1] * scale), method="bicubic").numpy()
    np.testing.assert_allclose(graph(x).numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, atol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_a_saved_model_reloads_in_safe_mode_with_equal_outputs(name, tmp_path):
    assert_save_load_round_trip(SUPER_RESOLUTION.get(name)(scale=3), _low(1, 6, 5), tmp_path)


@pytest.mark.parametrize("name", MODELS)
def test_outputs_are_float32_under_mixed_precision(name, mixed_precision):
    model = SUPER_RESOLUTION.get(name)(scale=2)
    assert model(_low()).dtype == "float32"
    if name != "bicubic":
        assert model.layers[2].compute_dtype == "float16"  # the network itself runs in float16


def test_bad_arguments_are_named():
    for builder in (espcn, srcnn, bicubic):
        for scale in (1, 2.0, True, "3"):
            with pytest.raises(ValueError, match=r"scale must be an integer >= 2 \(the papers report x2, x3"):
                builder(scale)
        with pytest.raises(ValueError, match="channels must be an integer >= 1"):
            builder(3, channels=0)
    with pytest.raises(ValueError, match="three positive kernel sizes and two positive widths"):
        srcnn(3, kernels=(9, 5))
    with pytest.raises(ValueError, match="PixelShuffle scale must be an integer >= 1"):
        PixelShuffle(0)
    with pytest.raises(ValueError, match="multiple of scale\\*\\*2 = 9, got 8"):
        PixelShuffle(3)(np.zeros((1, 2, 2, 8), np.float32))


# --------------------------------------------------------------------------------------- quality

SKIMAGE_SSIM = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)


def _pair(seed=0, shape=(48, 61), noise=12.0):
    rng = np.random.default_rng(seed)
    reference = np.clip(rng.normal(128, 50, shape), 0, 255)
    return reference, np.clip(reference + rng.normal(0, noise, shape), 0, 255)


@pytest.mark.parametrize("border", [0, 2, 4])
def test_psnr_and_ssim_match_scikit_image(border):
    reference, test = _pair(border)
    cropped = (slice(border, reference.shape[0] - border), slice(border, reference.shape[1] - border))
    assert quality.psnr(reference, test, border=border) == pytest.approx(
        peak_signal_noise_ratio(reference[cropped], test[cropped], data_range=255), abs=1e-10)
    assert quality.ssim(reference, test, border=border) == pytest.approx(
        structural_similarity(reference[cropped], test[cropped], **SKIMAGE_SSIM), abs=1e-10)


def test_ssim_matches_scikit_image_on_a_photograph():
    from sklearn.datasets import load_sample_image

    y = quality.rgb_to_y(load_sample_image("flower.jpg")[:200, :300])
    blurred = (y + np.roll(y, 1, 0) + np.roll(y, 1, 1) + np.roll(y, (1, 1), (0, 1))) / 4
    assert quality.ssim(y, blurred, border=3) == pytest.approx(
        structural_similarity(y[3:-3, 3:-3], blurred[3:-3, 3:-3], **SKIMAGE_SSIM), abs=1e-10)


def test_psnr_of_a_known_error_and_of_equal_images():
    reference = np.full((10, 12), 100.0)
    test = reference + np.where(np.indices((10, 12)).sum(0) % 2, 5.0, -5.0)  # MSE exactly 25
    assert quality.psnr(reference, test) == pytest.approx(10 * np.log10(255 ** 2 / 25), abs=1e-12)
    assert quality.psnr(reference / 255, test / 255, data_range=1.0) == pytest.approx(20 * np.log10(255 / 5))
    test[0, :] += 1000.0  # inside a 1-pixel border: cropped away
    assert quality.psnr(reference, test, border=1) == pytest.approx(20 * np.log10(255 / 5), abs=1e-12)
    assert quality.psnr(reference, reference) == np.inf
    ramp = np.add.outer(np.arange(16.0), np.arange(13.0))
    assert quality.ssim(ramp, ramp) == pytest.approx(1.0, abs=1e-12)


def test_batches_give_one_value_per_image():
    pairs = [_pair(seed) for seed in range(3)]
    reference = np.stack([r for r, _ in pairs])[..., np.newaxis]  # [N, H, W, 1] as models output
    test = np.stack([t for _, t in pairs])[..., np.newaxis]
    for metric in (quality.psnr, quality.ssim):
        values = metric(reference, test, border=3)
        assert values.shape == (3,)
        np.testing.assert_allclose(values, [metric(r, t, border=3) for r, t in pairs], rtol=0, atol=1e-12)


def test_rgb_to_y_is_matlabs_rgb2ycbcr_luma():
    pixels = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    np.testing.assert_allclose(quality.rgb_to_y(pixels), [[16.0, 235.0, 16 + 65.481, 16 + 128.553, 16 + 24.966]],
                               atol=1e-12)
    photo = np.random.default_rng(0).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    np.testing.assert_allclose(quality.rgb_to_y(photo), quality.rgb_to_y(photo / 255.0), atol=1e-12)
    np.testing.assert_allclose(quality.rgb_to_y(photo), rgb2ycbcr(photo)[..., 0], atol=1e-10)  # skimage's BT.601


def test_bad_quality_inputs_are_named():
    with pytest.raises(ValueError, match=r"float RGB images must be in \[0, 1\]"):
        quality.rgb_to_y(np.full((2, 2, 3), 200.0))
    with pytest.raises(ValueError, match="3 channels on the last axis"):
        quality.rgb_to_y(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="uint8 in"):
        quality.rgb_to_y(np.zeros((2, 2, 3), np.int32))
    with pytest.raises(ValueError, match="looks like colour images"):
        quality.psnr(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="same shape"):
        quality.psnr(np.zeros((8, 8)), np.zeros((8, 9)))
    with pytest.raises(ValueError, match="border 4 leaves nothing of a 8x8 image"):
        quality.psnr(np.zeros((8, 8)), np.zeros((8, 8)), border=4)
    with pytest.raises(ValueError, match="at least 11x11 pixels after cropping"):
        quality.ssim(np.zeros((16, 16)), np.zeros((16, 16)), border=3)


def test_residual_espcn_adds_the_bicubic_image_and_no_weights():
    """With its sub-pixel convolution zeroed, residual ESPCN returns bicubic upscaling exactly."""
    model = espcn(3, residual=True)
    assert model.count_params() == SUPER_RESOLUTION.entry("espcn").metadata["params"][3]
    conv = model.get_layer("espcn_subpixel_conv")
    conv.set_weights([np.zeros_like(w) for w in conv.get_weights()])
    x = np.random.default_rng(0).random((2, 7, 9, 1)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)),
                               keras.ops.convert_to_numpy(bicubic(3)(x)), atol=1e-6)


def test_srcnn_and_residual_espcn_run_in_a_graph_that_knows_no_image_size():
    """kcnn's evaluation and exported signatures trace models with height and width None (UpSampling2D fails)."""
    x = np.random.default_rng(1).random((1, 6, 8, 1)).astype("float32")
    for model in (srcnn(3), espcn(3, residual=True), bicubic(2)):
        graph = tf.function(lambda t, m=model: m(t), input_signature=[tf.TensorSpec([None, None, None, 1])])
        np.testing.assert_allclose(graph(x).numpy(), keras.ops.convert_to_numpy(model(x)), atol=1e-6)
