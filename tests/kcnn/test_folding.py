"""Batch norm folded into the convolution before it (kcnn.compress.fold_batch_norm): the same function."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import randomise_statistics

import kcnn
from kcnn.compress import fold_batch_norm, foldable_pairs


@pytest.mark.parametrize("name, folds", [("convnet", 3), ("resnet18", 20), ("mobilenet_v2", 52)])
def test_folding_removes_every_batch_norm_after_a_convolution_and_keeps_the_outputs(name, folds):
    keras.utils.set_random_seed(0)
    model = randomise_statistics(kcnn.build(name, num_classes=5, input_shape=(32, 32, 3)))
    folded = fold_batch_norm(model)
    assert len(foldable_pairs(model)) == folds  # every BN of these networks follows a conv (depthwise too)
    assert not any(type(layer).__name__ == "BatchNormalization" for layer in folded.layers)
    images = np.random.default_rng(1).normal(size=(3, 32, 32, 3)).astype("float32")
    expected, got = (keras.ops.convert_to_numpy(m(images, training=False)) for m in (model, folded))
    assert np.abs(got - expected).max() < 1e-5
    # A batch norm holds 4 values per channel; folding keeps one (the bias) for convolutions that had none.
    bns = [layer for layer in model.layers if type(layer).__name__ == "BatchNormalization"]
    assert model.count_params() - folded.count_params() == sum(3 * layer.moving_mean.shape[0] for layer in bns)


def test_only_a_batch_norm_reading_a_plain_convolution_alone_is_folded(tmp_path):
    inputs = keras.Input((8, 8, 2))
    activated = keras.layers.Conv2D(3, 3, activation="relu", name="activated")(inputs)  # BN after ReLU: no
    a = keras.layers.BatchNormalization(name="after_relu")(activated)
    shared = keras.layers.Conv2D(3, 3, name="shared")(inputs)  # its output also read elsewhere: no
    b = keras.layers.BatchNormalization(name="shared_bn")(shared)
    plain = keras.layers.Conv2D(3, 3, use_bias=False, name="plain")(inputs)
    c = keras.layers.BatchNormalization(name="plain_bn")(plain)
    added = keras.layers.Add()([a, b, c, shared])
    pre = keras.layers.BatchNormalization(name="pre_activation")(added)  # after an addition: no
    model = randomise_statistics(keras.Model(inputs, pre))
    assert foldable_pairs(model) == {"plain_bn": "plain"}
    folded = fold_batch_norm(model)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 2)).astype("float32")
    assert np.abs(keras.ops.convert_to_numpy(folded(x)) - keras.ops.convert_to_numpy(model(x))).max() < 1e-5
    path = str(tmp_path / "folded.keras")
    folded.save(path)
    import kcnn.layers  # noqa: F401  (FoldedBatchNorm is registered there, as every saved kcnn layer)

    reloaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(reloaded(x)), keras.ops.convert_to_numpy(folded(x)),
                               atol=1e-6)
