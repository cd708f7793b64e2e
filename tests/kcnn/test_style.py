"""Neural style transfer: the losses against hand computation, Gatys optimisation, the fast stylizer network."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

from kcnn import style
from kcnn.style.features import FeatureExtractor

RNG = np.random.default_rng(0)


def test_gram_matrix_equals_the_hand_computation():
    # Gatys et al. 2016, eq. 3: G_ij = sum_k F_ik F_jk over the M = height x width positions.
    features = np.arange(12, dtype="float32").reshape(1, 2, 2, 3)  # 4 positions, 3 channels
    flat = features.reshape(4, 3)
    expected = np.array([[sum(flat[k, i] * flat[k, j] for k in range(4)) for j in range(3)] for i in range(3)])
    np.testing.assert_allclose(np.asarray(style.gram_matrix(features))[0], expected)
    assert expected[0, 0] == 0 + 9 + 36 + 81  # channel 0 holds 0, 3, 6, 9


def test_style_layer_loss_is_eq_4_of_the_paper():
    features = RNG.standard_normal((1, 3, 5, 4)).astype("float32")
    other = RNG.standard_normal((1, 3, 5, 4)).astype("float32")
    gram = np.asarray(style.gram_matrix(other))
    n, m = 4, 15
    expected = np.sum((np.asarray(style.gram_matrix(features)) - gram) ** 2) / (4 * n**2 * m**2)
    assert float(style.style_layer_loss(features, gram)) == pytest.approx(expected, rel=1e-5)


def test_style_loss_is_zero_for_identical_images_and_invariant_to_permuting_positions():
    features = RNG.standard_normal((1, 6, 6, 8)).astype("float32")
    gram = np.asarray(style.gram_matrix(features))
    assert float(style.style_layer_loss(features, gram)) == pytest.approx(0.0, abs=1e-6)
    permuted = features.reshape(1, 36, 8)[:, RNG.permutation(36)].reshape(1, 6, 6, 8)
    assert float(style.style_layer_loss(permuted, gram)) == pytest.approx(0.0, abs=1e-3)
    # ... while the content loss (eq. 1) sees the permutation.
    assert float(style.content_loss(permuted, features)) > 1.0


def test_content_and_total_variation_losses_by_hand():
    a = np.zeros((1, 2, 2, 1), "float32")
    b = np.array([1, 2, 3, 4], "float32").reshape(1, 2, 2, 1)
    assert float(style.content_loss(b, a)) == pytest.approx(0.5 * (1 + 4 + 9 + 16))
    # vertical differences (3-1, 4-2) and horizontal ones (2-1, 4-3): 4 + 4 + 1 + 1
    assert float(style.total_variation_loss(b)) == pytest.approx(10.0)


def _tiny_feature_model():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="c2")(x)
    return keras.Model(inputs, x)


def test_gatys_lbfgs_and_adam_reduce_the_loss_and_stay_in_range():
    photos = style.sample_images()
    model = _tiny_feature_model()
    results = {}
    for optimizer in ("lbfgs", "adam"):
        result = style.transfer(photos["china"], photos["flower"], feature_model=model, content_layers=("c2",),
                                style_layers=("c1", "c2"), size=24, steps=25, optimizer=optimizer,
                                learning_rate=4.0)
        assert result.image.dtype == np.uint8 and result.image.shape == (16, 24, 3)  # 427x640 -> longer side 24
        assert len(result.losses) >= 5
        results[optimizer] = result.reduction
    assert results["lbfgs"] > 10, results
    assert results["adam"] > 2, results


def test_progress_hears_every_iteration_over_all_scales(capsys):
    from pipelines.style_cli import step_reporter

    photos = style.sample_images()
    heard = []
    result = style.transfer(photos["china"], photos["flower"], feature_model=_tiny_feature_model(),
                            content_layers=("c2",), style_layers=("c1", "c2"), size=24, steps=3, scales=2,
                            optimizer="adam", progress=lambda done, total, record: heard.append((done, total, record)))
    assert [(done, total) for done, total, _ in heard] == [(1, 6), (2, 6), (3, 6), (4, 6), (5, 6), (6, 6)]
    assert [record for *_, record in heard] == result.losses
    report = step_reporter("stylize", every_seconds=3600)  # within the hour: only the last step prints
    for done, total, record in heard:
        report(done, total, record)
    last = result.losses[-1]
    assert capsys.readouterr().out.splitlines() == [
        f"stylize: step 6/6: total {last['total']:.4g}, content {last['content']:.4g}, style {last['style']:.4g}, "
        f"tv {last['tv']:.4g} (0 s)"]


def test_the_same_seed_gives_the_same_image_and_noise_init_depends_on_it():
    photos = style.sample_images()
    model = _tiny_feature_model()
    kwargs = dict(feature_model=model, content_layers=("c2",), style_layers=("c1",), size=16, steps=3,
                  optimizer="adam", init="noise")
    first = style.transfer(photos["china"], photos["flower"], seed=1, **kwargs).image
    again = style.transfer(photos["china"], photos["flower"], seed=1, **kwargs).image
    other = style.transfer(photos["china"], photos["flower"], seed=2, **kwargs).image
    np.testing.assert_array_equal(first, again)
    assert np.any(first != other)


def test_colour_preservation_keeps_the_content_chroma():
    photos = style.sample_images()
    model = _tiny_feature_model()
    result = style.transfer(photos["china"], photos["flower"], feature_model=model, content_layers=("c2",),
                            style_layers=("c1",), size=24, steps=5, preserve_color=True)
    from kcnn.style import images

    content = images.resize(images.load_rgb(photos["china"]), *result.image.shape[:2])
    chroma = lambda x: images.to_yiq(x.astype("float32"))[..., 1:]  # noqa: E731
    # Only rounding to uint8 separates the result's I and Q from the content's.
    assert np.abs(chroma(result.image) - chroma(content)).mean() < 1.5


def test_vgg19_feature_network_warns_about_random_weights_and_rejects_unknown_layers():
    with pytest.warns(UserWarning, match="random weights"):
        extractor = style.vgg19_features(("block1_conv1_act", "block2_conv1_act"))
    maps = extractor(np.zeros((1, 32, 32, 3), "float32"))
    assert [tuple(m.shape) for m in maps] == [(1, 32, 32, 64), (1, 16, 16, 128)]
    with pytest.raises(ValueError, match="no layer named 'conv4_2'"):
        FeatureExtractor(extractor.model, ("conv4_2",))


def test_bad_options_are_clear_errors(tmp_path):
    photos = style.sample_images()
    with pytest.raises(ValueError, match="optimizer must be one of lbfgs, adam"):
        style.transfer(photos["china"], photos["flower"], optimizer="sgd")
    with pytest.raises(ValueError, match="does not exist"):
        style.transfer(str(tmp_path / "missing.jpg"), photos["flower"])


def test_johnson_stylizer_shape_parameters_and_round_trip(tmp_path):
    model = style.johnson2016()
    # Johnson et al. 2016 supplementary Table 1 with instance norm (scale and offset per channel):
    # 9x9x3x32+32, 3x3x32x64+64, 3x3x64x128+128, five residual blocks of two 3x3x128x128+128 convs,
    # 3x3x128x64+64, 3x3x64x32+32, 9x9x32x3+3, plus 2 x channels for each of the 14 instance norms.
    convs = (9 * 9 * 3 * 32 + 32) + (3 * 3 * 32 * 64 + 64) + (3 * 3 * 64 * 128 + 128) \
        + 10 * (3 * 3 * 128 * 128 + 128) + (3 * 3 * 128 * 64 + 64) + (3 * 3 * 64 * 32 + 32) + (9 * 9 * 32 * 3 + 3)
    norms = 2 * (32 + 64 + 128 + 10 * 128 + 64 + 32)
    assert model.count_params() == convs + norms == 1_679_235
    image = RNG.uniform(0, 255, (1, 20, 28, 3)).astype("float32")
    out = np.asarray(model(image))
    assert out.shape == (1, 20, 28, 3) and out.min() >= 0 and out.max() <= 255
    path = str(tmp_path / "stylizer.keras")
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(np.asarray(restored(image)), out, atol=1e-4)
    assert "johnson2016" in style.STYLIZERS


def test_reflection_padding_mirrors_without_repeating_the_edge():
    from kcnn.layers import ReflectionPadding2D

    row = np.array([1, 2, 3], "float32").reshape(1, 1, 3, 1)
    padded = np.asarray(ReflectionPadding2D((0, 2))(row))[0, 0, :, 0]
    np.testing.assert_array_equal(padded, [3, 2, 1, 2, 3, 2, 1])


def test_perceptual_loss_trains_the_stylizer_with_fit():
    keras.utils.set_random_seed(0)
    stylizer = style.johnson2016(filters=(8, 8, 8), residual_blocks=1)
    extractor = FeatureExtractor(_tiny_feature_model(), ("c2", "c1", "c2"))
    style_image = style.sample_images()["flower"][::16, ::16].astype("float32")
    loss = style.compile_for_style(stylizer, style_image, extractor=extractor, learning_rate=1e-3)
    content = RNG.uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    history = stylizer.fit(content, content, batch_size=4, epochs=30, verbose=0).history["loss"]
    assert np.mean(history[-5:]) < 0.5 * history[0], history
    parts = loss.parts(content, stylizer(content))
    assert set(parts) == {"content", "style", "tv"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isfinite(float(sum(parts.values())))


def test_vgg19_features_load_a_keras_applications_checkpoint(tmp_path):
    # The documented path for real stylisation (weights= a file, or "imagenet" fetched to the same loader)
    # crashed with AttributeError: kcnn.weights had no load_backbone_weights. keras.applications' VGG-19 with
    # random weights, saved in its published files' legacy .h5 layout, is the other side's definition.
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    reference = keras.applications.VGG19(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = str(tmp_path / "vgg19_notop.h5")
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, reference)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no random-weights warning once weights are given
        extractor = style.vgg19_features(("block3_conv4_act",), weights=path)
    images = RNG.uniform(-50, 50, (2, 32, 32, 3)).astype("float32")
    expected = keras.Model(reference.inputs, reference.get_layer("block3_conv4").output)(images)
    got = extractor.model(images)
    got = got[0] if isinstance(got, (list, tuple)) else got
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-4, atol=1e-3)
