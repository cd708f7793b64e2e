"""MobileNet v1 (Howard et al., 2017) and v2 (Sandler et al., 2018)."""

from __future__ import annotations

from kcnn.backbones.base import backbone_model, check_width, image_input, register
from kcnn.blocks import batch_norm_options, conv_bn_act, depthwise_separable, inverted_residual, make_divisible

# v1, Table 1: (pointwise filters, stride) for the 13 depthwise-separable layers.
V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
             (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]
# v2, Table 2: expansion t, output channels c, repeats n, first stride s.
V2_BLOCKS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
             (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def _stride_level_outputs(maps_with_strides):
    """Keep the last map before each stride-2 step, plus the final map."""
    features = []
    for i, (x, stride) in enumerate(maps_with_strides):
        last = i == len(maps_with_strides) - 1
        if last or maps_with_strides[i + 1][1] == 2:
            features.append(x)
    return features


@register("mobilenet_v1", input_shape=(224, 224, 3), head="gap_linear", head_kwargs={"dropout": 1e-3},
          paper="Howard et al., arXiv:1704.04861, Table 1")
@batch_norm_options(momentum=0.99, epsilon=1e-3)  # not in the paper: Keras' defaults
def mobilenet_v1(input_shape=(224, 224, 3), *, width=1.0, depth_multiplier=1, weight_decay=0.0,
                 activation="relu", name="mobilenet_v1"):
    """A 3x3/2 convolution then 13 depthwise-separable layers; ``width`` is the paper's alpha.

    The paper uses ReLU; keras.applications' checkpoints were trained with ``activation="relu6"``.
    """
    check_width(width)
    if not isinstance(depth_multiplier, int) or depth_multiplier < 1:
        raise ValueError(f"depth_multiplier must be an integer >= 1, got {depth_multiplier!r}")
    inputs = image_input(input_shape)
    x = conv_bn_act(inputs, int(32 * width), 3, 2, activation=activation, weight_decay=weight_decay, name="conv1")
    maps = [(x, 2)]
    for i, (filters, stride) in enumerate(V1_BLOCKS, start=1):
        x = depthwise_separable(x, int(filters * width), stride, depth_multiplier=depth_multiplier,
                                activation=activation, weight_decay=weight_decay, name=f"conv_ds_{i}")
        maps.append((x, stride))
    return backbone_model(inputs, _stride_level_outputs(maps), name)


@register("mobilenet_v2", input_shape=(224, 224, 3), head="gap_linear", head_kwargs={"dropout": 0.2},
          paper="Sandler et al., CVPR 2018, Table 2")
@batch_norm_options(momentum=0.999, epsilon=1e-3)  # the reference (TF) implementation's values
def mobilenet_v2(input_shape=(224, 224, 3), *, width=1.0, weight_decay=0.0, symmetric_padding=False,
                 name="mobilenet_v2"):
    """A 3x3/2 convolution, 17 inverted residual blocks, a 1x1 convolution to 1280 channels.

    Widths are scaled by ``width`` and rounded to multiples of 8; the last layer
    stays at 1280 channels for widths up to 1.0, as in the paper. Stride-2 3x3
    layers pad as TensorFlow's "same" (keras.applications); ``symmetric_padding=True``
    pads one pixel on every side and ``bn_epsilon=1e-5`` as torchvision's checkpoint does.
    """
    check_width(width)
    inputs = image_input(input_shape)
    bn = dict(activation="relu6", weight_decay=weight_decay)
    x = conv_bn_act(inputs, make_divisible(32 * width), 3, 2, padding=1 if symmetric_padding else "same",
                    name="conv1", **bn)
    maps, block = [(x, 2)], 0
    for t, c, n, s in V2_BLOCKS:
        for i in range(n):
            stride = s if i == 0 else 1
            padding = 1 if symmetric_padding and stride > 1 else "same"
            x = inverted_residual(x, make_divisible(c * width), stride, expansion=t, weight_decay=weight_decay,
                                  padding=padding, name=f"block_{block}")
            maps.append((x, stride))
            block += 1
    last = make_divisible(1280 * width) if width > 1.0 else 1280
    x = conv_bn_act(x, last, 1, name="conv_last", **bn)
    maps.append((x, 1))
    return backbone_model(inputs, _stride_level_outputs(maps), name)
