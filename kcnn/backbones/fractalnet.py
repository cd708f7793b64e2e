"""FractalNet (Larsson, Maire and Shakhnarovich, ICLR 2017): the CIFAR network of section 4."""

from __future__ import annotations

from keras import layers

from kcnn.backbones.base import backbone_model, image_input, register
from kcnn.blocks import batch_norm_options
from kcnn.blocks.fractal import fractal_block
from kcnn.layers import FractalPathSampler

PAPER = "Larsson et al., ICLR 2017, section 4 and Table 1"
# Section 4: B = 5 blocks, each followed by 2x2 max pooling; filter channels per block.
CIFAR_WIDTHS = (64, 128, 256, 512, 512)
# Per-block dropout of the "+ drop-path + dropout" rows of Table 1.
CIFAR_DROPOUT = (0.0, 0.1, 0.2, 0.3, 0.4)


def fractalnet(input_shape=(32, 32, 3), *, widths=CIFAR_WIDTHS, columns: int = 3, local_drop: float = 0.15,
               global_ratio: float = 0.5, dropout=None, deepest_only: bool = False, weight_decay: float = 0.0,
               name: str = "fractalnet"):
    """Blocks of ``widths`` channels, each a fractal of ``columns`` columns then 2x2 max pooling.

    The deepest path has ``len(widths) * 2**(columns - 1)`` convolutions (20 for the paper's
    CIFAR network: B=5, C=3). Drop-path, in training only: each batch is global with
    probability ``global_ratio`` (one column kept through the whole network) and local
    otherwise (each join input dropped with ``local_drop``). ``dropout`` gives a rate per
    block (the paper's (0, 0.1, 0.2, 0.3, 0.4)); ``deepest_only=True`` builds the deepest
    column alone, the paper's fixed-depth extraction, with the same layer names.
    Outputs: the pooled map of every block (strides 2 to 32).
    """
    dropout = tuple(dropout) if dropout is not None else (0.0,) * len(widths)
    if len(dropout) != len(widths):
        raise ValueError(f"dropout needs one rate per block ({len(widths)}), got {dropout!r}")
    inputs = image_input(input_shape)
    code = None if deepest_only else FractalPathSampler(columns, global_ratio, name="drop_path_sampler")(inputs)
    x, features = inputs, []
    for b, (filters, rate) in enumerate(zip(widths, dropout), start=1):
        x = fractal_block(x, filters, columns, code, drop_rate=local_drop, dropout=rate, deepest_only=deepest_only,
                          weight_decay=weight_decay, name=f"block{b}")
        x = layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
        features.append(x)
    return backbone_model(inputs, features, name)


@register("fractalnet_cifar", input_shape=(32, 32, 3), head="gap_linear", head_kwargs={"dropout": 0.0},
          paper=PAPER)
@batch_norm_options(momentum=0.99, epsilon=1e-3)  # not in the paper: Keras' defaults
def fractalnet_cifar(input_shape=(32, 32, 3), *, columns=3, local_drop=0.15, global_ratio=0.5, dropout=None,
                     deepest_only=False, weight_decay=0.0, name="fractalnet_cifar"):
    """The paper's CIFAR/SVHN FractalNet: B=5 blocks of 64, 128, 256, 512, 512 channels, C=3 columns
    (20 layers on the deepest path; ``columns=4`` gives the 40-layer network)."""
    return fractalnet(input_shape, columns=columns, local_drop=local_drop, global_ratio=global_ratio,
                      dropout=dropout, deepest_only=deepest_only, weight_decay=weight_decay, name=name)
