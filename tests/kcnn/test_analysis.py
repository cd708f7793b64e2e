"""Convolution arithmetic and model analysis against hand-worked examples and published figures."""

from __future__ import annotations

import json

import keras
import pytest
from conftest import fast_or_slow

import kcnn
from kcnn import analysis, blocks
from kcnn.analysis import FilterDoesNotFit, analyze


# --- calculators ------------------------------------------------------------------------------------------

def test_lenet_c1_hand_worked():
    """LeCun et al. 1998, section II.B: C1 has 156 trainable parameters and 122,304 connections."""
    cost = analysis.conv2d_cost(32, 32, 1, 6, kernel=5)
    assert cost.output_shape == (28, 28, 6)  # (32 - 5 + 0) / 1 + 1
    assert cost.params == 156  # (5*5*1 + 1) * 6
    assert cost.weights_per_filter == 25
    assert cost.neurons == 4_704
    assert cost.connections == 122_304
    assert cost.multiplications == cost.macs == 28 * 28 * 5 * 5 * 1 * 6 == 117_600
    assert cost.additions == 28 * 28 * (5 * 5 - 1) * 1 * 6 == 112_896
    assert cost.bias_additions == 28 * 28 * 6
    assert cost.flops == 235_200


def test_lenet_c5_and_f6_connections_equal_parameters():
    """LeCun et al. 1998: C5 has 48,120 connections (= parameters, 1x1 output); F6 has 10,164."""
    assert analysis.conv2d_cost(5, 5, 16, 120, kernel=5).connections == 48_120
    assert analysis.dense_cost(120, 84).params == 10_164


def test_alexnet_conv1_hand_worked():
    """224x224x3, 96 filters 11x11, stride 4, padding 2: (224 - 11 + 4) / 4 + 1 = 55.25, floored to 55."""
    assert analysis.conv_output_size(224, 11, 4, 2) == 55
    assert analysis.conv_output_size(227, 11, 4, 0) == 55  # the 227 that makes it exact
    cost = analysis.conv2d_cost(224, 224, 3, 96, kernel=11, stride=4, padding=2)
    assert cost.params == (11 * 11 * 3 + 1) * 96 == 34_944
    assert cost.macs == 55 * 55 * 11 * 11 * 3 * 96 == 105_415_200
    assert not analysis.fits(224, 11, 4, 2)
    with pytest.raises(FilterDoesNotFit, match=r"\(224 - 11 \+ 4\) / 4 \+ 1 = 55.25 is not an integer"):
        analysis.conv_output_size(224, 11, 4, 2, strict=True)


def test_vgg_3x3_stride1_pad1_keeps_size():
    assert analysis.conv_output_size(224, 3, 1, 1) == 224
    assert analysis.conv_output_size(224, 3, 1, "same") == 224
    assert analysis.same_padding(3) == (1, 1)
    assert analysis.conv2d_cost(224, 224, 64, 64, 3, 1, 1).params == 36_928  # VGG block1_conv2
    assert analysis.pool_output_size(224, 2, 2) == 112


def test_filter_that_does_not_fit():
    """7x7 input, 3x3 filter, stride 3, no padding: (7 - 3) / 3 + 1 = 2.33."""
    assert analysis.conv_output_size(7, 3, 3, 0) == 2  # what Keras builds (floor)
    with pytest.raises(FilterDoesNotFit) as error:
        analysis.conv_output_size(7, 3, 3, 0, strict=True)
    message = str(error.value)
    assert "filter does not fit" in message
    assert "use padding=1 on each side" in message
    assert analysis.conv_output_size(7, 3, 3, 1, strict=True) == 3  # the suggestion works
    with pytest.raises(FilterDoesNotFit, match="must be at least 5 wide"):
        analysis.conv_output_size(3, 5, 1, "valid")


def test_dilation_full_padding_and_transposed_convolution():
    assert analysis.effective_kernel(3, 2) == 5  # F + (F - 1)(d - 1)
    assert analysis.effective_kernel(3, 4) == 9
    assert analysis.conv_output_size(32, 3, 1, "valid", dilation=2) == 28
    assert analysis.conv_output_size(32, 3, 1, "full") == 34
    assert analysis.transposed_conv_output_size(4, 4, 2, 1) == 8  # S(I - 1) + F - 2P
    assert analysis.transposed_conv_output_size(7, 16, 8, "same") == 56
    assert analysis.same_padding(4) == (1, 2)
    with pytest.raises(ValueError, match="padding must be"):
        analysis.conv_output_size(7, 3, 1, "reflect")


def test_depthwise_pointwise_separable_grouped_dense():
    dw = analysis.depthwise_cost(112, 112, 32, 3, 1, "same")
    assert dw.params == 288 and dw.macs == 112 * 112 * 9 * 32
    pw = analysis.pointwise_cost(112, 112, 32, 64)
    assert pw.macs == 112 * 112 * 32 * 64
    sep = analysis.separable_cost(112, 112, 32, 64, 3, 1, "same")
    assert sep.macs == dw.macs + pw.macs and sep.params == 288 + 2048
    grouped = analysis.conv2d_cost(56, 56, 64, 128, 3, 1, "same", groups=4, bias=False)
    assert grouped.params == 3 * 3 * 16 * 128
    assert analysis.dense_cost(4096, 1000).macs == 4_096_000
    with pytest.raises(ValueError, match="groups"):
        analysis.conv2d_cost(8, 8, 10, 16, groups=4)


def test_separable_and_fire_against_standard_convolution():
    """MobileNet (Howard et al. 2017, eq. 5): separable / standard cost = 1/N + 1/D_K^2."""
    result = analysis.compare_convolutions(14, 14, 512, 512, kernel=3)
    assert result["depthwise_separable"]["macs_ratio"] == pytest.approx(1 / 512 + 1 / 9)
    assert result["standard"]["macs"] == 14 * 14 * 9 * 512 * 512
    fire = result["fire"]
    assert fire["config"] == {"squeeze": 64, "expand1x1": 256, "expand3x3": 256}
    assert fire["params"] == 512 * 64 + 64 * 256 + 9 * 64 * 256
    assert fire["params_ratio"] < 0.1


# --- analyze() -------------------------------------------------------------------------------------------

def test_three_stacked_3x3_convolutions_see_7x7():
    """Simonyan and Zisserman 2015, section 2.3: three 3x3 layers have a 7x7 effective receptive field."""
    inputs = keras.Input((32, 32, 3))
    x = inputs
    for i in range(3):
        x = keras.layers.Conv2D(8, 3, padding="same", name=f"c{i}")(x)
    report = analyze(keras.Model(inputs, x))
    assert [layer.receptive_field for layer in report.layers] == [(3, 3), (5, 5), (7, 7)]
    assert report.layers[-1].jump == (1, 1)


def test_receptive_field_and_jump_through_strides_and_dilation():
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="a")(inputs)
    x = keras.layers.MaxPooling2D(2, name="p")(x)
    x = keras.layers.Conv2D(8, 3, dilation_rate=2, padding="same", name="b")(x)
    report = analyze(keras.Model(inputs, x))
    assert report.layer("a").receptive_field == (3, 3) and report.layer("a").jump == (2, 2)
    assert report.layer("p").receptive_field == (5, 5) and report.layer("p").jump == (4, 4)
    assert report.layer("b").receptive_field == (5 + 4 * 4, 5 + 4 * 4)  # effective kernel 5, jump 4


def test_users_branching_model_with_fire_inception_and_residual_blocks():
    inputs = keras.Input((33, 33, 3))
    x = blocks.conv_bn_act(inputs, 32, 3, 2, padding="valid", name="stem")  # (33 - 3) / 2 + 1 = 16
    x = blocks.fire(x, 8, 16, 16, bypass=True, name="fire")
    x = blocks.inception(x, 8, 8, 16, 4, 8, 8, name="inc")
    x = blocks.residual_basic(x, 40, name="res")
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(10, name="fc")(x)
    model = keras.Model(inputs, outputs, name="mine")
    report = analyze(model)
    assert report.total_params == model.count_params()
    assert report.trainable_params + report.non_trainable_params == model.count_params()
    assert report.layer("fire_concat").output_shape == (16, 16, 32)
    # stem: RF 3, jump 2; the 3x3 expand adds (3 - 1) * 2
    assert report.layer("fire_bypass").receptive_field == (7, 7)
    assert report.layer("inc_concat").receptive_field == (15, 15)  # the 5x5 branch dominates: 7 + 4 * 2
    assert report.layer("res_add").receptive_field == (23, 23)  # two more 3x3 convolutions
    assert report.layer("inc_concat").macs == 0
    assert report.layer("fc").macs == 40 * 10
    expected_macs = sum(layer.macs for layer in report.layers)
    assert report.total_macs == expected_macs and report.flops == 2 * expected_macs
    assert report.layer("gap").receptive_field[0] >= 33  # a pooled unit sees the whole image
    assert report.mismatches == []


def test_flags_a_filter_that_does_not_fit_and_strict_mode_raises():
    inputs = keras.Input((7, 7, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3, strides=3, name="odd")(inputs))
    report = analyze(model)
    assert report.layer("odd").output_shape == (2, 2, 2)
    assert "filter does not fit along height" in report.layer("odd").notes[0]
    with pytest.raises(FilterDoesNotFit, match="use padding=1 on each side"):
        analyze(model, strict=True)


@pytest.mark.parametrize("name", fast_or_slow(kcnn.list_backbones()))
def test_formula_shapes_agree_with_keras_and_every_layer_is_analysed_for_every_registered_model(name):
    channels = kcnn.backbones.BACKBONES.entry(name).metadata["input_shape"][2]
    size = 67 if channels == 3 else 32  # odd: many layers floor, which the formulas must reproduce
    report = analyze(kcnn.build(name, num_classes=10, input_shape=(size, size, channels)))
    assert report.not_analysed == [], name  # every layer kcnn's own models use has a formula
    for layer in report.layers:
        assert not any("but Keras built" in note for note in layer.notes), (name, layer.name, layer.notes)


def test_variable_size_model_needs_an_input_shape_and_sequential_and_nested_models_work():
    model = kcnn.build("squeezenet1_1", num_classes=10, input_shape=(None, None, 3))
    with pytest.raises(ValueError, match=r"pass input_shape=\(height, width, channels\)"):
        analyze(model)
    assert analyze(model, input_shape=(64, 64, 3)).layer("conv1_conv").output_shape == (31, 31, 64)
    sequential = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 3), keras.layers.Flatten(),
                                   keras.layers.Dense(10)])
    assert analyze(sequential).total_macs == 26 * 26 * 9 * 4 + 26 * 26 * 4 * 10
    backbone = kcnn.backbones.lenet5()
    wrapper = keras.Sequential([keras.Input((32, 32, 1)), keras.Model(backbone.inputs, backbone.outputs[-1]),
                                keras.layers.Flatten(), keras.layers.Dense(10)])
    nested = analyze(wrapper)
    assert nested.total_params == wrapper.count_params()
    assert nested.layers[0].receptive_field == (32, 32)  # C5 sees the whole 32x32 input


# --- published totals -------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "name, low, high, source",
    [
        ("mobilenet_v1", 566e6, 572e6, "Howard et al. 2017, Table 8: 569 million mult-adds at 224, alpha 1.0"),
        ("mobilenet_v2", 297e6, 303e6, "Sandler et al. 2018, Table 4: 300 million multiply-adds at 224"),
        ("vgg16", 15.3e9, 15.6e9, "about 15.5 billion multiply-adds (He et al. 2016, Table 3 discussion)"),
        ("resnet50", 3.8e9, 4.1e9, "He et al. 2016, Table 1: 3.8 x 10^9 FLOPs (multiply-adds)"),
        ("googlenet", 1.5e9, 1.6e9, "Szegedy et al. 2015, section 5: about 1.5 billion multiply-adds"),
    ],
)
def test_total_macs_match_the_papers(name, low, high, source):
    report = analyze(kcnn.build(name))
    assert low <= report.total_macs <= high, source


def test_squeezenet_table1_output_sizes():
    """Iandola et al. 2016, Table 1, output size column (input 227x227, the size Table 1's 111 implies)."""
    table1 = {"conv1_conv": (111, 111, 96), "maxpool1": (55, 55, 96), "fire2_concat": (55, 55, 128),
              "fire3_concat": (55, 55, 128), "fire4_concat": (55, 55, 256), "maxpool4": (27, 27, 256),
              "fire5_concat": (27, 27, 256), "fire6_concat": (27, 27, 384), "fire7_concat": (27, 27, 384),
              "fire8_concat": (27, 27, 512), "maxpool8": (13, 13, 512), "fire9_concat": (13, 13, 512),
              "conv_scores": (13, 13, 1000), "head_pool": (1000,)}
    report = analyze(kcnn.build("squeezenet1_0"))
    for name, shape in table1.items():
        assert report.layer(name).output_shape == shape, name
    assert report.mismatches == []


def test_json_contract():
    report = analyze(kcnn.build("lenet5", num_classes=10))
    data = json.loads(analysis.render(report, "json"))
    assert {"model", "input_shape", "layers", "total_params", "trainable_params", "total_macs"} <= set(data)
    assert data["model"] == "lenet5" and data["input_shape"] == [32, 32, 1]
    assert data["total_params"] == 61_706 and data["total_macs"] == report.total_macs
    first = data["layers"][0]
    assert {"name", "type", "kernel", "strides", "padding", "dilation", "input_shape", "output_shape", "params",
            "macs", "receptive_field"} <= set(first)
    assert first["name"] == "c1_conv" and first["kernel"] == [5, 5] and first["output_shape"] == [28, 28, 6]
    assert first["macs"] == 117_600 and first["receptive_field"] == [5, 5]


def test_text_formats_render_every_layer():
    report = analyze(kcnn.build("squeezenet1_1", num_classes=10, input_shape=(64, 64, 3)))
    table = analysis.render(report, "table")
    assert max(len(line) for line in table.splitlines()) <= 100
    assert "fire9_expand3x3_conv" in table and "params 7" in table
    assert "Flagged layers" in table and "maxpool" in table  # 64x64 leaves pools that do not tile
    markdown = analysis.render(report, "markdown")
    assert markdown.count("\n| ") == len(report.layers) + 1
    csv_text = analysis.render(report, "csv")
    assert len(csv_text.strip().splitlines()) == len(report.layers) + 1
    with pytest.raises(ValueError, match="choose one of table, markdown, csv, json"):
        analysis.render(report, "xml")


def test_subclassed_model_gets_a_clear_error():
    class Custom(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="subclassed model"):
        analyze(Custom())
