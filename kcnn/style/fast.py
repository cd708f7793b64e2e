"""Training the fast stylizer with the perceptual loss (Johnson et al., ECCV 2016, section 3).

Feature reconstruction loss at relu3_3 (``block3_conv3_act``), style reconstruction loss at
relu1_2, relu2_2, relu3_3 and relu4_3, total variation regularisation; both feature losses are
normalised as the paper defines them: (1 / C H W) ||phi(y') - phi(y)||^2 and the squared
Frobenius norm of the difference of Gram matrices divided by C H W. The loss is a
``keras.losses.Loss``, so ``Model.fit`` trains the stylizer on every backend.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from kcnn.style.losses import gram_matrix, total_variation_loss

CONTENT_LAYERS = ("block3_conv3_act",)
STYLE_LAYERS = ("block1_conv2_act", "block2_conv2_act", "block3_conv3_act", "block4_conv3_act")


def normalized_gram(features):
    shape = ops.shape(features)
    size = ops.cast(shape[1] * shape[2] * shape[3], features.dtype)
    return gram_matrix(features) / size


def _mean_square(x):
    return ops.mean(ops.square(x))


class PerceptualLoss(keras.losses.Loss):
    """``y_true``: content images, ``y_pred``: the stylizer's output, both RGB in [0, 255]."""

    def __init__(self, extractor, style_image, *, content_count: int = 1, content_weight: float = 1.0,
                 style_weight: float = 5.0, tv_weight: float = 1e-6, name: str = "perceptual_loss"):
        super().__init__(name=name, reduction="sum_over_batch_size")
        self.extractor = extractor
        self.content_count = content_count
        self.content_weight, self.style_weight, self.tv_weight = content_weight, style_weight, tv_weight
        style = np.asarray(style_image, "float32")[None]
        self.style_grams = [ops.convert_to_numpy(normalized_gram(f)) for f in extractor(style)[content_count:]]
        self.last = {}

    def parts(self, y_true, y_pred):
        generated = self.extractor(y_pred)
        targets = self.extractor(y_true)[: self.content_count]
        batch = ops.cast(ops.shape(y_pred)[0], "float32")
        content = sum(_mean_square(g - t) for g, t in zip(generated[: self.content_count], targets))
        style = sum(ops.sum(ops.square(normalized_gram(g) - gram)) / batch
                    for g, gram in zip(generated[self.content_count:], self.style_grams))
        tv = total_variation_loss(y_pred) / batch
        return {"content": self.content_weight * content, "style": self.style_weight * style,
                "tv": self.tv_weight * tv}

    def call(self, y_true, y_pred):
        parts = self.parts(ops.cast(y_true, "float32"), ops.cast(y_pred, "float32"))
        return parts["content"] + parts["style"] + parts["tv"]


def compile_for_style(stylizer: keras.Model, style_image, *, feature_weights=None, learning_rate: float = 1e-3,
                      content_weight: float = 1.0, style_weight: float = 5.0, tv_weight: float = 1e-6,
                      extractor=None) -> PerceptualLoss:
    """Compile ``stylizer`` with Adam and the perceptual loss of ``style_image``; returns the loss.

    Fit it on ``(content, content)`` pairs of RGB images in [0, 255].
    """
    from kcnn.style.features import vgg19_features

    extractor = extractor or vgg19_features(CONTENT_LAYERS + STYLE_LAYERS, weights=feature_weights)
    loss = PerceptualLoss(extractor, style_image, content_count=len(CONTENT_LAYERS), content_weight=content_weight,
                          style_weight=style_weight, tv_weight=tv_weight)
    stylizer.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, jit_compile=False)
    return loss
