"""The newer families against their papers' figures and against keras.applications built with weights=None.

Parameter comparisons: same total and trainable counts and the same multiset of weight
shapes. The deliberate difference: keras.applications' EfficientNet puts a Normalization
layer in the model (mean and variance of 3 channels plus a count: 7 non-trainable values,
shapes (3,), (3,), ()); kcnn normalises in the input pipeline instead. MobileNet v3's
keras.applications head applies 1x1 convolutions to the pooled vector where kcnn uses
Dense layers (same values, kernel shape (1, 1, c, k) against (c, k)), so those shapes are
compared with the unit dimensions squeezed out.
"""

from __future__ import annotations

from collections import Counter

import keras
import numpy as np
import pytest

import kcnn
from kcnn.analysis import analyze
from kcnn.backbones.efficientnet import round_filters, round_repeats

KERAS_PREPROCESSING = Counter({(3,): 2, (): 1})  # EfficientNet's Normalization layer: mean, variance, count


def weight_shapes(model, squeeze=False) -> Counter:
    if squeeze:
        return Counter(tuple(d for d in w.shape if d != 1) for w in model.weights)
    return Counter(tuple(w.shape) for w in model.weights)


def trainable(model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def slow_unless(fast):
    """Parametrise over names; those not in ``fast`` are marked slow (CI still runs them)."""
    return lambda names: [n if n in fast else pytest.param(n, marks=pytest.mark.slow) for n in names]


# --- EfficientNet ---------------------------------------------------------------------------------

@pytest.mark.parametrize("index", slow_unless({0})(list(range(8))))
def test_efficientnet_matches_keras_applications(index):
    ours = kcnn.build(f"efficientnet_b{index}", input_shape=(64, 64, 3))
    theirs = getattr(keras.applications, f"EfficientNetB{index}")(weights=None, input_shape=(64, 64, 3))
    assert ours.count_params() == theirs.count_params() - 7
    assert trainable(ours) == trainable(theirs)
    assert weight_shapes(ours) + KERAS_PREPROCESSING == weight_shapes(theirs)


def test_efficientnet_b0_paper_table2_figures():
    """Tan and Le 2019, Table 2: EfficientNet-B0 has 5.3M parameters and 0.39B FLOPs (multiply-adds)."""
    report = analyze(kcnn.build("efficientnet_b0"))
    assert round(report.trainable_params / 1e6, 1) == 5.3
    assert report.total_macs == pytest.approx(0.39e9, rel=0.03)


def test_compound_scaling_rounds_like_the_reference_implementation():
    # Widths go to the nearest multiple of 8, never more than 10% down; depths round up.
    assert [round_filters(32, w) for w in (1.0, 1.1, 1.2, 1.4, 1.6, 1.8, 2.0)] == [32, 32, 40, 48, 48, 56, 64]
    assert [round_filters(1280, w) for w in (1.1, 1.8)] == [1408, 2304]
    assert [round_repeats(r, 3.1) for r in (1, 2, 3, 4)] == [4, 7, 10, 13]
    b3 = kcnn.backbones.efficientnet_b3(input_shape=(32, 32, 3))
    assert b3.get_layer("stem_conv").filters == 40
    assert b3.get_layer("top_conv").filters == 1536
    # ceil(1.4 * n) for the stage depths 1, 2, 2, 3, 3, 4, 1: 2 + 3 + 3 + 5 + 5 + 6 + 2
    assert sum(1 for layer in b3.layers if layer.name.endswith("_project_conv")) == 26


def test_drop_connect_rate_grows_linearly_with_block_index():
    model = kcnn.backbones.efficientnet_b0(input_shape=(32, 32, 3), drop_connect_rate=0.4)
    rates = {layer.name: layer.rate for layer in model.layers if layer.name.endswith("_drop")}
    # 16 blocks; block b (from 0) drops with 0.4 * b / 16; only blocks with an identity shortcut have one.
    assert rates["block2b_drop"] == pytest.approx(0.4 * 2 / 16)
    assert rates["block6d_drop"] == pytest.approx(0.4 * 14 / 16)
    assert len(rates) == 9
    assert not [l for l in kcnn.backbones.efficientnet_b0(input_shape=(32, 32, 3), drop_connect_rate=0.0).layers
                if l.name.endswith("_drop")]
    with pytest.raises(ValueError, match=r"drop_connect_rate must be in \[0, 1\), got 1.0"):
        kcnn.backbones.efficientnet_b0(drop_connect_rate=1.0)


def test_efficientnet_paper_input_sizes_and_dropout():
    sizes = {f"efficientnet_b{i}": s for i, s in enumerate((224, 240, 260, 300, 380, 456, 528, 600))}
    dropouts = dict(zip(sizes, (0.2, 0.2, 0.3, 0.3, 0.4, 0.4, 0.5, 0.5)))
    for name, size in sizes.items():
        meta = kcnn.backbones.BACKBONES.entry(name).metadata
        assert meta["input_shape"] == (size, size, 3)
        assert meta["head_kwargs"]["dropout"] == dropouts[name]


# --- MobileNet v3 ---------------------------------------------------------------------------------

@pytest.mark.parametrize("size, minimalistic, width", [
    ("large", False, 1.0), ("small", False, 1.0), ("large", True, 1.0), ("small", True, 1.0),
    pytest.param("large", False, 0.75, marks=pytest.mark.slow),
    pytest.param("small", False, 0.75, marks=pytest.mark.slow),
])
def test_mobilenet_v3_matches_keras_applications(size, minimalistic, width):
    name = f"mobilenet_v3_{size}" + ("_minimalistic" if minimalistic else "")
    ours = kcnn.build(name, backbone_kwargs={"width": width})
    constructor = keras.applications.MobileNetV3Large if size == "large" else keras.applications.MobileNetV3Small
    theirs = constructor(weights=None, alpha=width, minimalistic=minimalistic)
    assert ours.count_params() == theirs.count_params()
    assert trainable(ours) == trainable(theirs)
    assert weight_shapes(ours, squeeze=True) == weight_shapes(theirs, squeeze=True)


@pytest.mark.parametrize("name, madds", [("mobilenet_v3_large", 219e6), ("mobilenet_v3_small", 56e6)])
def test_mobilenet_v3_paper_table3_multiply_adds(name, madds):
    """Howard et al. 2019, Table 3: Large 1.0 219M MAdds, Small 1.0 56M MAdds at 224x224."""
    assert analyze(kcnn.build(name)).total_macs == pytest.approx(madds, rel=0.03)


def test_mobilenet_v3_blocks_use_hard_swish_and_hard_sigmoid_gates():
    model = kcnn.backbones.mobilenet_v3_large(input_shape=(32, 32, 3))
    assert model.get_layer("stem_act").get_config()["activation"] == "hard_silu"  # Keras' name for hard-swish
    assert model.get_layer("block3_se_expand").get_config()["activation"] == "hard_sigmoid"
    assert model.get_layer("block3_se_reduce").filters == 24  # make_divisible(72 / 4)
    assert model.get_layer("block3_dw_conv").kernel_size == (5, 5)
    minimal = kcnn.backbones.mobilenet_v3_large_minimalistic(input_shape=(32, 32, 3))
    assert minimal.get_layer("stem_act").get_config()["activation"] == "relu"
    assert minimal.get_layer("block3_dw_conv").kernel_size == (3, 3)
    assert not [layer for layer in minimal.layers if "_se_" in layer.name]


# --- RegNet ---------------------------------------------------------------------------------------
# Keras 3's keras.applications has no RegNet; the keras.applications that shipped it (Keras 2, kept as
# the tf-keras package) is the other side's definition here: its per-model tables and its models.

def test_regnet_stage_plans_equal_the_keras_applications_tables():
    from tf_keras.src.applications.regnet import MODEL_CONFIGS

    from kcnn.backbones.regnet import SPECS, stage_plan

    assert len(SPECS) == 24
    for name, spec in SPECS.items():
        config = MODEL_CONFIGS[name[6] + name[-3:]]  # regnetx_002 -> "x002"
        plan = stage_plan(spec)
        assert [width for width, _, _ in plan] == config["widths"], name
        assert [depth for _, depth, _ in plan] == config["depths"], name
        # One group width per model there; the rule caps it by a narrower stage's width (RegNetX-8.0GF's
        # first stage: 80 channels, group width 120 -> 80), which is the same convolution: one group.
        assert [group for _, _, group in plan] == [min(config["group_width"], w) for w, _, _ in plan], name


@pytest.mark.parametrize("name", slow_unless({"regnetx_002"})(["regnetx_002", "regnety_008", "regnetx_080"]))
def test_regnet_matches_keras_applications(name):
    import tf_keras

    ours = kcnn.build(name, input_shape=(64, 64, 3))
    theirs = getattr(tf_keras.applications, f"RegNet{name[6].upper()}{name[-3:]}")(weights=None,
                                                                                    input_shape=(64, 64, 3))
    assert ours.count_params() == theirs.count_params()
    assert trainable(ours) == trainable(theirs)
    assert weight_shapes(ours) == Counter(tuple(int(d) for d in w.shape) for w in theirs.weights)


def test_regnetx_200mf_paper_flops():
    """Radosavovic et al. 2020, Table 4 / Appendix C: RegNetX-200MF has 0.2 GF (multiply-adds) at 224."""
    model = kcnn.build("regnetx_002")
    assert analyze(model).total_macs == pytest.approx(0.2e9, rel=0.03)
    assert not [layer for layer in model.layers if "_se_" in layer.name]
    y = kcnn.backbones.regnety_002(input_shape=(32, 32, 3))
    assert y.get_layer("stage1_block1_se_reduce").filters == 8  # a quarter of the 32-channel block input
    assert y.get_layer("stage2_block1_b_conv").groups == 56 // 8


# --- NFNet ----------------------------------------------------------------------------------------

def test_nfnet_f0_paper_table_figures():
    """Brock et al. 2021, Table 3 (and Table 6): NFNet-F0 has 71.5M parameters and 12.38 GFLOPs at 256
    (F1 132.6M and F2 193.8M are pinned in test_models.py). The paper's FLOPs count multiply-adds."""
    model = kcnn.build("nfnet_f0")
    report = analyze(model)
    assert round(report.total_params / 1e6, 1) == 71.5
    assert report.total_macs == pytest.approx(12.38e9, rel=0.03)
    assert not report.mismatches
    assert not [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    # The signal-propagation scalars: beta = 1 / expected std, the variance growing by alpha^2 per block
    # and reset after each stage's first (transition) block.
    assert model.get_layer("stage3_block1_beta").scale == 1.0
    assert model.get_layer("stage3_block2_beta").scale == pytest.approx(1 / np.sqrt(1 + 0.2**2))
    assert model.get_layer("stage3_block4_beta").scale == pytest.approx(1 / np.sqrt(1 + 3 * 0.2**2))
    assert model.get_layer("stage3_block4_alpha").scale == 0.2
    assert model.get_layer("stage3_block4_se_reduce").filters == 768  # se_ratio 0.5 of 1536


def test_ws_conv2d_standardises_its_kernel_and_round_trips():
    from kcnn.layers import WSConv2D

    layer = WSConv2D(6, 3, groups=2, padding="same", epsilon=1e-4, name="ws")
    images = np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype("float32")
    outputs = keras.ops.convert_to_numpy(layer(images))
    layer.gain.assign(np.arange(1, 7, dtype="float32"))
    kernel = keras.ops.convert_to_numpy(layer.standardized_kernel(layer.kernel))
    fan_in = 3 * 3 * 2
    # Per output channel: zero mean, variance gain^2 / fan_in (paper eq. 2).
    np.testing.assert_allclose(kernel.mean(axis=(0, 1, 2)), 0, atol=1e-6)
    np.testing.assert_allclose(kernel.var(axis=(0, 1, 2)), np.arange(1, 7) ** 2 / fan_in, rtol=1e-4)
    assert outputs.shape == (2, 8, 8, 6)
    clone = WSConv2D.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config() and clone.epsilon == 1e-4 and clone.groups == 2
    clone.build((None, 8, 8, 4))
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(images)),
                               keras.ops.convert_to_numpy(layer(images)), rtol=1e-5)
    # The convolution uses exactly that kernel: compare with a NumPy grouped convolution.
    convolved = keras.ops.convert_to_numpy(layer.convolution_op(images, layer.kernel))
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))
    for g in range(2):
        manual = sum(np.einsum("bhwc,co->bhwo", padded[:, i:i + 8, j:j + 8, 2 * g:2 * g + 2],
                               kernel[i, j, :, 3 * g:3 * g + 3]) for i in range(3) for j in range(3))
        np.testing.assert_allclose(convolved[..., 3 * g:3 * g + 3], manual, rtol=1e-4, atol=1e-4)


def test_ws_conv2d_model_round_trips_through_keras_file_with_its_gain(tmp_path):
    from kcnn.layers import ScalarGain, WSConv2D

    inputs = keras.Input((8, 8, 4))
    x = WSConv2D(6, 3, name="ws")(inputs)
    model = keras.Model(inputs, ScalarGain(0.5, name="skip_gain")(x))
    model.get_layer("ws").gain.assign(np.arange(1, 7, dtype="float32"))
    path = str(tmp_path / "ws.keras")
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(restored.get_layer("ws").gain.numpy(), np.arange(1, 7))
    assert float(restored.get_layer("skip_gain").gain.numpy()) == 0.5
    images = np.random.default_rng(1).random((1, 8, 8, 4), dtype=np.float32)
    np.testing.assert_array_equal(model.predict(images, verbose=0), restored.predict(images, verbose=0))


# --- AlexNet as the paper split it ------------------------------------------------------------------

def test_alexnet_two_towers_match_the_paper():
    """Krizhevsky et al. 2012, Figure 2: conv2, conv4, conv5 see only their GPU's half; conv3 and the
    classifier cross. Parameters 60,965,224; multiply-adds recomputed here from the figure's maps."""
    model = kcnn.build("alexnet", backbone_kwargs={"groups": 2})
    assert model.count_params() == 60_965_224
    # (output side, kernel, input channels seen per filter, filters) from Figure 2, 224 input padded by 2.
    figure2 = [(55, 11, 3, 96), (27, 5, 48, 256), (13, 3, 256, 384), (13, 3, 192, 384), (13, 3, 192, 256)]
    macs = sum(side * side * k * k * c * f for side, k, c, f in figure2)
    macs += 6 * 6 * 256 * 4096 + 4096 * 4096 + 4096 * 1000
    assert macs == 724_406_816
    assert analyze(model).total_macs == pytest.approx(macs, rel=0.01)
    assert [model.get_layer(f"conv{i}_conv").groups for i in range(1, 6)] == [1, 2, 1, 2, 2]
    assert "norm1" in [layer.name for layer in model.layers]
    plain = kcnn.build("alexnet", num_classes=10, input_shape=(67, 67, 3),
                       backbone_kwargs={"groups": 2, "lrn": False})
    assert not [layer for layer in plain.layers if layer.name.startswith("norm")]
    with pytest.raises(ValueError, match=r"groups must be 1 \(single tower\) or 2 \(the paper's two GPUs\), got 3"):
        kcnn.backbones.alexnet(groups=3)


# --- FractalNet -----------------------------------------------------------------------------------

def test_fractalnet_cifar_follows_the_expansion_rule():
    """Larsson et al. 2017, section 4: B=5 blocks of (64, 128, 256, 512, 512) channels, C=3 columns, 3x3
    conv-BN-ReLU, 2x2 max pooling after each block; 20 layers on the deepest path. A block of C columns
    has 2^C - 1 convolutions, C of them reading the block input. That description gives 33,745,226
    parameters with a 10-class classifier; the paper's Table 1 lists 38.6M for this network, which its
    text does not reproduce (independent implementations report the same 33.7M)."""
    model = kcnn.build("fractalnet_cifar", num_classes=10)
    columns, total, c_in = 3, 0, 3
    for width in (64, 128, 256, 512, 512):
        convs = 2**columns - 1
        total += columns * 9 * c_in * width + (convs - columns) * 9 * width * width + convs * 4 * width  # + BN
        c_in = width
    total += 512 * 10 + 10
    assert model.count_params() == total == 33_745_226
    assert sum(1 for layer in model.layers if layer.name.endswith("_conv")) == 5 * 7
    deepest = kcnn.build("fractalnet_cifar", num_classes=10, backbone_kwargs={"deepest_only": True})
    assert sum(1 for layer in deepest.layers if layer.name.endswith("_conv")) == 20
    assert {layer.name for layer in deepest.layers if layer.weights} <= {layer.name for layer in model.layers}
    report = analyze(model)
    assert not report.mismatches


def test_fractal_join_is_a_mean_at_inference_and_drops_paths_in_training():
    from kcnn.layers import FractalJoin

    rng = np.random.default_rng(0)
    branches = [rng.normal(size=(2, 4, 4, 3)).astype("float32") for _ in range(3)]
    local, global_col1, off_path = (np.full((2, 1), v, "float32") for v in (-1.0, 1.0, 5.0))
    join = FractalJoin([0, 1, 2], drop_rate=0.15, seed=1)
    mean = np.mean(branches, axis=0)
    np.testing.assert_allclose(join([*branches, local], training=False), mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(join([*branches, global_col1], training=True), branches[1], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(join([*branches, off_path], training=True), mean, rtol=1e-6, atol=1e-7)
    never = FractalJoin([0, 1, 2], drop_rate=0.0)
    np.testing.assert_allclose(never([*branches, local], training=True), mean, rtol=1e-6, atol=1e-7)
    always = FractalJoin([0, 1, 2], drop_rate=0.999, seed=3)
    for _ in range(5):  # every input dropped: one is kept whole
        out = keras.ops.convert_to_numpy(always([*branches, local], training=True))
        assert any(np.allclose(out, b) for b in branches)


def test_fractal_path_sampler_draws_per_batch_in_training_only():
    from kcnn.layers import FractalPathSampler

    images = np.zeros((4, 8, 8, 3), "float32")
    sampler = FractalPathSampler(3, global_ratio=1.0, seed=0)
    assert np.all(keras.ops.convert_to_numpy(sampler(images, training=False)) == -1)
    codes = {float(keras.ops.convert_to_numpy(sampler(images, training=True))[0, 0]) for _ in range(30)}
    assert codes == {0.0, 1.0, 2.0}
    code = keras.ops.convert_to_numpy(sampler(images, training=True))
    assert code.shape == (4, 1) and len(set(code[:, 0])) == 1  # one draw for the whole batch
    local = FractalPathSampler(3, global_ratio=0.0, seed=0)
    assert np.all(keras.ops.convert_to_numpy(local(images, training=True)) == -1)


def test_global_drop_path_on_the_deepest_column_equals_the_deepest_only_network():
    from kcnn.blocks.fractal import fractal_block

    images = keras.Input((8, 8, 3))
    code = keras.Input((1,))
    full = keras.Model([images, code], fractal_block(images, 4, 3, code, name="b"))
    deep_in = keras.Input((8, 8, 3))
    deep = keras.Model(deep_in, fractal_block(deep_in, 4, 3, None, deepest_only=True, name="b"))
    for layer in deep.layers:
        if layer.weights:
            layer.set_weights(full.get_layer(layer.name).get_weights())
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    column0 = np.zeros((2, 1), "float32")
    np.testing.assert_allclose(full([x, column0], training=True), deep(x, training=True), rtol=1e-5, atol=1e-6)
