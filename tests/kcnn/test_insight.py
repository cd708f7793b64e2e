"""kcnn.insight: exact results on hand-built models, and measured ones on a small CNN trained on `shapes`."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kcnn import insight
from kcnn.analysis import analyze


def normalise(pixels):
    return (pixels.astype("float32") / 255.0 - 0.5) / 0.5


def shapes_cnn():
    """A plain functional CNN (not one of kcnn's registered models): 32x32 RGB -> 3 shape classes."""
    inputs = keras.Input((32, 32, 3))
    x = inputs
    for i, width in enumerate((16, 32, 64), start=1):
        x = keras.layers.Conv2D(width, 3, padding="same", name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
        if i < 3:
            x = keras.layers.MaxPooling2D(name=f"pool{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="shapes_cnn")


@pytest.fixture(scope="module")
def trained():
    """The shapes CNN after a short training (about 20 s on two cores); held-out test split with masks."""
    from pipelines.shapes import load_split

    keras.utils.set_random_seed(0)
    train_x, train_y, _ = load_split("train", 32)
    test_x, test_y, test_masks = load_split("test", 32)
    model = shapes_cnn()
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(normalise(train_x), train_y, epochs=EPOCHS, batch_size=32, verbose=0)
    inputs = normalise(test_x)
    correct = np.where(insight.graph.predict(model, inputs).argmax(-1) == test_y)[0]
    return model, inputs, test_y, test_masks, correct


EPOCHS = 16


# --- exact behaviour on hand-built models -------------------------------------------------------------

def linear_model():
    inputs = keras.Input((4, 4, 1))
    outputs = keras.layers.Dense(2, name="scores")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Activation("softmax", name="probabilities")(outputs))


def test_saliency_of_a_linear_model_is_its_weights_before_softmax():
    model = linear_model()
    weights = np.arange(32, dtype="float32").reshape(16, 2) - 16
    model.get_layer("scores").set_weights([weights, np.zeros(2, "float32")])
    grad, classes = insight.input_gradients(model, np.ones((4, 4, 1), "float32"), class_index=1)
    # d(logit_1)/dx is column 1 of the kernel exactly: the softmax is skipped.
    np.testing.assert_allclose(grad[0, ..., 0].ravel(), weights[:, 1])
    assert classes.tolist() == [1]
    saliency = insight.saliency(model, np.ones((4, 4, 1), "float32"), class_index=1)[0]
    expected = np.abs(weights[:, 1]).reshape(4, 4)
    np.testing.assert_allclose(saliency, (expected - expected.min()) / (expected.max() - expected.min()), atol=1e-6)


def test_scores_skip_a_softmax_fused_into_the_last_layer():
    inputs = keras.Input((4, 4, 1))
    outputs = keras.layers.Dense(2, activation="softmax", name="scores")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    weights = np.arange(32, dtype="float32").reshape(16, 2) - 16
    model.get_layer("scores").set_weights([weights, np.zeros(2, "float32")])
    image = np.ones((1, 4, 4, 1), "float32")
    logits = keras.ops.convert_to_numpy(insight.scores(model, image))
    np.testing.assert_allclose(logits, [[-16.0, 0.0]])  # the columns' sums, not softmax's [1e-7, 1]
    grad, _ = insight.input_gradients(model, image, class_index=0)
    np.testing.assert_allclose(grad[0, ..., 0].ravel(), weights[:, 0])
    assert model.get_layer("scores").activation.__name__ == "softmax"  # restored after the call


def test_score_tensor_skips_a_final_softmax_and_last_conv_layer_is_found():
    model = linear_model()
    assert insight.score_tensor(model) is model.get_layer("scores").output
    cnn = shapes_cnn()
    assert insight.last_conv_layer(cnn).name == "conv3"
    assert insight.first_conv_layer(cnn).name == "conv1"


def test_unknown_layer_names_the_layers_there_are():
    with pytest.raises(ValueError, match=r"no layer named 'conv9' in model 'shapes_cnn'; its layers are: "
                                         r"input_layer.*, conv1, bn1"):
        insight.grad_cam(shapes_cnn(), np.zeros((32, 32, 3), "float32"), layer="conv9")


def test_grad_cam_weights_maps_by_their_mean_gradient():
    """Score = mean over positions of (2 * map0 - map1): Grad-CAM = relu(2/N * map0 - 1/N * map1)."""
    inputs = keras.Input((4, 4, 2))
    features = keras.layers.Conv2D(2, 1, use_bias=False, name="features")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    model = keras.Model(inputs, keras.layers.Dense(1, use_bias=False, name="score")(pooled))
    model.get_layer("features").set_weights([np.eye(2, dtype="float32")[None, None]])
    model.get_layer("score").set_weights([np.array([[2.0], [-1.0]], "float32")])
    image = np.random.default_rng(0).random((4, 4, 2)).astype("float32")
    activations, grad, _ = insight.activation_gradients(model, "features", image, class_index=0)
    np.testing.assert_allclose(grad[0], np.broadcast_to([2 / 16, -1 / 16], (4, 4, 2)), atol=1e-7)
    expected = np.maximum(2 / 16 * image[..., 0] - 1 / 16 * image[..., 1], 0)
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    np.testing.assert_allclose(insight.grad_cam(model, image, 0, layer="features")[0], expected, atol=1e-6)


def test_occlusion_finds_the_only_region_the_model_reads():
    """A model that scores the sum of a 4x4 window: occluding it, and only it, lowers the score."""
    inputs = keras.Input((16, 16, 1))
    window = keras.layers.Cropping2D(((4, 8), (8, 4)))(inputs)  # rows 4..7, columns 8..11
    score = keras.layers.Dense(1, use_bias=False, name="score")(keras.layers.Flatten()(window))
    model = keras.Model(inputs, score)
    model.get_layer("score").set_weights([np.ones((16, 1), "float32")])
    heat = insight.occlusion(model, np.ones((16, 16, 1), "float32"), class_index=0, patch=4, stride=1, fill=0.0)[0]
    row, column = np.unravel_index(heat.argmax(), heat.shape)
    assert 4 <= row <= 7 and 8 <= column <= 11
    assert heat[12:, :].max() == 0 and heat[:, :4].max() == 0


def valid_cnn():
    inputs = keras.Input((20, 20, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inputs)
    x = keras.layers.MaxPooling2D(2, name="p1")(x)
    x = keras.layers.Conv2D(5, 3, name="c2")(x)
    x = keras.layers.ReLU(name="r2")(x)
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x)))


@pytest.mark.parametrize("method", [insight.deconvnet, insight.guided_backprop])
def test_projection_stays_inside_the_units_receptive_field(method):
    keras.utils.set_random_seed(3)
    model = valid_cnn()
    image = np.random.default_rng(0).normal(size=(20, 20, 3)).astype("float32")
    layer = analyze(model).layer("r2")
    (field_h, field_w), (jump_h, jump_w) = layer.receptive_field, layer.jump
    assert (field_h, jump_h) == (8, 2)  # 3x3 conv (3), 2x2 pool (3 + 1), 3x3 conv at jump 2 (4 + 2 * 2)
    for unit in range(5):
        reconstruction, (row, column) = method(model, "r2", unit, image)
        assert reconstruction.shape == image.shape
        inside = np.zeros(image.shape[:2], bool)
        inside[row * jump_h:row * jump_h + field_h, column * jump_w:column * jump_w + field_w] = True
        assert np.abs(reconstruction[~inside]).max() == 0
        assert np.abs(reconstruction[inside]).max() > 0


def test_top_projections_are_a_units_strongest_images_cropped_to_its_field():
    """Zeiler and Fergus (2014), section 4 and figure 2: a unit's top 9 activations over a set of images, one
    per image, each projection shown with the patch of the image inside the unit's receptive field."""
    keras.utils.set_random_seed(3)
    model = valid_cnn()
    images = np.random.default_rng(1).normal(size=(12, 20, 20, 3)).astype("float32")
    maps = keras.ops.convert_to_numpy(keras.Model(model.inputs, model.get_layer("r2").output)(images))[..., 1]
    found = insight.top_projections(model, "r2", 1, images, k=9)
    strongest = maps.reshape(12, -1).max(axis=1)
    assert [f["index"] for f in found] == list(np.argsort(-strongest, kind="stable")[:9])
    for item in found:
        assert item["activation"] == pytest.approx(strongest[item["index"]], rel=1e-5)
        assert item["patch"].shape == item["projection"].shape == (8, 8, 3)  # the field: 8 pixels (analysis)
        full, position = insight.deconvnet(model, "r2", 1, images[item["index"]])
        assert position == item["position"]
        # The window holds the whole projection, and the patch is the image under it.
        assert np.abs(item["projection"]).sum() == pytest.approx(np.abs(full).sum(), rel=1e-6)
        rows, cols = np.nonzero(np.abs(full).sum(-1))
        top, left = min(rows.min(), 12), min(cols.min(), 12)
        np.testing.assert_array_equal(item["patch"], images[item["index"]][top:top + 8, left:left + 8])


def test_pointing_game_counts_a_hit_on_the_object_or_within_the_tolerance():
    """Zhang et al. (2016), section 5.1: a hit when the map's maximum lies on the object or within 15 pixels."""
    mask = np.zeros((20, 20), bool)
    mask[5:8, 5:8] = True
    heat = np.zeros((20, 20))
    heat[6, 6] = 1.0
    assert insight.pointing_hit(heat, mask)
    heat[6, 6], heat[6, 11] = 0.0, 1.0  # four pixels right of the object's edge (column 7)
    assert not insight.pointing_hit(heat, mask)
    assert not insight.pointing_hit(heat, mask, tolerance=3.9) and insight.pointing_hit(heat, mask, tolerance=4)
    assert not insight.pointing_hit(heat, np.zeros_like(mask), tolerance=15)


def test_coarse_to_fine_ascent_steps_through_octaves_and_upsamples_exactly():
    from kcnn.insight.features import _Upsample

    up = _Upsample((5, 7), (12, 16))
    rng = np.random.default_rng(0)
    small, large = rng.normal(size=(5, 7, 2)), rng.normal(size=(12, 16, 2))
    assert up(small).shape == (12, 16, 2)
    assert np.sum(up(small) * large) == pytest.approx(np.sum(small * up.adjoint(large)), rel=1e-5)  # the adjoint
    np.testing.assert_allclose(up(np.ones((5, 7, 2))), 1.0, rtol=1e-6)  # interpolation weights sum to one
    keras.utils.set_random_seed(0)
    model = shapes_cnn()
    image, history = insight.maximize_activation(model, None, 1, steps=7, octaves=3, norm_percentile=50,
                                                 blur_sigma=1.0, l2_decay=1e-2)
    assert image.shape == (32, 32, 3) and len(history) == 8
    objective = insight.unit_objective(model, None, 1)
    assert float(keras.ops.convert_to_numpy(objective(image[None]))) == pytest.approx(history[-1], rel=1e-4)
    with pytest.raises(ValueError, match=r"octaves must be a positive integer, got 0"):
        insight.maximize_activation(model, None, 1, steps=1, octaves=0)


def test_deconvnet_and_guided_rectify_the_signal_where_backprop_passes_it():
    """Two ReLU maps (all-ones 3x3 filters) read by a 1x1 conv with weights (2, -1). Projecting its centre unit
    (value 2*9 - 9 = 9) sends 18 to map 0 and -9 to map 1; both ReLUs were active, so backprop passes -9 and
    gives 18 - 9 = 9 on the 3x3 window, while the deconvnet and guided backprop rectify it and give 18."""
    inputs = keras.Input((5, 5, 1))
    first = keras.layers.Conv2D(2, 3, padding="same", use_bias=False, activation="relu", name="first")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1, use_bias=False, name="second")(first))
    model.get_layer("first").set_weights([np.ones((3, 3, 1, 2), "float32")])
    model.get_layer("second").set_weights([np.array([2.0, -1.0], "float32").reshape(1, 1, 2, 1)])
    image = np.ones((5, 5, 1), "float32")
    window = np.zeros((5, 5, 1), "float32")
    window[1:4, 1:4] = 1.0
    _, (plain,) = insight.attribution.value_and_grad(lambda t: 9.0 * model(t)[0, 2, 2, 0], image[None])
    np.testing.assert_allclose(plain[0], 9.0 * window)
    for method in (insight.deconvnet, insight.guided_backprop):
        reconstruction, position = method(model, "second", 0, image, position=(2, 2))
        assert position == (2, 2)
        np.testing.assert_allclose(reconstruction, 18.0 * window)


def test_a_model_pruned_while_training_is_explained_like_a_dense_one():
    """Pruning while training replaces Conv2D by kcnn's MaskedConv2D: still a convolution for insight."""
    from kcnn import compress

    keras.utils.set_random_seed(0)
    model = compress.prune(shapes_cnn(), {"conv*": 0.5}, one_shot=False)
    assert type(model.get_layer("conv3")).__name__ == "MaskedConv2D"
    assert insight.last_conv_layer(model).name == "conv3"
    grid = insight.filters(model)  # conv1's 16 RGB filters, as masked
    assert len(grid) == 16
    heat = insight.grad_cam(model, np.random.default_rng(0).normal(size=(32, 32, 3)).astype("float32"))
    assert heat.shape == (1, 32, 32)


def test_filters_tiles_and_activations_order():
    model = shapes_cnn()
    first = insight.filters(model)
    assert first.tiles.shape == (16, 3, 3, 3) and len(first.labels) == 16
    assert first.tiles.min() >= 0 and first.tiles.max() <= 1
    deeper = insight.filters(model, "conv2", max_channels=4)
    assert deeper.tiles.shape == (32 * 4, 3, 3, 1) and deeper.columns == 4
    image = np.random.default_rng(0).normal(size=(32, 32, 3)).astype("float32")
    grid = insight.activations(model, "relu2", image, top_k=5)
    maps = keras.Model(model.inputs[0], model.get_layer("relu2").output)(image[None]).numpy()[0]
    strongest = np.argsort(-maps.mean((0, 1)), kind="stable")[:5]
    assert [label.split()[1] for label in grid.labels] == [str(c) for c in strongest]
    assert insight.tile_image(grid.tiles, grid.columns).shape == (2 * 17 - 1, 3 * 17 - 1, 3)  # 16x16 maps, 3 + 2


# --- measured on a trained model ----------------------------------------------------------------------

@pytest.mark.slow
def test_grad_cam_points_at_the_shape_and_deletion_beats_random(trained):
    model, inputs, labels, masks, correct = trained
    assert len(correct) >= 0.9 * len(labels)  # the model has learned the task
    cams = insight.grad_cam(model, inputs[correct])
    hits = np.mean([insight.pointing_hit(cam, masks[i]) for cam, i in zip(cams, correct)])
    area = np.mean(masks[correct] > 0)  # chance of a random point landing on the shape
    print(f"pointing game: {hits:.3f} of {len(correct)} correctly classified; random point {area:.3f}")
    assert hits >= 0.8 and hits > 4 * area
    # Deletion over the first quarter of the pixels (a shape covers at most ~28% of the image), 48 images.
    rng = np.random.default_rng(0)
    salient, random = [], []
    for cam, i in list(zip(cams, correct))[:48]:
        salient.append(insight.area_under(insight.deletion_curve(model, inputs[i], cam, labels[i], up_to=0.25)))
        order = rng.permutation(32 * 32)
        random.append(insight.area_under(insight.deletion_curve(model, inputs[i], None, labels[i], up_to=0.25,
                                                                order=order)))
    print(f"deletion AUC (0-25%): Grad-CAM {np.mean(salient):.3f}, random {np.mean(random):.3f}")
    assert np.mean(salient) < np.mean(random) - 0.05


@pytest.mark.slow
def test_activation_maximisation_climbs_above_real_images(trained):
    model, inputs, *_ = trained
    objective = insight.unit_objective(model, "relu3", 0)
    real = keras.ops.convert_to_numpy(
        keras.Model(model.inputs[0], model.get_layer("relu3").output)(inputs)[..., 0]).mean(axis=(1, 2))
    # 80 steps and these margins: the trained model differs with the machine's float round-off (with oneDNN on
    # or off, the unit reached 1.69 or 2.50 after 40 steps, the best real image 1.05); after 80 steps 2.14 or
    # 3.05, largest drop 12% or 13% of the climb.
    image, history = insight.maximize_activation(model, "relu3", 0, steps=80, jitter=1, l2_decay=1e-3,
                                                 value_range=(-1.0, 1.0))
    assert image.shape == (32, 32, 3) and len(history) == 81
    assert float(keras.ops.convert_to_numpy(objective(image[None]))) == pytest.approx(history[-1], rel=1e-4)
    drops = np.maximum(history[:-1] - history[1:], 0)
    assert drops.max() <= 0.15 * (history.max() - history.min())  # rises monotonically within jitter noise
    assert history[-1] > 1.5 * real.max()


def test_filters_of_a_trained_digits_model_differ_from_initialisation():
    from sklearn.datasets import load_digits

    import kcnn

    keras.utils.set_random_seed(0)
    digits = load_digits()
    images = np.kron(digits.images, np.ones((4, 4)))[..., None].astype("float32") / 16.0
    model = kcnn.build("lenet5", num_classes=10)
    before = insight.filters(model)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "sparse_categorical_crossentropy")
    model.fit(images[:512], digits.target[:512], epochs=1, batch_size=32, verbose=0)
    after = insight.filters(model)
    assert len(before) == len(after) == 6  # LeNet-5's C1: six 5x5 filters, grey tiles
    assert after.tiles.shape == (6, 5, 5, 1)
    assert np.abs(after.tiles - before.tiles).mean() > 0.01
    assert len(insight.filters(model, "c3_conv")) == 16 * 6
