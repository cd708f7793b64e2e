"""SqueezeNet 1.0 and 1.1 (Iandola et al., 2016)."""

from __future__ import annotations

from keras import layers

from kcnn.backbones.base import backbone_model, image_input, register
from kcnn.blocks import batch_norm_options, conv_bn_act, fire, max_pool

PAPER = "Iandola et al., arXiv:1602.07360, Table 1 (v1.1: the authors' SqueezeNet v1.1 release)"

# Fire modules 2-9 as (squeeze, expand1x1, expand3x3), Table 1.
FIRES = [(16, 64, 64), (16, 64, 64), (32, 128, 128), (32, 128, 128),
         (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256)]
# conv1 (filters, kernel) and the Fire modules after which a 3x3/2 max pool follows.
VERSIONS = {
    "squeezenet1_0": {"conv1": (96, 7), "pool_after": (4, 8)},
    "squeezenet1_1": {"conv1": (64, 3), "pool_after": (3, 5)},
}
BYPASSED = (3, 5, 7, 9)  # the paper's simple bypass, where input and output widths agree


def _squeezenet(version, input_shape, bypass, batch_norm, ceil_mode, name):
    spec = VERSIONS[version]
    inputs = image_input(input_shape)
    filters, kernel = spec["conv1"]
    x = conv_bn_act(inputs, filters, kernel, 2, padding="valid", batch_norm=batch_norm, use_bias=True, name="conv1")
    features = [x]
    x = max_pool(x, ceil_mode=ceil_mode, name="maxpool1")
    for index, (s, e1, e3) in enumerate(FIRES, start=2):
        x = fire(x, s, e1, e3, bypass=bypass and index in BYPASSED, batch_norm=batch_norm, name=f"fire{index}")
        if index in spec["pool_after"]:
            features.append(x)
            x = max_pool(x, ceil_mode=ceil_mode, name=f"maxpool{index}")
    features.append(x)
    return backbone_model(inputs, features, name)


def _register(version: str):
    @register(version, input_shape=(227, 227, 3), head="fully_conv",
              head_kwargs={"dropout": 0.5, "score_activation": "relu"}, paper=PAPER)
    @batch_norm_options(momentum=0.99, epsilon=1e-3)  # batch_norm=True only (not in the paper): Keras' defaults
    def builder(input_shape=(227, 227, 3), *, bypass=False, batch_norm=False, ceil_mode=False, name=version):
        return _squeezenet(version, input_shape, bypass, batch_norm, ceil_mode, name)

    conv1 = VERSIONS[version]["conv1"]
    builder.__name__ = builder.__qualname__ = version
    builder.__doc__ = (
        f"{version}: conv1 ({conv1[0]} {conv1[1]}x{conv1[1]}/2), Fire modules 2-9, 3x3/2 max pools after conv1 "
        f"and fire{VERSIONS[version]['pool_after']}. ``bypass=True`` adds the simple bypass around Fire "
        "3, 5, 7 and 9. The default input is 227x227, the size at which Table 1's 111x111 conv1 "
        "output holds. ``ceil_mode=True`` rounds pooled sizes up, as torchvision's checkpoints were "
        "trained. Outputs: the last map at each resolution."
    )
    return builder


squeezenet1_0, squeezenet1_1 = (_register(v) for v in VERSIONS)
