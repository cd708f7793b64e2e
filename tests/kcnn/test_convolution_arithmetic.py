"""Convolution arithmetic as the course teaches it, checked against its sources and against what Keras builds.

Sources: the course notes' worked examples (LeNet C1, AlexNet conv1, the DQN, the
28x28x128 -> 32 3x3 example), the papers they come from, and Dumoulin & Visin,
"A guide to convolution arithmetic for deep learning" (2016), whose fifteen
numbered relationships (1-6 convolution, 7 pooling, 8-14 transposed, 15 dilated)
are checked here one by one, each with the example its figure draws.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from keras import layers

from kcnn import analysis
from kcnn.analysis import analyze, worked_examples


def keras_length(*stack, size: int, channels: int = 1) -> int:
    """The length Keras computes (eagerly, on the backend) for a 1-D input of ``size`` through ``stack``."""
    x = np.zeros((1, size, channels), "float32")
    for layer in stack:
        x = layer(x)
    return int(x.shape[1])


# --- Dumoulin & Visin: convolution, pooling and dilation (relationships 1-7, 15) --------------------------

GUIDE_CONVOLUTIONS = [
    # (relationship, i, k, s, p, d, o): p is pixels per side, "same" (half) or "full"
    (1, 4, 3, 1, 0, 1, 2),  # no padding, unit strides: o = i - k + 1
    (2, 5, 4, 1, 2, 1, 6),  # zero padding, unit strides: o = i - k + 2p + 1
    (3, 5, 3, 1, "same", 1, 5),  # half padding: o = i
    (4, 5, 3, 1, "full", 1, 7),  # full padding: o = i + k - 1
    (5, 5, 3, 2, 0, 1, 2),  # no padding, strides: o = floor((i - k) / s) + 1
    (6, 5, 3, 2, 1, 1, 3),  # padding and strides: o = floor((i + 2p - k) / s) + 1
    (6, 6, 3, 2, 1, 1, 3),  # ... the odd case of its figure: 6 + 2 - 3 = 5 is not a multiple of 2
    (15, 7, 3, 1, 0, 2, 3),  # dilation: o = floor((i + 2p - k - (k - 1)(d - 1)) / s) + 1
]


@pytest.mark.parametrize("relationship, i, k, s, p, d, o", GUIDE_CONVOLUTIONS)
def test_guide_convolution_relationships_against_keras(relationship, i, k, s, p, d, o):
    assert analysis.conv_output_size(i, k, s, p, d) == o, f"relationship {relationship}"
    assert analysis.conv1d_cost(i, 1, 1, k, s, p, d).output_shape == (o, 1)
    pixels = k - 1 if p == "full" else 0 if p == "same" else p
    padding = "same" if p == "same" else "valid"
    built = keras_length(layers.ZeroPadding1D(pixels), layers.Conv1D(1, k, strides=s, padding=padding,
                                                                       dilation_rate=d), size=i)
    assert built == o, f"relationship {relationship}: Keras built {built}"


def test_guide_pooling_relationship_7():
    """o = floor((i - k) / s) + 1 for any pooling; the guide's figure pools 5x5 with 3x3 windows, stride 1."""
    assert analysis.pool_output_size(5, 3, 1) == 3
    for pool in (layers.MaxPooling1D(3, strides=1), layers.AveragePooling1D(3, strides=1)):
        assert keras_length(pool, size=5) == 3
    cost = analysis.pool_cost((5, 5), 1, 3, 1, kind="max")
    assert cost.output_shape == (3, 3, 1) and cost.pooling_ops == 9 * 8 and cost.macs == 0


# --- Dumoulin & Visin: transposed convolution (relationships 8-14) -----------------------------------------

GUIDE_TRANSPOSED = [
    # (relationship, the direct convolution's i, k, s, p, then a, and the transposed output o' = i)
    (8, 4, 3, 1, 0, 0),  # o' = i' + (k - 1)
    (9, 5, 4, 1, 2, 0),  # o' = i' + (k - 1) - 2p
    (10, 5, 3, 1, 1, 0),  # half padding: o' = i'
    (11, 5, 3, 1, 2, 0),  # full padding: o' = i' - (k - 1)
    (12, 5, 3, 2, 0, 0),  # o' = s(i' - 1) + k
    (13, 5, 3, 2, 1, 0),  # o' = s(i' - 1) + k - 2p
    (14, 6, 3, 2, 1, 1),  # o' = s(i' - 1) + a + k - 2p, a = (i + 2p - k) mod s
]


@pytest.mark.parametrize("relationship, i, k, s, p, a", GUIDE_TRANSPOSED)
def test_guide_transposed_relationships_against_keras(relationship, i, k, s, p, a):
    """Each transposed convolution gives back its direct convolution's input size, as the guide derives."""
    i_t = analysis.conv_output_size(i, k, s, p)  # the transposed convolution's input i'
    assert a == (i + 2 * p - k) % s
    assert analysis.transposed_conv_output_size(i_t, k, s, p, a) == i, f"relationship {relationship}"
    # The guide's equivalent direct convolution: the input stretched by s - 1 zeros between units, padded
    # with k - p - 1 on each side and a more at the end, convolved at unit stride.
    stretched = i_t + (i_t - 1) * (s - 1)
    assert analysis.conv_output_size(stretched + a, k, 1, k - p - 1) == i
    # Keras: a valid transposed convolution (output_padding = a), cropped by p on each side.
    built = keras_length(layers.Conv1DTranspose(1, k, strides=s, output_padding=a or None),
                         layers.Cropping1D(p), size=i_t)
    assert built == i, f"relationship {relationship}: Keras built {built}"


def test_guide_named_padding_forms_of_the_transposed_relationships():
    """Relationships 8, 10 and 11 in the calculators' named forms: valid (p = 0), same (half), full."""
    assert analysis.transposed_conv_output_size(2, 3, 1, "valid") == 4
    assert analysis.transposed_conv_output_size(5, 3, 1, "same") == 5
    assert analysis.transposed_conv_output_size(7, 3, 1, "full") == 5
    assert keras_length(layers.Conv1DTranspose(1, 3, padding="same"), size=5) == 5


# --- Keras' named paddings, with and without output_padding, and dilation ----------------------------------

def _transposed_cases():
    for padding in ("valid", "same"):
        for k in (1, 2, 3, 4, 5):
            for s in (1, 2, 3):
                for output_padding in (None, *range(s)):
                    yield padding, k, s, output_padding, 1
        for k, d in ((2, 2), (2, 3), (3, 2), (4, 2)):  # Keras allows dilation only at stride 1 (output_padding 0)
            for output_padding in (None, 0):
                yield padding, k, 1, output_padding, d


def test_transposed_output_size_matches_keras_for_every_named_padding():
    """The shape Keras gives the layer in a model and, where TensorFlow can run the layer, the one it computes.

    TensorFlow's CPU kernel runs no dilated transposed convolution, and none with "same" padding, an even
    kernel and output_padding=0: Keras builds (i - 1)s for those, which its backend then refuses.
    """
    for padding, k, s, output_padding, d in _transposed_cases():
        for i in (1, 4, 7):
            layer = layers.Conv1DTranspose(1, k, strides=s, padding=padding, output_padding=output_padding,
                                           dilation_rate=d)
            expected = analysis.transposed_conv_output_size(i, k, s, padding, output_padding, d)
            case = (i, padding, k, s, output_padding, d)
            assert layer(keras.Input((i, 1))).shape[1] == expected, case
            if d == 1 and not (padding == "same" and k % 2 == 0 and output_padding == 0):
                assert keras_length(layer, size=i) == expected, case
    # the two forms the old calculator got wrong
    assert analysis.transposed_conv_output_size(7, 3, 2, "same", output_padding=0) == 13  # (i - 1)s + k % 2 + a
    assert analysis.transposed_conv_output_size(7, 2, 3, "valid", output_padding=1) == 21  # (i - 1)s + k + a
    with pytest.raises(ValueError, match="output_padding must be an integer from 0 to stride - 1 = 1"):
        analysis.transposed_conv_output_size(7, 3, 2, "same", output_padding=2)


@pytest.mark.parametrize("i, k, s, padding, output_padding, d", [
    (4, 3, 2, "valid", None, 1), (4, 3, 2, "same", None, 1), (4, 4, 2, "same", 1, 1), (3, 2, 3, "valid", None, 1),
    (5, 3, 1, "same", None, 2), (6, 2, 1, "same", None, 3), (6, 3, 1, "valid", 0, 2), (4, 5, 2, "valid", 1, 1),
    (5, 4, 3, "same", 2, 1),
])
def test_transposed_cost_counts_the_products_keras_adds_up(i, k, s, padding, output_padding, d):
    """With every weight and input 1, each output of Keras' transposed convolution is the number of products
    summed into it; the calculator's multiplications and additions must agree (padding crops included).
    A dilated kernel runs as the undilated kernel of its effective size with zeros between the taps."""
    channels = 2
    k_eff = analysis.effective_kernel(k, d)
    layer = layers.Conv1DTranspose(1, k_eff, strides=s, padding=padding, output_padding=output_padding,
                                   use_bias=False)
    layer.build((1, i, channels))
    taps = np.zeros((k_eff, 1, channels), "float32")
    taps[::d] = 1.0
    layer.set_weights([taps])
    products = np.asarray(layer(np.ones((1, i, channels), "float32")))[0, :, 0].round().astype(int)
    cost = analysis.transposed_conv_cost((i,), channels, 1, k, s, padding, output_padding, d, bias=False)
    assert cost.output_shape == (len(products), 1)
    assert cost.multiplications == products.sum()
    assert cost.additions == np.maximum(products - 1, 0).sum()


def test_analyze_writes_no_false_notes_on_transposed_convolutions():
    inputs = keras.Input((9, 9, 4))
    x = layers.Conv2DTranspose(4, 3, strides=2, padding="same", output_padding=0, name="same_a0")(inputs)
    x = layers.Conv2DTranspose(4, 4, strides=(2, 3), padding="valid", output_padding=(1, 2), name="valid_a")(x)
    report = analyze(keras.Model(inputs, x))
    assert report.mismatches == []
    assert report.layer("same_a0").output_shape == (17, 17, 4)  # (9 - 1) * 2 + 3 % 2 + 0
    assert report.layer("valid_a").output_shape == (37, 54, 4)  # (17 - 1) * (2, 3) + 4 + (1, 2)
    assert report.layer("same_a0").jump == (0.5, 0.5) and report.layer("valid_a").jump == (0.25, 0.5 / 3)
    inputs = keras.Input((9, 1))
    x = layers.Conv1DTranspose(1, 3, dilation_rate=2, padding="same", name="dilated")(inputs)
    x = layers.Conv1DTranspose(1, 3, dilation_rate=3, padding="valid", output_padding=0, name="dilated_valid")(x)
    report = analyze(keras.Model(inputs, x))
    assert report.mismatches == []
    assert report.layer("dilated_valid").output_shape == (9 + 6, 1)
    # a dilated transposed 3-tap kernel spreads over its effective 5 (d = 2), then 7 (d = 3) positions
    assert report.layer("dilated").receptive_field == (5,) and report.layer("dilated_valid").receptive_field == (11,)


# --- the course notes' worked examples ---------------------------------------------------------------------

def test_lenet_c1():
    """LeCun et al. 1998, section II.B: C1 has 156 trainable parameters and 122,304 connections; the notes count
    26 weights per filter (25 + bias) and 4,704 neurons (28 x 28 x 6)."""
    cost = analysis.conv2d_cost(32, 32, 1, 6, kernel=5)
    row = analyze(worked_examples.lenet_c1()).layer("c1")
    for counts in (cost, row):
        assert (counts.weights_per_unit, counts.params, counts.neurons, counts.connections) == (26, 156, 4_704,
                                                                                               122_304)
    assert row.output_shape == cost.output_shape == (28, 28, 6)
    assert cost.weights_per_filter == 25  # the same count without the bias


def test_alexnet_conv1_and_overlapping_pooling():
    """Krizhevsky et al. 2012: conv1 has 96 kernels of 11x11x3 at stride 4 (section 3.5) giving 55x55x96 (the size
    227 gives); pooling overlaps with z = 3, s = 2 (section 3.4). The notes: 364 weights per filter, 34,944
    parameters, 290,400 neurons, 105,705,600 connections."""
    cost = analysis.conv2d_cost(227, 227, 3, 96, kernel=11, stride=4)
    report = analyze(worked_examples.alexnet_conv1())
    for counts in (cost, report.layer("conv1")):
        assert counts.weights_per_unit == 364 and counts.params == 34_944
        assert counts.neurons == 290_400 and counts.connections == 105_705_600
        assert counts.multiplications == 105_415_200
    pool = analysis.pool_cost((55, 55), 96, 3, 2)
    assert pool.output_shape == report.layer("pool1").output_shape == (27, 27, 96)  # (55 - 3) / 2 + 1
    assert pool.pooling_ops == report.layer("pool1").pooling_ops == 27 * 27 * 96 * 8  # 8 comparisons per window
    assert report.layer("pool1").macs == 0 and report.total_pooling_ops == 559_872
    assert report.layer("pool1").receptive_field == (19, 19)  # 11 + (3 - 1) * 4: neighbouring windows overlap


DQN_LAYERS = {  # name: (output, weights per unit, params, neurons, connections)
    "conv1": ((20, 20, 32), 257, 8_224, 12_800, 3_289_600),
    "conv2": ((9, 9, 64), 513, 32_832, 5_184, 2_659_392),
    "conv3": ((7, 7, 64), 577, 36_928, 3_136, 1_809_472),
    "fc4": ((512,), 3_137, 1_606_144, 512, 1_606_144),
    "q_values": ((18,), 513, 9_234, 18, 9_234),
}


def test_dqn_layer_by_layer():
    """Mnih et al. 2015, Methods: 84x84x4 input; 32 filters 8x8 stride 4, 64 4x4 stride 2, 64 3x3 stride 1, 512
    rectifier units, one output per action (18 for the full Atari action set)."""
    report = analyze(worked_examples.dqn(18))
    calculators = {
        "conv1": analysis.conv2d_cost(84, 84, 4, 32, 8, 4),
        "conv2": analysis.conv2d_cost(20, 20, 32, 64, 4, 2),
        "conv3": analysis.conv2d_cost(9, 9, 64, 64, 3, 1),
        "fc4": analysis.dense_cost(7 * 7 * 64, 512),
        "q_values": analysis.dense_cost(512, 18),
    }
    for name, (shape, per_unit, params, neurons, connections) in DQN_LAYERS.items():
        for counts in (calculators[name], report.layer(name)):
            assert (counts.weights_per_unit, counts.params, counts.neurons, counts.connections) == (
                per_unit, params, neurons, connections), name
        assert report.layer(name).output_shape == calculators[name].output_shape == shape
    assert report.total_params == 1_693_362
    assert report.total_macs == sum(c.macs for c in calculators.values()) == 9_352_192
    assert report.layer("conv3").receptive_field == (36, 36)  # 8, then + 3 * 4, then + 2 * 8


def test_28x28x128_to_32_with_3x3_and_its_bottleneck():
    """The notes: 32 filters of 3x3 on 28x28x128 without padding give 26x26x32; (F^2 - 1) accumulations
    26 * 26 * 8 * 128 * 32 = 22,151,168 and 21,632 bias sums. The exercise puts a 1x1 convolution to 16
    channels first."""
    cost = analysis.conv2d_cost(28, 28, 128, 32, 3)
    row = analyze(worked_examples.conv3x3_28x28x128()).layer("conv3x3")
    for counts in (cost, row):
        assert counts.accumulations_notes == 22_151_168
        assert counts.bias_additions == 21_632
        assert counts.multiplications == 26 * 26 * 32 * 9 * 128 == 24_920_064
        assert counts.additions == 21_632 * (9 * 128 - 1)  # the complete count adds the 127 channel sums too
    reduce = analysis.conv2d_cost(28, 28, 128, 16, 1)
    conv = analysis.conv2d_cost(28, 28, 16, 32, 3)
    bottleneck = analyze(worked_examples.bottleneck_28x28x128(16))
    assert reduce.multiplications == bottleneck.layer("reduce1x1").multiplications == 1_605_632
    assert conv.multiplications == bottleneck.layer("conv3x3").multiplications == 3_115_008
    assert bottleneck.total_macs == 4_720_640  # 5.3 times fewer than 24,920,064
    assert reduce.accumulations_notes == 0 and reduce.additions == 28 * 28 * 16 * 127  # (1 - 1) leaves out all


def test_guide_dilated_and_transposed_examples_through_analyze():
    dilated = analyze(worked_examples.guide_dilated()).layer("dilated")
    assert dilated.output_shape == (3, 3, 1) and dilated.receptive_field == (5, 5)  # effective kernel 3 + 2
    strided = analyze(worked_examples.guide_transposed())
    assert strided.layer("down").output_shape == (2, 2, 1) and strided.layer("up").output_shape == (5, 5, 1)
    assert strided.mismatches == []
    assert strided.layer("up").multiplications == 2 * 2 * 9  # valid: every product lands in the output
    odd = analyze(worked_examples.guide_transposed_odd())
    assert odd.layer("down").output_shape == (3, 3, 1) and odd.layer("crop").output_shape == (6, 6, 1)
    assert all("filter does not fit" in note for note in odd.layer("down").notes)  # the guide's a = 1 case
    assert not any("Keras built" in note for layer in odd.layers for note in layer.notes)


def test_timeseries_model_in_1d():
    """kcnn's 1-D example: 128 steps x 3 channels; every count by hand."""
    report = analyze(worked_examples.timeseries())
    assert report.layer("conv1").output_shape == analysis.conv1d_cost(128, 3, 16, 5).output_shape == (124, 16)
    assert report.layer("conv1").macs == 124 * 5 * 3 * 16
    assert report.layer("pool1").output_shape == (62, 16) and report.layer("pool1").pooling_ops == 62 * 16
    conv2 = analysis.conv1d_cost(62, 16, 32, 3, dilation=2)
    assert report.layer("conv2").output_shape == conv2.output_shape == (58, 32)  # effective kernel 5
    assert report.layer("conv2").macs == conv2.macs == 58 * 3 * 16 * 32
    assert report.layer("classes").macs == 32 * 4
    assert report.total_macs == 29_760 + 89_088 + 128 == 118_976
    assert [report.layer(n).receptive_field for n in ("conv1", "pool1", "conv2")] == [(5,), (6,), (14,)]
    assert report.layer("conv2").jump == (2,)
    assert report.layer("gap").pooling_ops == 32 * 57
    assert report.total_params == worked_examples.timeseries().count_params() == 1_956


# --- every layer family, unknown layers, the JSON contract -------------------------------------------------

def test_model_mixing_1d_2d_and_3d_layers():
    sequence, image, volume = keras.Input((32, 2)), keras.Input((17, 17, 3)), keras.Input((8, 8, 8, 1))
    s = layers.Conv1D(4, 3, padding="causal", name="s_conv")(sequence)
    s = layers.DepthwiseConv1D(4, strides=2, depth_multiplier=2, name="s_dw")(s)
    s = layers.SeparableConv1D(6, 3, padding="same", name="s_sep")(s)
    s = layers.AveragePooling1D(2, padding="same", name="s_pool")(s)
    s = layers.Conv1DTranspose(4, 3, strides=2, name="s_up")(s)
    s = layers.GlobalMaxPooling1D(name="s_gmp")(s)
    m = layers.Conv2D(4, 3, strides=2, name="m_conv")(image)
    m = layers.SeparableConv2D(8, 3, padding="same", name="m_sep")(m)
    m = layers.GlobalAveragePooling2D(name="m_gap")(m)
    v = layers.Conv3D(4, 3, name="v_conv")(volume)
    v = layers.MaxPooling3D(2, name="v_pool")(v)
    v = layers.Conv3DTranspose(2, 2, strides=2, name="v_up")(v)
    v = layers.AveragePooling3D(2, strides=1, name="v_avg")(v)
    v = layers.GlobalAveragePooling3D(name="v_gap")(v)
    outputs = layers.Dense(3, name="fc")(layers.Concatenate(name="merge")([s, m, v]))
    model = keras.Model([sequence, image, volume], outputs)
    report = analyze(model)
    assert report.mismatches == [] and report.not_analysed == []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        assert report.layer(layer.name).output_shape == tuple(layer.output.shape[1:]), layer.name
    assert report.total_params == model.count_params()
    assert report.layer("s_conv").macs == 32 * 3 * 2 * 4
    assert report.layer("s_dw").output_shape == (15, 8) and report.layer("s_dw").macs == 15 * 4 * 8
    assert report.layer("s_sep").macs == 15 * (3 * 8 + 8 * 6)
    assert report.layer("v_conv").macs == 6 ** 3 * 27 * 1 * 4
    assert report.layer("v_up").macs == 3 ** 3 * 8 * 4 * 2  # valid, stride = kernel: every product lands once
    assert report.layer("v_pool").pooling_ops == 3 ** 3 * 4 * 7
    assert report.layer("s_pool").pooling_ops == 7 * 6 * 1 + 1 * 6 * 0  # the last window holds one value
    assert [len(report.layer(n).receptive_field) for n in ("s_up", "m_sep", "v_avg")] == [1, 2, 3]
    assert report.layer("v_pool").receptive_field == (4, 4, 4) and report.layer("v_pool").jump == (2, 2, 2)
    assert report.layer("s_dw").receptive_field == (6,) and report.layer("s_dw").jump == (2,)
    # at the merge the branch with the most axes wins: v_avg sees 5 (4 + 1 at jump 1 after the transposed
    # convolution), global pooling adds (5 - 1) * 1
    assert report.layer("merge").receptive_field == (9, 9, 9)


def test_an_unknown_layer_is_reported_not_counted_as_zero():
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 3, name="conv")(inputs)
    x = layers.Lambda(lambda t: t * 2.0, name="mystery")(x)
    outputs = layers.Dense(2, name="fc")(layers.Flatten()(x))
    report = analyze(keras.Model(inputs, outputs))
    mystery = report.layer("mystery")
    assert not mystery.analysed and mystery.macs is None and mystery.multiplications is None
    assert "not analysed: kcnn has no formula for Lambda" in mystery.notes[0]
    assert report.not_analysed == ["mystery"]
    data = json.loads(analysis.render(report, "json"))
    assert data["not_analysed"] == ["mystery"] and data["total_macs_complete"] is False
    assert data["layers"][1]["macs"] is None and data["layers"][1]["analysed"] is False
    assert data["total_macs"] == 14 * 14 * 27 * 8 + 14 * 14 * 8 * 2  # what is known, flagged incomplete
    table = analysis.render(report, "table")
    assert "MACs unknown: at least 45,472, 1 layer(s) not analysed (mystery)" in " ".join(table.split())
    assert [line.split()[4] for line in table.splitlines() if line.startswith("mystery")] == ["?"]  # MACs


def test_json_contract_keeps_its_keys_and_adds_the_notes_counts():
    report = analyze(worked_examples.lenet_c1())
    data = json.loads(analysis.render(report, "json"))
    layer = data["layers"][0]
    assert layer["params"] == 156 and layer["macs"] == 117_600 and layer["receptive_field"] == [5, 5]
    assert {key: layer[key] for key in ("neurons", "connections", "weights_per_unit", "multiplications", "additions",
                                        "accumulations_notes", "bias_additions", "pooling_ops")} == {
        "neurons": 4_704, "connections": 122_304, "weights_per_unit": 26, "multiplications": 117_600,
        "additions": 4_704 * 24, "accumulations_notes": 4_704 * 24, "bias_additions": 4_704, "pooling_ops": 0}
    assert data["total_macs_complete"] is True and data["not_analysed"] == []


def test_columns_choose_what_the_table_shows():
    report = analyze(worked_examples.dqn())
    table = analysis.render(report, "table", columns="name,weights_per_unit,connections")
    header = table.splitlines()[2].split()
    assert header == ["name", "w/unit", "connections"]
    assert "conv1" in table and "3,289,600" in table and "257" in table
    markdown = analysis.render(report, "markdown", columns=["name", "neurons"])
    assert "| name | neurons |" in markdown and "| conv2 | 5,184 |" in markdown
    with pytest.raises(ValueError, match="unknown column.s. flops; choose from name, type"):
        analysis.render(report, "table", columns="name,flops")


def test_calculators_accept_full_and_causal_padding():
    assert analysis.conv2d_cost(5, 5, 1, 1, 3, padding="full").output_shape == (7, 7, 1)
    assert analysis.conv3d_cost(4, 4, 4, 2, 3, 3, padding="full").output_shape == (6, 6, 6, 3)
    assert analysis.conv1d_cost(10, 1, 1, 3, 2, padding="causal").output_shape == (5, 1)
    assert keras_length(layers.Conv1D(1, 3, strides=2, padding="causal"), size=10) == 5
    assert analysis.transposed_conv_output_size(5, 3, 2, "full") == 7  # s(i - 1) - k + 2


def test_summary_of_a_saved_1d_model_at_another_length_and_a_misspelt_column(tmp_path, capsys):
    from kcnn import cli

    path = str(tmp_path / "timeseries.keras")
    worked_examples.timeseries().save(path)
    assert cli.main(["summary", "--model", path, "--input-size", "64", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["input_shape"] == [64, 3] and data["layers"][0]["output_shape"] == [60, 16]
    assert data["layers"][0]["macs"] == 60 * 5 * 3 * 16
    assert cli.main(["summary", "--model", path, "--columns", "name,bogus"]) == 2
    assert capsys.readouterr().err.strip() == (
        "kcnn summary: error: unknown column(s) bogus; choose from name, type, kernel, strides, padding, dilation, "
        "output, params, macs, rf, jump, activations, neurons, connections, weights_per_unit, multiplications, "
        "additions, accumulations_notes, bias_additions, pooling_ops")
