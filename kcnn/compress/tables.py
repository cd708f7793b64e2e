"""Named per-layer density tables, with the figures their papers publish beside them.

Each table is a function returning layer name (or fnmatch glob) -> density for one kcnn builder;
``TABLE_BITS`` holds the weight and relative-index widths its paper compresses with, which
``kcnn compress --table`` uses unless ``--bits`` / ``--index-bits`` say otherwise.

``squeezenet_table1`` is Iandola et al., "SqueezeNet: AlexNet-level accuracy with 50x fewer
parameters and <0.5MB model size", arXiv:1602.07360, Table 1: the density ("sparsity" in the
paper's words: the share of weights kept) of each Fire module's squeeze, expand 1x1 and expand
3x3 filters, conv1 kept whole, conv10 at 20%, weights at 6 bits. Parameter counts include the
biases, which are not pruned (that is how the paper's counts add up).

``han_alexnet_table4`` and ``han_vgg16_table5`` are Han, Mao and Dally, "Deep Compression:
Compressing Deep Neural Networks with Pruning, Trained Quantization and Huffman Coding", ICLR 2016
(arXiv:1510.00149), Tables 4 and 5: the "Weights% (P)" column (the share of weights left after
pruning) of each layer, with its "#Weights" column as published (rounded to K or M). Weights are
shared at 8 bits in conv layers and 5 bits in fc layers (section 3 and the tables' "Weight bits
(P+Q)" column), and relative indices are 8 bits wide in conv layers and 5 in fc layers (section 2).
They are for kcnn's ``alexnet`` with ``backbone_kwargs={"groups": 2}`` (the paper's two-tower
AlexNet: conv2, conv4 and conv5 see half the channels, 61M weights) and ``vgg16``, both with their
paper's 1000-class dense head.
"""

from __future__ import annotations

# Fire module -> (squeeze1x1, expand1x1, expand3x3) density, Table 1.
SQUEEZENET_FIRE_DENSITY = {
    2: (1.0, 1.0, 0.33), 3: (1.0, 1.0, 0.33), 4: (1.0, 1.0, 0.33), 5: (1.0, 1.0, 0.33),
    6: (1.0, 0.5, 0.33), 7: (0.5, 1.0, 0.33), 8: (1.0, 0.5, 0.30), 9: (0.5, 1.0, 0.30),
}

# Table 1's "#parameter before pruning" and "#parameter after pruning" columns, per layer or module.
SQUEEZENET_TABLE1_PARAMS = {
    "conv1": (14_208, 14_208), "fire2": (11_920, 5_746), "fire3": (12_432, 6_258),
    "fire4": (45_344, 20_646), "fire5": (49_440, 24_742), "fire6": (104_880, 44_700),
    "fire7": (111_024, 46_236), "fire8": (188_992, 77_581), "fire9": (197_184, 77_581),
    "conv10": (513_000, 103_400),
}
SQUEEZENET_TABLE1_TOTAL = (1_248_424, 421_098)
SQUEEZENET_TABLE1_BITS = 6
SQUEEZENET_TABLE1_MEGABYTES = 0.47  # Table 2: SqueezeNet + Deep Compression, 6 bit


def squeezenet_table1() -> dict[str, float]:
    """Layer name -> density for kcnn's ``squeezenet1_0`` (conv10 is kcnn's ``conv_scores``)."""
    table = {"conv1_conv": 1.0, "conv_scores": 0.2}
    for module, densities in SQUEEZENET_FIRE_DENSITY.items():
        for part, density in zip(("squeeze1x1", "expand1x1", "expand3x3"), densities):
            table[f"fire{module}_{part}_conv"] = density
    return table


def squeezenet_module(layer_name: str) -> str | None:
    """The Table 1 row a kcnn SqueezeNet layer belongs to (``fire3_expand3x3_conv`` -> ``fire3``)."""
    if layer_name == "conv_scores":
        return "conv10"
    head = layer_name.split("_", 1)[0]
    return head if head in SQUEEZENET_TABLE1_PARAMS else None


# Deep Compression's widths: 256 shared weights in conv layers, 32 in fc layers; indices as wide (section 2).
HAN_BITS = {"conv": 8, "fc": 5}
HAN_INDEX_BITS = {"conv": 8, "fc": 5}

# Table 4 (AlexNet): layer -> ("#Weights" as published, "Weights% (P)"); the total row; kcnn's layer names.
HAN_ALEXNET_TABLE4 = {
    "conv1": (35_000, 0.84), "conv2": (307_000, 0.38), "conv3": (885_000, 0.35), "conv4": (663_000, 0.37),
    "conv5": (442_000, 0.37), "fc6": (38_000_000, 0.09), "fc7": (17_000_000, 0.09), "fc8": (4_000_000, 0.25),
}
HAN_ALEXNET_TABLE4_TOTAL = (61_000_000, 0.11)  # 11%: 9x fewer weights
HAN_FC_LAYERS = {"fc6": "fc1", "fc7": "fc2", "fc8": "logits"}  # kcnn's dense head: two hidden layers, the classifier
HAN_ALEXNET_LAYERS = {**{f"conv{i}": f"conv{i}_conv" for i in range(1, 6)}, **HAN_FC_LAYERS}

# Table 5 (VGG-16), the same columns.
HAN_VGG16_TABLE5 = {
    "conv1_1": (2_000, 0.58), "conv1_2": (37_000, 0.22), "conv2_1": (74_000, 0.34), "conv2_2": (148_000, 0.36),
    "conv3_1": (295_000, 0.53), "conv3_2": (590_000, 0.24), "conv3_3": (590_000, 0.42),
    "conv4_1": (1_000_000, 0.32), "conv4_2": (2_000_000, 0.27), "conv4_3": (2_000_000, 0.34),
    "conv5_1": (2_000_000, 0.35), "conv5_2": (2_000_000, 0.29), "conv5_3": (2_000_000, 0.36),
    "fc6": (103_000_000, 0.04), "fc7": (17_000_000, 0.04), "fc8": (4_000_000, 0.23),
}
HAN_VGG16_TABLE5_TOTAL = (138_000_000, 0.075)  # 7.5%: 13x fewer weights
HAN_VGG16_LAYERS = {**{row: f"block{row[4]}_conv{row[6]}_conv" for row in HAN_VGG16_TABLE5 if row.startswith("conv")},
                    **HAN_FC_LAYERS}  # conv3_2 -> block3_conv2_conv


def han_alexnet_table4() -> dict[str, float]:
    """Layer name -> density for kcnn's two-tower ``alexnet`` (Deep Compression, Table 4)."""
    return {HAN_ALEXNET_LAYERS[row]: density for row, (_, density) in HAN_ALEXNET_TABLE4.items()}


def han_vgg16_table5() -> dict[str, float]:
    """Layer name -> density for kcnn's ``vgg16`` (Deep Compression, Table 5)."""
    return {HAN_VGG16_LAYERS[row]: density for row, (_, density) in HAN_VGG16_TABLE5.items()}


TABLES = {"squeezenet_table1": squeezenet_table1, "han_alexnet_table4": han_alexnet_table4,
          "han_vgg16_table5": han_vgg16_table5}

# Table name -> (weight bits, relative-index bits) its paper uses; None: kcnn's default (8-bit indices).
TABLE_BITS = {"squeezenet_table1": (SQUEEZENET_TABLE1_BITS, None), "han_alexnet_table4": (HAN_BITS, HAN_INDEX_BITS),
              "han_vgg16_table5": (HAN_BITS, HAN_INDEX_BITS)}
