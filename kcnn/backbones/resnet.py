"""ResNet-18, -34 and -50 (He et al., 2016, Table 1)."""

from __future__ import annotations

from keras import layers

from kcnn.backbones.base import backbone_model, image_input, register
from kcnn.blocks import batch_norm_options, conv_bn_act, residual_basic, residual_bottleneck

PAPER = "He et al., CVPR 2016, Table 1"
# Blocks per stage conv2_x .. conv5_x, and the block type.
DEPTHS = {
    "resnet18": ((2, 2, 2, 2), residual_basic),
    "resnet34": ((3, 4, 6, 3), residual_basic),
    "resnet50": ((3, 4, 6, 3), residual_bottleneck),
}
WIDTHS = (64, 128, 256, 512)
# Batch norm follows every convolution (section 3.4); the paper gives no momentum or epsilon: Keras' defaults.


def _resnet(depths, block, input_shape, weight_decay, conv_bias, name):
    inputs = image_input(input_shape)
    common = dict(weight_decay=weight_decay, use_bias=conv_bias)
    x = conv_bn_act(inputs, 64, 7, 2, padding=3, name="conv1", **common)
    features = [x]
    # One pixel of zeros on every side (the inputs are ReLU outputs, so zeros act as -inf), as in
    # keras.applications and torchvision; same output size as padding="same".
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    for stage, (depth, width) in enumerate(zip(depths, WIDTHS), start=2):
        for i in range(1, depth + 1):
            stride = 2 if i == 1 and stage > 2 else 1
            x = block(x, width, stride, name=f"conv{stage}_block{i}", **common)
        features.append(x)
    return backbone_model(inputs, features, name)


def _register(variant: str):
    @register(variant, input_shape=(224, 224, 3), head="gap_linear", head_kwargs={"dropout": 0.0}, paper=PAPER)
    @batch_norm_options(momentum=0.99, epsilon=1e-3)
    def builder(input_shape=(224, 224, 3), *, weight_decay=0.0, conv_bias=False, name=variant):
        depths, block = DEPTHS[variant]
        return _resnet(depths, block, input_shape, weight_decay, conv_bias, name)

    depths, block = DEPTHS[variant]
    builder.__name__ = builder.__qualname__ = variant
    builder.__doc__ = (
        f"{variant}: 7x7/2 stem, 3x3/2 max pool, stages of {depths} {block.__name__} blocks with "
        "projection shortcuts where the shape changes. Outputs: stem (stride 2) and conv2_x-conv5_x "
        "(strides 4 to 32). ``bn_epsilon`` and ``conv_bias`` (a bias on every convolution) reproduce "
        "published checkpoints: keras.applications' ResNet50 has conv_bias=True, bn_epsilon=1.001e-5; "
        "torchvision's ResNets bn_epsilon=1e-5."
    )
    return builder


resnet18, resnet34, resnet50 = (_register(v) for v in DEPTHS)
