"""DenseNet-121 (Huang et al., 2017, Table 1)."""

from __future__ import annotations

from keras import layers

from kcnn.backbones.base import backbone_model, image_input, register
from kcnn.blocks import activation_layer, batch_norm, batch_norm_options, conv_bn_act, dense_block, transition
from kcnn.blocks.densenet import BN_EPSILON

PAPER = "Huang et al., CVPR 2017, Table 1"
BLOCKS = {"densenet121": (6, 12, 24, 16)}


@register("densenet121", input_shape=(224, 224, 3), head="gap_linear", head_kwargs={"dropout": 0.0}, paper=PAPER)
@batch_norm_options(momentum=0.99, epsilon=BN_EPSILON)  # the reference (Torch) implementation's epsilon
def densenet121(input_shape=(224, 224, 3), *, growth_rate=32, compression=0.5, weight_decay=0.0,
                name="densenet121"):
    """DenseNet-BC: 7x7/2 stem with 2k channels, dense blocks of 6, 12, 24 and 16 layers, transitions.

    Outputs: stem (stride 2), each dense block's output before its transition
    (strides 4 to 16), and the final batch-normalised map (stride 32). ``bn_epsilon``
    defaults to keras.applications' 1.001e-5; torchvision's checkpoint uses 1e-5.
    """
    inputs = image_input(input_shape)
    x = conv_bn_act(inputs, 2 * growth_rate, 7, 2, padding=3, weight_decay=weight_decay, name="conv1")
    features = [x]
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)  # as keras.applications and torchvision pad it
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    blocks = BLOCKS["densenet121"]
    for i, num_layers in enumerate(blocks, start=1):
        x = dense_block(x, num_layers, growth_rate, weight_decay=weight_decay, name=f"dense{i}")
        if i < len(blocks):
            features.append(x)
            x = transition(x, compression, weight_decay=weight_decay, name=f"transition{i}")
    x = batch_norm(x, "final_bn")
    features.append(activation_layer(x, "relu", "final_act"))
    return backbone_model(inputs, features, name)
