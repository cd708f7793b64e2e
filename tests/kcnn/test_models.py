"""Every registered backbone with its paper's head: builds, runs, saves, reloads, mixed precision (its pinned
parameter count: test_model_counts.py).

Registry-driven (like timm's tests/test_models.py): a newly registered backbone is
tested here without new test code.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import (
    CLASSIC,
    assert_probabilities,
    assert_save_load_round_trip,
    fast_or_slow,
    random_images,
    small_input_shape,
)

import kcnn

ALL = kcnn.list_backbones()
ISSUE_NAMES = CLASSIC


def test_registry_lists_every_public_builder():
    public = {name for name in kcnn.backbones.__all__ if name not in ("BACKBONES", "register")}
    assert public == set(ALL)
    assert ISSUE_NAMES <= set(ALL)
    assert set(kcnn.list_heads()) == {"dense", "fcos", "gap_linear", "fully_conv", "segmentation"}
    assert kcnn.list_backbones("resnet*") == ["resnet18", "resnet34", "resnet50"]
    assert kcnn.list_heads("*conv*") == ["fully_conv"]


@pytest.mark.parametrize("name", fast_or_slow(ALL))
def test_default_head_forward_and_keras_round_trip(name, tmp_path):
    shape = small_input_shape(name)
    model = kcnn.build(name, num_classes=7, input_shape=shape)
    images = random_images(shape)
    assert_probabilities(model.predict(images, verbose=0), (2, 7))
    assert_save_load_round_trip(model, images, tmp_path)


@pytest.mark.parametrize("name", fast_or_slow(ALL))
def test_mixed_float16_outputs_float32(name, mixed_precision):
    shape = small_input_shape(name)
    model = kcnn.build(name, num_classes=3, input_shape=shape)
    assert model.get_layer("predictions").compute_dtype == "float32"
    assert model.output.dtype == "float32"
    assert any(layer.compute_dtype == "float16" for layer in model.layers)
    outputs = model.predict(random_images(shape, batch=1), verbose=0)
    assert outputs.dtype == np.float32
    assert_probabilities(outputs, (1, 3))


@pytest.mark.parametrize("name", ["squeezenet1_0", "squeezenet1_1"])
def test_fully_convolutional_model_accepts_any_input_size(name):
    model = kcnn.build(name, num_classes=4, input_shape=(None, None, 3))
    for size in (48, 97, 160):
        assert_probabilities(model.predict(random_images((size, size, 3), batch=1), verbose=0), (1, 4))


@pytest.mark.parametrize("name", ["resnet18", "squeezenet1_1", "vgg11", "lenet5"])
def test_segmentation_head_predicts_every_pixel_at_input_resolution(name, tmp_path):
    channels = small_input_shape(name)[2]
    fixed = name in ("vgg11", "lenet5")
    size = 32 if fixed else 67
    model = kcnn.build(name, num_classes=5, head="segmentation",
                       input_shape=(size, size, channels) if fixed else (None, None, channels))
    images = random_images((size, size, channels), batch=1)
    assert_probabilities(model.predict(images, verbose=0), (1, size, size, 5))
    assert model.output.dtype == "float32"
    assert_save_load_round_trip(model, images, tmp_path)


def test_assemble_explicit_composition_flattens_the_graph():
    backbone = kcnn.backbones.mobilenet_v1(input_shape=(64, 64, 3), width=0.25)
    model = kcnn.assemble(backbone, kcnn.heads.fully_conv, num_classes=10)
    assert model.output_shape == (None, 10)
    assert "conv_ds_13_pw_conv" in [layer.name for layer in model.layers]
    assert model.get_layer("conv_ds_13_pw_conv").output.shape[-1] == 256  # 1024 * 0.25


def test_width_multiplier_scales_channels():
    half = kcnn.build("mobilenet_v2", num_classes=10, input_shape=(32, 32, 3), backbone_kwargs={"width": 0.5})
    assert half.get_layer("conv1_conv").filters == 16  # make_divisible(32 * 0.5, 8)
    assert half.get_layer("conv_last_conv").filters == 1280  # kept for widths up to 1.0 (paper, section 6.1)


def test_head_kwargs_merge_over_the_paper_head():
    model = kcnn.build("vgg11", num_classes=10, input_shape=(32, 32, 3), head_kwargs={"hidden": (64,)})
    assert [layer.name for layer in model.layers if isinstance(layer, keras.layers.Dense)] == ["fc1", "logits"]
    assert model.get_layer("fc1_dropout").rate == 0.5  # the paper head's dropout is kept


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: kcnn.build("resnt50"), "unknown backbone 'resnt50'. Did you mean 'resnet50'? Available: alexnet"),
        (lambda: kcnn.build("resnet18", head="dens"), "unknown head 'dens'. Did you mean 'dense'?"),
        (lambda: kcnn.build("alexnet", num_classes=0), "num_classes must be an integer >= 1, got 0"),
        (lambda: kcnn.build("mobilenet_v1", backbone_kwargs={"width": 5.0}),
         "width (width multiplier) must be in (0.0, 4.0], got 5.0"),
        (lambda: kcnn.build("mobilenet_v2", backbone_kwargs={"width": 0}),
         "width (width multiplier) must be in (0.0, 4.0], got 0"),
        (lambda: kcnn.build("vgg16", input_shape=(16, 16, 3)),
         "input_shape (16, 16, 3) is too small for vgg16: its downsampling needs at least 32x32 pixels; "
         "pass input_shape=(32, 32, 3) or larger"),
        (lambda: kcnn.build("alexnet", input_shape=(50, 50, 3)),
         "needs at least 63x63 pixels; pass input_shape=(63, 63, 3) or larger"),
        (lambda: kcnn.build("resnet18", input_shape=(16, 16, 3)),
         "input_shape (16, 16, 3) is too small for resnet18: it downsamples by 32, so it needs at least 32x32"),
        (lambda: kcnn.build("vgg16", input_shape=(None, None, 3)),
         "the dense head with pool='flatten' needs a fixed input size"),
        (lambda: kcnn.build("resnet18", input_shape=(64, 64)), "input_shape must be (height, width, channels)"),
    ],
)
def test_errors_name_the_parameter_and_the_fix(call, message):
    with pytest.raises(ValueError) as error:
        call()
    assert message in str(error.value)


def test_smallest_input_size_builds_and_one_less_does_not():
    for name in ("alexnet", "squeezenet1_0", "resnet18"):
        smallest = kcnn.smallest_input_size(name)
        kcnn.build(name, num_classes=2, input_shape=(smallest, smallest, 3), head="fully_conv")
        with pytest.raises(ValueError, match=f"needs at least {smallest}x{smallest}"):
            kcnn.build(name, num_classes=2, input_shape=(smallest - 1, smallest - 1, 3), head="fully_conv")
