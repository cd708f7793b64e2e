"""The loss network of style transfer: kcnn's VGG-19 (or any functional model) cut at named layers.

Layer names follow kcnn's VGG builders: ``block{b}_conv{i}_act`` is the rectified output of the
paper's conv{b}_{i}. Gatys et al. use conv4_2 for content and conv1_1 ... conv5_1 for style.
The network sees images as the Caffe-trained VGG checkpoints expect them: RGB pixels in
[0, 255] turned into BGR with the ImageNet mean subtracted.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
from keras import ops

CONTENT_LAYERS = ("block4_conv2_act",)
STYLE_LAYERS = ("block1_conv1_act", "block2_conv1_act", "block3_conv1_act", "block4_conv1_act", "block5_conv1_act")
# ImageNet mean of the Caffe VGG checkpoints, in BGR order (Simonyan and Zisserman's released models).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

RANDOM_FEATURES_WARNING = (
    "style transfer on a VGG-19 with random weights: its features carry no learnt notion of content or style, "
    "so results look like textures, not stylised photos. Pass weights='imagenet' (or a checkpoint path) "
    "where the pretrained checkpoint is available."
)


class FeatureExtractor:
    """Callable ``images [b, h, w, 3] in [0, 255] -> list of feature maps`` at ``layer_names``."""

    def __init__(self, model: keras.Model, layer_names, *, caffe_preprocessing: bool = True):
        missing = [name for name in layer_names if name not in {layer.name for layer in model.layers}]
        if missing:
            names = [layer.name for layer in model.layers if "conv" in layer.name][:12]
            raise ValueError(f"the feature model has no layer named {missing[0]!r}; its convolution layers "
                             f"include {', '.join(names)}")
        self.layer_names = tuple(layer_names)
        self.model = keras.Model(model.inputs[0], [model.get_layer(name).output for name in self.layer_names],
                                 name=f"{model.name}_features")
        self.model.trainable = False
        self.caffe_preprocessing = caffe_preprocessing

    def __call__(self, images):
        x = ops.cast(images, "float32")
        if self.caffe_preprocessing:
            x = x[..., ::-1] - ops.convert_to_tensor(np.asarray(CAFFE_MEAN_BGR, "float32"))
        outputs = self.model(x, training=False)
        return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def vgg19_features(layer_names, *, weights=None) -> FeatureExtractor:
    """kcnn's VGG-19 convolutional part at any input size, cut at ``layer_names``.

    ``weights``: ``None`` (random, with a warning), ``"imagenet"`` or a checkpoint path, loaded
    through ``kcnn.weights`` when it is available.
    """
    import kcnn

    backbone = kcnn.backbones.vgg19(input_shape=(None, None, 3))
    if weights is None:
        warnings.warn(RANDOM_FEATURES_WARNING, stacklevel=3)
    else:
        try:
            from kcnn import weights as weight_import
        except ImportError:
            raise ValueError(f"weights={weights!r} needs kcnn.weights (pretrained-weight import), which this "
                             "kcnn does not have; pass weights=None for random features") from None
        weight_import.load_backbone_weights(backbone, "vgg19", weights)
    return FeatureExtractor(backbone, layer_names)
