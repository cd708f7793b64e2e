"""Named per-layer density tables, with the figures their papers publish beside them.

``squeezenet_table1`` is Iandola et al., "SqueezeNet: AlexNet-level accuracy with 50x fewer
parameters and <0.5MB model size", arXiv:1602.07360, Table 1: the density ("sparsity" in the
paper's words: the share of weights kept) of each Fire module's squeeze, expand 1x1 and expand
3x3 filters, conv1 kept whole, conv10 at 20%, weights at 6 bits. Parameter counts include the
biases, which are not pruned (that is how the paper's counts add up).
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


TABLES = {"squeezenet_table1": squeezenet_table1}
