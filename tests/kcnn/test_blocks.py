"""Blocks: shapes, channel arithmetic, layer names, and the rules each paper states."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kcnn import blocks
from kcnn.layers import LocalResponseNormalization


def model_of(block, input_shape=(16, 16, 32), **kwargs):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, block(inputs, **kwargs))


@pytest.mark.parametrize("value, divisor, expected", [(32 * 0.5, 8, 16), (24 * 0.35, 8, 8), (100, 8, 104),
                                                       (1280 * 1.4, 8, 1792), (3, 8, 8), (17, 8, 16)])
def test_make_divisible(value, divisor, expected):
    assert blocks.make_divisible(value, divisor) == expected


def test_make_divisible_never_rounds_down_more_than_ten_percent():
    for value in range(1, 2000):
        rounded = blocks.make_divisible(value * 0.75, 8)
        assert rounded % 8 == 0 and rounded >= 0.9 * value * 0.75


def test_activation_lookup_by_name_callable_and_error():
    assert blocks.get_activation("relu6") is keras.activations.relu6
    assert blocks.get_activation(np.tanh) is np.tanh
    assert blocks.get_activation(None) is None
    with pytest.raises(ValueError, match="unknown activation 'relu7'; use a Keras activation name"):
        blocks.get_activation("relu7")


def test_conv_bn_act_names_padding_and_bias():
    model = model_of(blocks.conv_bn_act, filters=8, kernel_size=5, strides=2, padding=2, weight_decay=1e-4, name="c")
    assert [layer.name for layer in model.layers[1:]] == ["c_pad", "c_conv", "c_bn", "c_act"]
    assert model.output_shape == (None, 8, 8, 8)  # (16 - 5 + 4) / 2 + 1 = 8
    conv = model.get_layer("c_conv")
    assert conv.use_bias is False  # batch norm's beta makes a bias redundant
    assert conv.kernel_regularizer.l2 == pytest.approx(1e-4)
    assert conv.get_config()["kernel_initializer"]["class_name"] == "HeNormal"
    dilated = model_of(blocks.conv_bn_act, filters=4, kernel_size=3, padding="valid", dilation=2, name="d")
    assert dilated.output_shape == (None, 12, 12, 4)  # effective kernel 5


def test_fire_module_concatenates_expand_layers():
    model = model_of(blocks.fire, input_shape=(13, 13, 96), squeeze=16, expand1x1=64, expand3x3=64, name="fire2")
    assert model.output_shape == (None, 13, 13, 128)
    assert model.count_params() == 11_920  # SqueezeNet Table 1, fire2
    names = {layer.name for layer in model.layers}
    assert {"fire2_squeeze1x1_conv", "fire2_expand1x1_conv", "fire2_expand3x3_conv", "fire2_concat"} <= names


def test_fire_bypass_adds_identity_and_refuses_mismatched_widths():
    model = model_of(blocks.fire, input_shape=(8, 8, 128), squeeze=16, expand1x1=64, expand3x3=64, bypass=True,
                     name="fire3")
    assert isinstance(model.layers[-1], keras.layers.Add)
    with pytest.raises(ValueError, match=r"simple bypass needs as many input channels \(96\) as output channels"):
        model_of(blocks.fire, input_shape=(8, 8, 96), squeeze=16, expand1x1=64, expand3x3=64, bypass=True, name="f")


def test_depthwise_separable_parameters():
    model = model_of(blocks.depthwise_separable, input_shape=(16, 16, 32), filters=64, strides=2, name="ds")
    # 3*3*32 depthwise + 4*32 BN + 32*64 pointwise + 4*64 BN (MobileNet v1, Fig. 3)
    assert model.count_params() == 288 + 128 + 2048 + 256
    assert model.output_shape == (None, 8, 8, 64)


def test_inverted_residual_adds_shortcut_only_when_shapes_match():
    same = model_of(blocks.inverted_residual, input_shape=(8, 8, 24), filters=24, strides=1, name="b")
    assert any(isinstance(layer, keras.layers.Add) for layer in same.layers)
    strided = model_of(blocks.inverted_residual, input_shape=(8, 8, 24), filters=24, strides=2, name="b")
    assert not any(isinstance(layer, keras.layers.Add) for layer in strided.layers)
    assert same.get_layer("b_expand_conv").filters == 144  # expansion 6
    assert "b_project_act" not in {layer.name for layer in same.layers}  # linear bottleneck


def test_residual_blocks_project_when_shape_changes():
    basic = model_of(blocks.residual_basic, input_shape=(8, 8, 64), filters=128, strides=2, name="r")
    assert "r_shortcut_conv" in {layer.name for layer in basic.layers}
    assert basic.output_shape == (None, 4, 4, 128)
    identity = model_of(blocks.residual_bottleneck, input_shape=(8, 8, 256), filters=64, name="r")
    assert "r_shortcut_conv" not in {layer.name for layer in identity.layers}
    assert identity.output_shape == (None, 8, 8, 256)


def test_dense_block_and_transition_channel_arithmetic():
    model = model_of(blocks.dense_block, input_shape=(8, 8, 64), num_layers=6, growth_rate=32, name="d")
    assert model.output_shape == (None, 8, 8, 64 + 6 * 32)  # DenseNet-121 block 1: 256
    inputs = keras.Input((8, 8, 256))
    assert blocks.transition(inputs, 0.5, name="t").shape == (None, 4, 4, 128)


def test_inception_3a_output_channels():
    model = model_of(blocks.inception, input_shape=(28, 28, 192), filters_1x1=64, reduce_3x3=96, filters_3x3=128,
                     reduce_5x5=16, filters_5x5=32, pool_proj=32, name="i3a")
    assert model.output_shape == (None, 28, 28, 256)  # GoogLeNet Table 1, inception (3a)


def test_squeeze_excite_gates_channels():
    model = model_of(blocks.squeeze_excite, input_shape=(8, 8, 32), ratio=0.25, name="se")
    assert model.output_shape == (None, 8, 8, 32)
    assert model.get_layer("se_reduce").filters == 8


def test_local_response_normalization_matches_the_paper_formula():
    x = np.random.default_rng(0).normal(size=(1, 2, 2, 7)).astype("float32") * 10
    layer = LocalResponseNormalization(size=5, k=2.0, alpha=1e-4, beta=0.75)
    got = np.asarray(layer(x))
    expected = np.empty_like(x)
    for c in range(7):
        window = x[..., max(0, c - 2): min(7, c + 3)]
        expected[..., c] = x[..., c] / (2.0 + 1e-4 * np.sum(window ** 2, axis=-1)) ** 0.75
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    with pytest.raises(ValueError, match="odd integer"):
        LocalResponseNormalization(size=4)
