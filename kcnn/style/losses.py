"""The losses of neural style transfer (Gatys, Ecker and Bethge, CVPR 2016), in keras.ops.

Notation of the paper: a layer l has N_l feature maps of M_l = height x width positions;
F^l is the N_l x M_l matrix of the generated image's responses, P^l the content image's, and
the Gram matrix G^l = F^l (F^l)^T holds the inner products between feature maps (eq. 3).

- content loss, eq. 1: 1/2 sum (F^l - P^l)^2
- style loss of one layer, eq. 4: 1 / (4 N_l^2 M_l^2) sum (G^l - A^l)^2, A^l the style image's Gram
- total variation (Mahendran and Vedaldi, 2015, beta = 2): sum of squared neighbour differences

All functions take channels-last feature maps ``[batch, height, width, channels]`` and return a
scalar summed over the batch.
"""

from __future__ import annotations

from keras import ops


def gram_matrix(features):
    """``G = F F^T`` per image: ``[batch, channels, channels]``, unnormalised as in the paper's eq. 3."""
    shape = ops.shape(features)
    flat = ops.reshape(features, (shape[0], -1, shape[-1]))  # [batch, M, N]
    return ops.matmul(ops.transpose(flat, (0, 2, 1)), flat)


def content_loss(features, content_features):
    """Eq. 1: half the squared error between the responses to the generated and the content image."""
    return 0.5 * ops.sum(ops.square(features - content_features))


def style_layer_loss(features, style_gram):
    """Eq. 4 for one layer, against the style image's Gram matrix ``style_gram`` (from :func:`gram_matrix`)."""
    shape = ops.shape(features)
    positions = ops.cast(shape[1] * shape[2], features.dtype)
    channels = ops.cast(shape[3], features.dtype)
    difference = gram_matrix(features) - style_gram
    return ops.sum(ops.square(difference)) / (4.0 * ops.square(channels) * ops.square(positions))


def style_loss(features_per_layer, style_grams, layer_weights=None):
    """Eq. 5: the weighted sum of the layers' eq.-4 losses (equal weights 1/L unless given)."""
    count = len(features_per_layer)
    if len(style_grams) != count:
        raise ValueError(f"style_loss: {count} feature maps but {len(style_grams)} style Gram matrices")
    weights = layer_weights if layer_weights is not None else [1.0 / count] * count
    total = 0.0
    for features, gram, weight in zip(features_per_layer, style_grams, weights):
        total = total + weight * style_layer_loss(features, gram)
    return total


def total_variation_loss(images):
    """Sum of squared differences between vertically and horizontally neighbouring pixels."""
    vertical = images[:, 1:, :, :] - images[:, :-1, :, :]
    horizontal = images[:, :, 1:, :] - images[:, :, :-1, :]
    return ops.sum(ops.square(vertical)) + ops.sum(ops.square(horizontal))
