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
