"""FractalNet's fractal block (Larsson, Maire and Shakhnarovich, 2016), built by its expansion rule."""

from __future__ import annotations

from keras import layers

from kcnn.blocks.common import conv_bn_act
from kcnn.layers import FractalJoin


def fractal_block(x, filters: int, columns: int, path_code, *, drop_rate: float = 0.15, dropout: float = 0.0,
                  deepest_only: bool = False, weight_decay: float = 0.0, name: str):
    """f_1(z) = conv(z); f_{C+1}(z) = join(f_C(join(f_C(z)))) with conv(z) beside it (paper eq. 1).

    ``columns`` is C; column 0 (named ``col{C}``) is the deepest, with 2^(C-1) conv-BN-ReLU
    layers; the shallowest (``col1``) has one. Joins take the element-wise mean of every
    column ending there (:class:`kcnn.layers.FractalJoin`, local drop-path with
    ``drop_rate``, global drop-path driven by ``path_code``). ``deepest_only`` builds the
    deepest column alone, with the same layer names, so a trained network's weights load
    into it by name. ``dropout`` follows each convolution when set.
    """
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    counters = [0] * columns

    def conv(z, column):
        counters[column] += 1
        z = conv_bn_act(z, filters, 3, weight_decay=weight_decay,
                        name=f"{name}_col{columns - column}_{counters[column]}")
        if dropout:
            z = layers.Dropout(dropout, name=f"{name}_col{columns - column}_{counters[column]}_dropout")(z)
        return z

    joins = [0]

    def join(branches, first_column):
        if len(branches) == 1:
            return branches[0]
        joins[0] += 1
        return FractalJoin(list(range(first_column, first_column + len(branches))), drop_rate,
                           name=f"{name}_join{joins[0]}")([*branches, path_code])

    def expand(z, c):
        """The columns 0..c-1 of f_c(z), deepest first (each still to be joined)."""
        if c == 1:
            return [conv(z, 0)]
        inner = expand(z, c - 1)
        outer = expand(join(inner, 0), c - 1)
        return outer + [conv(z, c - 1)]

    if deepest_only:
        for _ in range(2 ** (columns - 1)):
            x = conv(x, 0)
        return x
    return join(expand(x, columns), 0)
