"""keras.applications checkpoints -> kcnn layers, one table-walking function per family.

keras.applications and kcnn both keep weights channels-last in Keras order, so a
pair maps a whole layer with no transform (MobileNet v1's 1x1-convolution
classifier is reshaped to kcnn's Dense). Legacy ``.h5`` files are read by layer
name; a Keras 3 ``.weights.h5`` file names layers only by class and position, so it
is read through the keras.applications model itself (built with ``weights=None``).
"""

from __future__ import annotations

import re

import keras
import numpy as np

from kcnn.backbones.densenet import BLOCKS as DENSENET_BLOCKS
from kcnn.backbones.efficientnet import B0_STAGES, VARIANTS as EFFICIENTNET_VARIANTS, round_repeats
from kcnn.backbones.mobilenet_v3 import TABLES as MOBILENET_V3_TABLES
from kcnn.backbones.mobilenet import V2_BLOCKS
from kcnn.backbones.regnet import SPECS as REGNET_SPECS
from kcnn.backbones.regnet import stage_plan
from kcnn.backbones.resnet import DEPTHS as RESNET_DEPTHS
from kcnn.backbones.vgg import DEPTHS as VGG_DEPTHS
from kcnn.weights.assign import Pair
from kcnn.weights.sources import CheckpointError


def vgg_pairs(name: str) -> list[Pair]:
    pairs = [Pair(f"block{b}_conv{i}_conv", f"block{b}_conv{i}")
             for b, depth in enumerate(VGG_DEPTHS[name], start=1) for i in range(1, depth + 1)]
    return pairs + [Pair("fc1", "fc1", head=True), Pair("fc2", "fc2", head=True),
                    Pair("logits", "predictions", head=True)]


def resnet50_pairs(name: str = "resnet50") -> list[Pair]:
    pairs = [Pair("conv1_conv", "conv1_conv"), Pair("conv1_bn", "conv1_bn")]
    for stage, depth in enumerate(RESNET_DEPTHS[name][0], start=2):
        for block in range(1, depth + 1):
            prefix = f"conv{stage}_block{block}"
            if block == 1:
                pairs += [Pair(f"{prefix}_shortcut_conv", f"{prefix}_0_conv"), Pair(f"{prefix}_shortcut_bn", f"{prefix}_0_bn")]
            pairs += [Pair(f"{prefix}_{j}_{part}", f"{prefix}_{j}_{part}") for j in (1, 2, 3) for part in ("conv", "bn")]
    return pairs + [Pair("logits", "predictions", head=True)]


def mobilenet_v1_pairs(name: str = "mobilenet_v1") -> list[Pair]:
    pairs = [Pair("conv1_conv", "conv1"), Pair("conv1_bn", "conv1_bn")]
    for i in range(1, 14):
        pairs += [Pair(f"conv_ds_{i}_dw_conv", f"conv_dw_{i}"), Pair(f"conv_ds_{i}_dw_bn", f"conv_dw_{i}_bn"),
                  Pair(f"conv_ds_{i}_pw_conv", f"conv_pw_{i}"), Pair(f"conv_ds_{i}_pw_bn", f"conv_pw_{i}_bn")]
    return pairs + [Pair("logits", "conv_preds", kind="keras_conv_as_dense", head=True)]


def mobilenet_v2_pairs(name: str = "mobilenet_v2") -> list[Pair]:
    pairs = [Pair("conv1_conv", "Conv1"), Pair("conv1_bn", "bn_Conv1")]
    blocks = sum(n for _, _, n, _ in V2_BLOCKS)
    for block in range(blocks):
        source = "expanded_conv" if block == 0 else f"block_{block}"
        parts = [("dw", "depthwise"), ("project", "project")] if block == 0 else \
            [("expand", "expand"), ("dw", "depthwise"), ("project", "project")]
        for ours, theirs in parts:
            pairs += [Pair(f"block_{block}_{ours}_conv", f"{source}_{theirs}"),
                      Pair(f"block_{block}_{ours}_bn", f"{source}_{theirs}_BN")]
    pairs += [Pair("conv_last_conv", "Conv_1"), Pair("conv_last_bn", "Conv_1_bn")]
    return pairs + [Pair("logits", "predictions", head=True)]


def densenet_pairs(name: str = "densenet121") -> list[Pair]:
    pairs = [Pair("conv1_conv", "conv1_conv"), Pair("conv1_bn", "conv1_bn")]
    blocks = DENSENET_BLOCKS[name]
    for i, layers in enumerate(blocks, start=1):
        for j in range(1, layers + 1):
            ours, theirs = f"dense{i}_layer{j}", f"conv{i + 1}_block{j}"
            pairs += [Pair(f"{ours}_1_bn", f"{theirs}_0_bn"), Pair(f"{ours}_1_conv", f"{theirs}_1_conv"),
                      Pair(f"{ours}_2_bn", f"{theirs}_1_bn"), Pair(f"{ours}_2_conv", f"{theirs}_2_conv")]
        if i < len(blocks):
            pairs += [Pair(f"transition{i}_bn", f"pool{i + 1}_bn"), Pair(f"transition{i}_conv", f"pool{i + 1}_conv")]
    return pairs + [Pair("final_bn", "bn"), Pair("logits", "predictions", head=True)]


def efficientnet_pairs(name: str) -> list[Pair]:
    """keras.applications' EfficientNet: same layer names but ``dwconv``/``bn`` for the depthwise pair.

    Its squeeze-excite is already 1x1 convolutions, as kcnn's. The model's input
    ``Normalization`` layer (ImageNet mean and, by a known quirk, the standard deviation
    stored as its variance) is the checkpoint's preprocessing: it is declared, checked
    against the catalog's row by ``check_input_normalization`` and left out of the model.
    """
    depth = EFFICIENTNET_VARIANTS[name][1]
    pairs = [Pair("stem_conv", "stem_conv"), Pair("stem_bn", "stem_bn")]
    for stage, (expansion, _, _, _, repeats) in enumerate(B0_STAGES, start=1):
        for i in range(round_repeats(repeats, depth)):
            block = f"block{stage}{chr(ord('a') + i)}"
            parts = [("expand_conv", "expand_conv"), ("expand_bn", "expand_bn")] if expansion != 1 else []
            parts += [("dw_conv", "dwconv"), ("dw_bn", "bn"), ("se_reduce", "se_reduce"), ("se_expand", "se_expand"),
                      ("project_conv", "project_conv"), ("project_bn", "project_bn")]
            pairs += [Pair(f"{block}_{ours}", f"{block}_{theirs}") for ours, theirs in parts]
    pairs += [Pair("top_conv", "top_conv"), Pair("top_bn", "top_bn"), Pair("", NORMALIZATION, "keras_unused")]
    return pairs + [Pair("logits", "predictions", head=True)]


def mobilenet_v3_pairs(name: str) -> list[Pair]:
    """keras.applications' MobileNetV3 names blocks ``expanded_conv_{i}_`` (block 0 has no index and no
    expansion); its classifier is two 1x1 convolutions on the pooled map, kcnn's two Dense layers."""
    size = "small" if "_small" in name else "large"
    pairs = [Pair("stem_conv", "conv"), Pair("stem_bn", "conv_bn")]
    for i, (_, _, _, se, _, _) in enumerate(MOBILENET_V3_TABLES[size]):
        theirs = f"expanded_conv_{i}_" if i else "expanded_conv_"
        parts = [("expand_conv", "expand"), ("expand_bn", "expand_bn")] if i else []
        parts += [("dw_conv", "depthwise"), ("dw_bn", "depthwise_bn")]
        if se and not name.endswith("_minimalistic"):
            parts += [("se_reduce", "squeeze_excite_conv"), ("se_expand", "squeeze_excite_conv_1")]
        parts += [("project_conv", "project"), ("project_bn", "project_bn")]
        pairs += [Pair(f"block{i}_{ours}", f"{theirs}{part}") for ours, part in parts]
    pairs += [Pair("last_conv", "conv_1"), Pair("last_bn", "conv_1_bn")]
    return pairs + [Pair("fc1", "conv_2", kind="keras_conv_as_dense", head=True),
                    Pair("logits", "logits", kind="keras_conv_as_dense", head=True)]


def regnet_pairs(name: str) -> list[Pair]:
    """Keras 2's keras.applications RegNet (tf-keras): ``regnetx002_Stage_{s}_XBlock_{b}_*`` (from 0), the
    1x1 / grouped 3x3 / 1x1 convolutions, ``_skip_*`` on each stage's first block; head ``head_dense``."""
    model, kind = f"regnet{name[6]}{name[-3:]}", name[6].upper()
    pairs = [Pair("stem_conv", f"{model}_stem_conv"), Pair("stem_bn", f"{model}_stem_bn")]
    for stage, (_, depth, _) in enumerate(stage_plan(REGNET_SPECS[name]), start=1):
        for i in range(depth):
            ours, theirs = f"stage{stage}_block{i + 1}", f"{model}_Stage_{stage - 1}_{kind}Block_{i}"
            parts = [("shortcut_conv", "skip_1x1"), ("shortcut_bn", "skip_bn")] if i == 0 else []
            parts += [("a_conv", "conv_1x1_1"), ("a_bn", "conv_1x1_1_bn"), ("b_conv", "conv_3x3"),
                      ("b_bn", "conv_3x3_bn"), ("c_conv", "conv_1x1_2"), ("c_bn", "conv_1x1_2_bn")]
            if kind == "Y":
                parts += [("se_reduce", "squeeze_and_excite_squeeze"), ("se_expand", "squeeze_and_excite_excite")]
            pairs += [Pair(f"{ours}_{a}", f"{theirs}_{b}") for a, b in parts]
    return pairs + [Pair("logits", "head_dense", head=True)]


def unnumbered_head(tensors: dict) -> dict:
    """tf-keras' RegNet names its classifier by a session counter ("0head_dense", "3head_dense"): drop it."""
    return {re.sub(r"^\d+head_dense/", "head_dense/", key): value for key, value in tensors.items()}


# Keras names an unnamed layer by its class, with a counter after the first ("normalization_3").
NORMALIZATION = "normalization"


def check_input_normalization(pairs: list[Pair], tensors: dict, preprocessing, family: str) -> None:
    """A keras.applications EfficientNet file holds its input normalisation; it must be the published one.

    kcnn applies it outside the model (``kcnn.weights.preprocessing``), so a file whose
    ``Normalization`` layer was adapted to other data would silently change the model.
    keras.applications stores the ImageNet standard deviation as the layer's variance and
    divides by its square root once more (its ``Rescaling``), which makes ``(x / 255 - mean) / std``.
    """
    if not any(pair.kind == "keras_unused" and pair.source == NORMALIZATION for pair in pairs):
        return
    mean, variance = preprocessing.mean, preprocessing.std
    layers = sorted({key.rsplit("/", 1)[0] for key in tensors if re.fullmatch(rf"{NORMALIZATION}(_\d+)?/\d+", key)})
    if len(layers) != 1:
        raise CheckpointError(f"{family}: expected one input Normalization layer in the checkpoint, found {layers}")
    got_mean, got_variance = (np.asarray(tensors[f"{layers[0]}/{i}"], "float64").reshape(-1) for i in (0, 1))
    if not (np.allclose(got_mean, mean, atol=1e-6) and np.allclose(got_variance, variance, atol=1e-6)):
        raise CheckpointError(
            f"{family}: the checkpoint's input Normalization has mean {np.round(got_mean, 4).tolist()} and variance "
            f"{np.round(got_variance, 4).tolist()}, not keras.applications' ImageNet values {list(mean)} and "
            f"{list(variance)}; kcnn applies that normalisation outside the model, so this file cannot be loaded as is"
        )


# kcnn name -> the keras.applications constructor that defines the checkpoint's layout.
REFERENCE_MODELS = {
    "vgg16": "VGG16", "vgg19": "VGG19", "resnet50": "ResNet50", "mobilenet_v1": "MobileNet",
    "mobilenet_v2": "MobileNetV2", "densenet121": "DenseNet121",
    **{f"efficientnet_b{i}": f"EfficientNetB{i}" for i in range(8)},
    "mobilenet_v3_small": "MobileNetV3Small", "mobilenet_v3_large": "MobileNetV3Large",
    "mobilenet_v3_small_minimalistic": "MobileNetV3Small", "mobilenet_v3_large_minimalistic": "MobileNetV3Large",
}
# Constructor arguments besides the shape, top and classes.
REFERENCE_KWARGS = {"mobilenet_v3_small_minimalistic": {"minimalistic": True},
                    "mobilenet_v3_large_minimalistic": {"minimalistic": True}}


def reference_model(name: str, input_shape: tuple, include_top: bool, classes: int, alpha: float | None):
    """The keras.applications model (random weights) whose layout a checkpoint of ``name`` has."""
    constructor = getattr(keras.applications, REFERENCE_MODELS[name])
    kwargs = dict(include_top=include_top, weights=None, input_shape=input_shape, classes=classes,
                  **REFERENCE_KWARGS.get(name, {}))
    if alpha is not None:
        kwargs["alpha"] = alpha
    return constructor(**kwargs)


def read_through_reference(path: str, name: str, model: keras.Model) -> dict:
    """Load a Keras weights file with Keras' own loader into the keras.applications model.

    Used for Keras 3 ``.weights.h5`` files and for legacy files whose layer names
    differ from today's (Keras loads those by layer order). Returns ``{"layer/index": array}``.
    """
    if name not in REFERENCE_MODELS:
        raise CheckpointError(f"{path!r}: no keras.applications model corresponds to {name!r}")
    input_shape = tuple(model.input_shape[1:])
    alphas = {"mobilenet_v1": [_v1_alpha(model)] if name == "mobilenet_v1" else None,
              "mobilenet_v2": [0.35, 0.5, 0.75, 1.0, 1.3, 1.4],
              "mobilenet_v3_small": [1.0, 0.75], "mobilenet_v3_large": [1.0, 0.75]}.get(name) or [None]
    classes = _num_classes(model)
    errors = []
    for include_top in (True, False):
        for alpha in alphas:
            for count in dict.fromkeys([classes, 1000]):
                if not include_top and count != classes:
                    continue
                reference = reference_model(name, input_shape, include_top, count, alpha)
                try:
                    reference.load_weights(path)
                except ValueError as error:
                    errors.append(str(error).splitlines()[0])
                    continue
                return {f"{layer.name}/{i}": keras.ops.convert_to_numpy(w)
                        for layer in reference.layers for i, w in enumerate(layer.weights)}
    raise CheckpointError(f"{path!r} does not load into keras.applications.{REFERENCE_MODELS[name]} at input "
                          f"{input_shape} with or without its top: {errors[-1] if errors else ''}")


def _v1_alpha(model):
    layer = model.get_layer("conv1_conv")
    return layer.filters / 32


def _num_classes(model) -> int:
    return int(model.output_shape[-1])
