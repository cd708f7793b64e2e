"""torchvision (and timm ``*.tv_in1k``) state dicts -> kcnn layers, one table-walking function per family.

Each pair names the kcnn layer, the PyTorch module path and its kind; ``assign``
turns the kind into per-tensor names and layouts (OIHW -> HWIO, depthwise
(C, 1, kH, kW) -> (kH, kW, C, 1), Linear transposed, and for the first dense layer
after Flatten the (C, H, W) -> (H, W, C) reordering of its inputs).
"""

from __future__ import annotations

from kcnn.backbones.densenet import BLOCKS as DENSENET_BLOCKS
from kcnn.backbones.googlenet import INCEPTIONS
from kcnn.backbones.mobilenet import V2_BLOCKS
from kcnn.backbones.resnet import DEPTHS as RESNET_DEPTHS
from kcnn.backbones.vgg import DEPTHS as VGG_DEPTHS
from kcnn.weights.assign import Pair

# torchvision's SqueezeNet ``features`` index of each Fire module 2..9.
SQUEEZENET_FIRE_INDEX = {
    "squeezenet1_0": (3, 4, 5, 7, 8, 9, 10, 12),
    "squeezenet1_1": (3, 4, 6, 7, 9, 10, 11, 12),
}


def _conv_bn(ours: str, conv: str, bn: str) -> list[Pair]:
    return [Pair(f"{ours}_conv", conv, "conv"), Pair(f"{ours}_bn", bn, "bn")]


def vgg_pairs(name: str) -> list[Pair]:
    """``features.N`` counts every conv, ReLU and pool; ``classifier.0/3/6`` are the three Linear layers."""
    pairs, index = [], 0
    for block, depth in enumerate(VGG_DEPTHS[name], start=1):
        for i in range(1, depth + 1):
            pairs.append(Pair(f"block{block}_conv{i}_conv", f"features.{index}", "conv"))
            index += 2  # conv, ReLU
        index += 1  # max pool
    return pairs + [Pair("fc1", "classifier.0", "flatten_linear", head=True),
                    Pair("fc2", "classifier.3", "linear", head=True),
                    Pair("logits", "classifier.6", "linear", head=True)]


def alexnet_pairs(name: str = "alexnet") -> list[Pair]:
    pairs = [Pair(f"conv{i}_conv", f"features.{index}", "conv") for i, index in enumerate((0, 3, 6, 8, 10), start=1)]
    return pairs + [Pair("fc1", "classifier.1", "flatten_linear", head=True),
                    Pair("fc2", "classifier.4", "linear", head=True),
                    Pair("logits", "classifier.6", "linear", head=True)]


def resnet_basic_pairs(name: str) -> list[Pair]:
    pairs = _conv_bn("conv1", "conv1", "bn1")
    for stage, depth in enumerate(RESNET_DEPTHS[name][0], start=2):
        for block in range(1, depth + 1):
            ours, theirs = f"conv{stage}_block{block}", f"layer{stage - 1}.{block - 1}"
            if block == 1 and stage > 2:
                pairs += _conv_bn(f"{ours}_shortcut", f"{theirs}.downsample.0", f"{theirs}.downsample.1")
            pairs += _conv_bn(f"{ours}_1", f"{theirs}.conv1", f"{theirs}.bn1")
            pairs += _conv_bn(f"{ours}_2", f"{theirs}.conv2", f"{theirs}.bn2")
    return pairs + [Pair("logits", "fc", "linear", head=True)]


def squeezenet_pairs(name: str) -> list[Pair]:
    pairs = [Pair("conv1_conv", "features.0", "conv")]
    for fire, index in enumerate(SQUEEZENET_FIRE_INDEX[name], start=2):
        pairs += [Pair(f"fire{fire}_{ours}_conv", f"features.{index}.{theirs}", "conv")
                  for ours, theirs in (("squeeze1x1", "squeeze"), ("expand1x1", "expand1x1"), ("expand3x3", "expand3x3"))]
    return pairs + [Pair("conv_scores", "classifier.1", "conv", head=True)]


def densenet_pairs(name: str = "densenet121") -> list[Pair]:
    pairs = _conv_bn("conv1", "features.conv0", "features.norm0")
    blocks = DENSENET_BLOCKS[name]
    for i, layers in enumerate(blocks, start=1):
        for j in range(1, layers + 1):
            theirs = f"features.denseblock{i}.denselayer{j}"
            pairs += [Pair(f"dense{i}_layer{j}_1_bn", f"{theirs}.norm1", "bn"),
                      Pair(f"dense{i}_layer{j}_1_conv", f"{theirs}.conv1", "conv"),
                      Pair(f"dense{i}_layer{j}_2_bn", f"{theirs}.norm2", "bn"),
                      Pair(f"dense{i}_layer{j}_2_conv", f"{theirs}.conv2", "conv")]
        if i < len(blocks):
            pairs += [Pair(f"transition{i}_bn", f"features.transition{i}.norm", "bn"),
                      Pair(f"transition{i}_conv", f"features.transition{i}.conv", "conv")]
    return pairs + [Pair("final_bn", "features.norm5", "bn"), Pair("logits", "classifier", "linear", head=True)]


def mobilenet_v2_pairs(name: str = "mobilenet_v2") -> list[Pair]:
    """``features.0`` stem, ``features.1..17`` inverted residuals (``.conv.*``), ``features.18`` last 1x1."""
    pairs = _conv_bn("conv1", "features.0.0", "features.0.1")
    blocks = sum(n for _, _, n, _ in V2_BLOCKS)
    for block in range(blocks):
        theirs = f"features.{block + 1}.conv"
        if block == 0:
            pairs += [Pair("block_0_dw_conv", f"{theirs}.0.0", "depthwise"), Pair("block_0_dw_bn", f"{theirs}.0.1", "bn"),
                      Pair("block_0_project_conv", f"{theirs}.1", "conv"), Pair("block_0_project_bn", f"{theirs}.2", "bn")]
            continue
        pairs += _conv_bn(f"block_{block}_expand", f"{theirs}.0.0", f"{theirs}.0.1")
        pairs += [Pair(f"block_{block}_dw_conv", f"{theirs}.1.0", "depthwise"),
                  Pair(f"block_{block}_dw_bn", f"{theirs}.1.1", "bn")]
        pairs += _conv_bn(f"block_{block}_project", f"{theirs}.2", f"{theirs}.3")
    pairs += _conv_bn("conv_last", f"features.{blocks + 1}.0", f"features.{blocks + 1}.1")
    return pairs + [Pair("logits", "classifier.1", "linear", head=True)]


def googlenet_pairs(name: str = "googlenet") -> list[Pair]:
    """``BasicConv2d`` modules (``.conv`` + ``.bn``); inception branches 1, 2.0-2.1, 3.0-3.1, 4.1 (4.0 is the pool).

    The checkpoint also holds the two auxiliary classifiers (``aux1``, ``aux2``), which
    torchvision itself drops when it loads the weights for inference (``aux_logits=False``);
    kcnn's GoogLeNet has none, so they are declared unused.
    """
    pairs = _conv_bn("conv1", "conv1.conv", "conv1.bn")
    pairs += _conv_bn("conv2_reduce", "conv2.conv", "conv2.bn") + _conv_bn("conv2", "conv3.conv", "conv3.bn")
    for item in INCEPTIONS:
        if item == "pool":
            continue
        ours, theirs = f"inception_{item[0]}", f"inception{item[0]}"
        for suffix, branch in (("1x1", "branch1"), ("3x3_reduce", "branch2.0"), ("3x3", "branch2.1"),
                               ("5x5_reduce", "branch3.0"), ("5x5", "branch3.1"), ("pool_proj", "branch4.1")):
            pairs += _conv_bn(f"{ours}_{suffix}", f"{theirs}.{branch}.conv", f"{theirs}.{branch}.bn")
    return pairs + [Pair("logits", "fc", "linear", head=True), Pair("", "aux1", "unused"), Pair("", "aux2", "unused")]
