"""SqueezeNet's Fire module (Iandola et al., 2016, section 3.2)."""

from __future__ import annotations

from keras import layers

from kcnn.blocks.common import Activation, channels, conv_bn_act


def fire(
    x,
    squeeze: int,
    expand1x1: int,
    expand3x3: int,
    *,
    bypass: bool = False,
    batch_norm: bool = False,
    activation: Activation = "relu",
    weight_decay: float = 0.0,
    name: str,
):
    """Fire module: a 1x1 ``squeeze`` layer feeding 1x1 and 3x3 ``expand`` layers.

    The two expand outputs are concatenated on channels, so the module emits
    ``expand1x1 + expand3x3`` channels. ``bypass=True`` adds the paper's simple
    bypass (an identity shortcut), which needs as many input as output channels.
    The paper uses no batch norm; ``batch_norm=True`` adds it after each conv.
    Layers: ``{name}_squeeze1x1``, ``{name}_expand1x1``, ``{name}_expand3x3``, ``{name}_concat``.
    """
    if min(squeeze, expand1x1, expand3x3) < 1:
        raise ValueError(f"fire {name}: squeeze and expand filters must be >= 1")
    if bypass and channels(x) != expand1x1 + expand3x3:
        raise ValueError(
            f"fire {name}: simple bypass needs as many input channels ({channels(x)}) as "
            f"output channels ({expand1x1 + expand3x3}); use a complex (1x1 conv) bypass instead"
        )
    common = dict(activation=activation, batch_norm=batch_norm, use_bias=True, weight_decay=weight_decay)
    s = conv_bn_act(x, squeeze, 1, name=f"{name}_squeeze1x1", **common)
    e1 = conv_bn_act(s, expand1x1, 1, name=f"{name}_expand1x1", **common)
    e3 = conv_bn_act(s, expand3x3, 3, padding="same", name=f"{name}_expand3x3", **common)
    out = layers.Concatenate(axis=-1, name=f"{name}_concat")([e1, e3])
    if bypass:
        out = layers.Add(name=f"{name}_bypass")([x, out])
    return out
