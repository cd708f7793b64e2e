"""Classification heads: dense (LeNet/AlexNet/VGG), global-pool linear, fully convolutional."""

from __future__ import annotations

from keras import layers

from kcnn.blocks.common import KERNEL_INIT, get_activation
from kcnn.heads.base import HEADS, check_dropout, check_num_classes, softmax


@HEADS.register("dense")
def dense(backbone, num_classes: int, *, hidden=(4096, 4096), dropout: float = 0.5, activation="relu",
          pool: str = "flatten", name: str = "head"):
    """Flatten (or globally pool) the deepest map, hidden dense layers with dropout, softmax.

    ``pool="flatten"`` is the classic layout and needs a fixed input size;
    ``pool="avg"`` or ``"max"`` accepts any size. Layers: ``fc1``, ``fc2``, ... and
    ``predictions``; the last dense layer and softmax compute in float32.
    """
    check_num_classes(num_classes)
    check_dropout(dropout)
    get_activation(activation)
    x = backbone.outputs[-1]
    if pool == "flatten":
        if any(d is None for d in x.shape[1:]):
            raise ValueError(
                f"the dense head with pool='flatten' needs a fixed input size, but the deepest feature map "
                f"has shape {tuple(x.shape)}; pass input_shape with fixed height and width, or use "
                "head_kwargs={'pool': 'avg'} (or the 'gap_linear' or 'fully_conv' head)"
            )
        x = layers.Flatten(name=f"{name}_flatten")(x)
    elif pool in ("avg", "max"):
        pooling = layers.GlobalAveragePooling2D if pool == "avg" else layers.GlobalMaxPooling2D
        x = pooling(name=f"{name}_pool")(x)
    else:
        raise ValueError(f"pool must be 'flatten', 'avg' or 'max', got {pool!r}")
    for i, units in enumerate(hidden, start=1):
        x = layers.Dense(units, activation=activation, kernel_initializer=KERNEL_INIT, name=f"fc{i}")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"fc{i}_dropout")(x)
    x = layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return softmax(x)


@HEADS.register("gap_linear")
def gap_linear(backbone, num_classes: int, *, dropout: float = 0.2, name: str = "head"):
    """Global average pool, dropout, one dense layer, softmax (MobileNet, ResNet, DenseNet, GoogLeNet)."""
    check_num_classes(num_classes)
    check_dropout(dropout)
    x = layers.GlobalAveragePooling2D(name=f"{name}_pool")(backbone.outputs[-1])
    if dropout:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    x = layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return softmax(x)


@HEADS.register("fully_conv")
def fully_conv(backbone, num_classes: int, *, dropout: float = 0.5, score_activation=None, name: str = "head"):
    """Dropout, 1x1 convolution to ``num_classes`` score maps, global average pool, softmax.

    SqueezeNet's conv10 layout (its paper also applies ReLU to the scores:
    ``score_activation="relu"``). No dense layer, so any input size works.
    """
    check_num_classes(num_classes)
    check_dropout(dropout)
    get_activation(score_activation)
    x = backbone.outputs[-1]
    if dropout:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    x = layers.Conv2D(num_classes, 1, kernel_initializer=KERNEL_INIT, dtype="float32", name="conv_scores")(x)
    if score_activation is not None:
        x = layers.Activation(score_activation, dtype="float32", name="conv_scores_act")(x)
    x = layers.GlobalAveragePooling2D(dtype="float32", name=f"{name}_pool")(x)
    return softmax(x)
