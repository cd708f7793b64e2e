"""Batch-norm options: every backbone with batch norm takes bn_momentum and bn_epsilon, set once by its builder."""

from __future__ import annotations

import inspect

import keras
import pytest
from conftest import fast_or_slow, small_input_shape

import kcnn
from kcnn import blocks
from kcnn.blocks.normalization import batch_norm_defaults

BACKBONES = kcnn.backbones.BACKBONES
WITH_OPTIONS = [name for name in BACKBONES.list() if batch_norm_defaults(BACKBONES.get(name)) is not None]

# The defaults each family keeps: MobileNet v2's reference implementation (TF, also keras.applications'
# MobileNetV2) uses momentum 0.999 and epsilon 1e-3; DenseNet's (Torch) epsilon is 1e-5 (1.001e-5 in
# keras.applications' DenseNet); the other papers state none, so Keras' defaults stand.
EXPECTED_DEFAULTS = {
    "convnet": (0.99, 1e-3),  # no paper: Keras' BatchNormalization defaults
    "densenet121": (0.99, 1.001e-5),
    "mobilenet_v1": (0.99, 1e-3),
    "mobilenet_v2": (0.999, 1e-3),
    "resnet18": (0.99, 1e-3),
    "resnet34": (0.99, 1e-3),
    "resnet50": (0.99, 1e-3),
    "googlenet": (0.99, 1e-3),
    "squeezenet1_0": (0.99, 1e-3),
    "squeezenet1_1": (0.99, 1e-3),
    "vgg11": (0.99, 1e-3),
    "vgg13": (0.99, 1e-3),
    "vgg16": (0.99, 1e-3),
    "vgg19": (0.99, 1e-3),
    **{f"efficientnet_b{i}": (0.99, 1e-3) for i in range(8)},
    **{f"mobilenet_v3_{v}": (0.999, 1e-3) for v in ("large", "small", "large_minimalistic", "small_minimalistic")},
    **{f"regnet{k}_{f}": (0.9, 1e-5) for k in "xy" for f in ("002", "004", "006", "008", "016", "032", "040",
                                                             "064", "080", "120", "160", "320")},
    "fractalnet_cifar": (0.99, 1e-3),
}


def bn_settings(model) -> set:
    return {(layer.momentum, layer.epsilon) for layer in model.layers
            if isinstance(layer, keras.layers.BatchNormalization)}


def with_batch_norm(name: str) -> dict:
    """Builders where batch norm is optional (VGG, SqueezeNet, GoogLeNet) need batch_norm=True to have any."""
    return {"batch_norm": True} if "batch_norm" in inspect.signature(BACKBONES.get(name)).parameters else {}


def test_every_backbone_with_batch_norm_has_the_options_and_no_other_does():
    assert sorted(WITH_OPTIONS) == sorted(EXPECTED_DEFAULTS)
    # LRN, no normalisation, and NFNets (normaliser-free by design)
    assert set(BACKBONES.list()) - set(WITH_OPTIONS) == {"alexnet", "lenet5", "nfnet_f0", "nfnet_f1", "nfnet_f2"}
    for name in WITH_OPTIONS:
        parameters = inspect.signature(BACKBONES.get(name)).parameters
        assert parameters["bn_momentum"].default == EXPECTED_DEFAULTS[name][0], name
        assert parameters["bn_epsilon"].default == EXPECTED_DEFAULTS[name][1], name


@pytest.mark.parametrize("name", fast_or_slow(WITH_OPTIONS))
def test_the_options_reach_every_batch_norm_layer(name):
    chosen = BACKBONES.get(name)(input_shape=small_input_shape(name), bn_momentum=0.9, bn_epsilon=1e-5,
                                 **with_batch_norm(name))
    assert bn_settings(chosen) == {(0.9, 1e-5)}  # every BN layer, none left at another value


def test_build_passes_the_options_and_the_model_round_trips(tmp_path):
    default = kcnn.build("mobilenet_v2", num_classes=10, input_shape=(32, 32, 3), backbone_kwargs={"width": 0.35})
    assert bn_settings(default) == {(0.999, 1e-3)}  # the defaults reach the layers too
    model = kcnn.build("mobilenet_v2", num_classes=10, input_shape=(32, 32, 3),
                       backbone_kwargs={"width": 0.35, "bn_momentum": 0.9})
    assert bn_settings(model) == {(0.9, 1e-3)}
    path = str(tmp_path / "m.keras")
    model.save(path)
    assert bn_settings(keras.saving.load_model(path, safe_mode=True)) == {(0.9, 1e-3)}


def test_blocks_read_the_active_settings_and_an_explicit_value_wins():
    inputs = keras.Input((8, 8, 4))
    x = blocks.conv_bn_act(inputs, 4, name="outside")
    with blocks.batch_norm_settings(momentum=0.9) as created:
        y = blocks.conv_bn_act(x, 4, name="inside")
        with blocks.batch_norm_settings(epsilon=1e-5):
            y = blocks.inverted_residual(y, 4, expansion=2, name="nested")
        y = blocks.conv_bn_act(y, 4, bn_momentum=0.5, name="explicit")
    z = blocks.conv_bn_act(y, 4, name="after")
    model = keras.Model(inputs, z)
    settings = {layer.name: (layer.momentum, layer.epsilon) for layer in model.layers
                if isinstance(layer, keras.layers.BatchNormalization)}
    assert settings == {"outside_bn": (0.99, 1e-3), "inside_bn": (0.9, 1e-3), "nested_expand_bn": (0.9, 1e-5),
                        "nested_dw_bn": (0.9, 1e-5), "nested_project_bn": (0.9, 1e-5),
                        "explicit_bn": (0.5, 1e-3), "after_bn": (0.99, 1e-3)}
    assert created == [5]


@pytest.mark.parametrize("call, message", [
    (lambda: kcnn.backbones.vgg11(input_shape=(32, 32, 3), bn_momentum=0.9),
     "vgg11 with these arguments has no batch norm, so bn_momentum and bn_epsilon do not apply; pass "
     "batch_norm=True to add it, or leave them unset"),
    (lambda: kcnn.backbones.resnet18(input_shape=(32, 32, 3), bn_momentum=1.0),
     "bn_momentum must be in [0, 1), got 1.0 (Keras' convention: the weight of the old moving average, "
     "e.g. 0.9 or 0.99)"),
    (lambda: kcnn.backbones.resnet18(input_shape=(32, 32, 3), bn_epsilon=0),
     "bn_epsilon must be a number > 0, got 0"),
])
def test_options_that_cannot_apply_are_errors(call, message):
    with pytest.raises(ValueError) as error:
        call()
    assert str(error.value) == message


def test_a_new_backbone_inherits_the_options_with_one_decorator():
    @blocks.batch_norm_options(momentum=0.97, epsilon=2e-5)
    def tiny(input_shape=(16, 16, 3), *, name="tiny"):
        inputs = keras.Input(input_shape)
        return keras.Model(inputs, blocks.residual_basic(blocks.conv_bn_act(inputs, 8, name="stem"), 8, name="b"),
                           name=name)

    assert bn_settings(tiny()) == {(0.97, 2e-5)}
    assert bn_settings(tiny(bn_momentum=0.9)) == {(0.9, 2e-5)}
    assert list(inspect.signature(tiny).parameters) == ["input_shape", "name", "bn_momentum", "bn_epsilon"]


def test_a_wrong_argument_names_the_registered_builder():
    with pytest.raises(TypeError) as error:
        kcnn.build("resnet18", backbone_kwargs={"widht": 2})
    assert str(error.value) == ("resnet18: resnet18() got an unexpected keyword argument 'widht'; "
                                "see help(kcnn.backbones.resnet18) for its arguments")
