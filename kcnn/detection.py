"""FCOS detection (Tian et al., 2019), in ``keras.ops``: locations, target assignment, losses, decoding.

A detector built with ``head="fcos"`` returns one float32 tensor ``[batch, locations, classes + 5]``
over the locations of every pyramid level (level by level, row-major): ``classes`` class
logits, the location's box ``(ymin, xmin, ymax, xmax)`` in input pixels, and a centerness
logit. The box comes from the location's predicted distances to the four sides (the
``FCOSDecode`` layer adds the location). Boxes everywhere in kcnn are ``(ymin, xmin, ymax,
xmax)`` in pixels with ``ymax``/``xmax`` exclusive, the convention of ``tf.image`` and of
the TF Object Detection API's exports (normalised there).

Training targets follow the paper (section 3.1 and 3.2, and the centre sampling of its
improved version): a location is positive for a ground-truth box when it falls in the box's
centre region (``center_radius`` strides around the centre, clipped to the box) and the
largest of its four distances lies in its level's size range; among several such boxes the
smallest wins. Losses: sigmoid focal loss (Lin et al., 2017; alpha 0.25, gamma 2) over all
locations, normalised by the number of positives; GIoU loss (Rezatofighi et al., 2019) of
the positives' boxes weighted by their centerness targets; binary cross-entropy of the
centerness. Only keras, keras.ops and numpy are used, so this runs on every backend.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0
PRIOR_PROBABILITY = 0.01  # the paper's initial foreground probability of every class logit
CENTER_RADIUS = 1.5  # centre sampling radius in strides (FCOS' improvements; mmdetection's default)
INFINITY = 1e8


def level_ranges(strides, boundaries=None) -> list[tuple[float, float]]:
    """Each level's range of the largest distance ``(low, high]`` it regresses.

    ``boundaries=None`` is the paper's rule: level ``i`` takes ``(4 s_i, 8 s_i]`` with the
    first level open below and the last above (P3-P7 at strides 8-128 give 0, 64, 128, 256, 512,
    infinity). ``boundaries`` lists the ``len(strides) - 1`` inner limits explicitly, for images
    much smaller than COCO's.
    """
    strides = [int(s) for s in strides]
    if boundaries is None:
        boundaries = [8.0 * s for s in strides[:-1]]
    boundaries = [float(b) for b in boundaries]
    if len(boundaries) != len(strides) - 1 or any(b <= a for a, b in zip(boundaries, boundaries[1:])) or \
            any(b <= 0 for b in boundaries):
        raise ValueError(f"size boundaries must be {len(strides) - 1} increasing positive numbers (one between each "
                         f"two of the levels at strides {strides}), got {boundaries}")
    edges = [0.0, *boundaries, INFINITY]
    return list(zip(edges[:-1], edges[1:]))


def level_points(grids, strides) -> tuple[np.ndarray, np.ndarray]:
    """Every location's centre ``(y, x)`` in input pixels ``[N, 2]`` and its level's stride ``[N]``.

    The location ``(i, j)`` of a level with stride ``s`` sits at ``(i s + s // 2, j s + s // 2)``
    (the paper's ``(floor(s / 2) + x s, floor(s / 2) + y s)``).
    """
    points, point_strides = [], []
    for (height, width), stride in zip(grids, strides):
        ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
        offset = stride // 2
        points.append(np.stack([ys.ravel() * stride + offset, xs.ravel() * stride + offset], -1))
        point_strides.append(np.full(height * width, stride))
    return np.concatenate(points).astype(np.float32), np.concatenate(point_strides).astype(np.float32)


@keras.saving.register_keras_serializable(package="kcnn")
class FCOSDecode(keras.layers.Layer):
    """Per-level ``[B, H, W, classes + 5]`` maps (logits, distances t, l, b, r, centerness) -> ``[B, N, classes + 5]``.

    The distances become boxes about each location: ``(y - t, x - l, y + b, x + r)``. Needs each
    level's height and width fixed when the model is built (a detector has a fixed input size).
    """

    def __init__(self, strides, **kwargs):
        super().__init__(**kwargs)
        self.strides = [int(s) for s in strides]

    def build(self, input_shapes):
        grids = []
        for shape in input_shapes:
            if shape[1] is None or shape[2] is None:
                raise ValueError("an FCOS detector needs a fixed input size (input_shape=(H, W, C)): its locations "
                                 f"are laid out when the model is built; got a level of shape {shape}")
            grids.append((int(shape[1]), int(shape[2])))
        if len(grids) != len(self.strides):
            raise ValueError(f"FCOSDecode got {len(grids)} levels for {len(self.strides)} strides")
        self.grids = grids
        points, _ = level_points(grids, self.strides)
        self._points = points  # numpy: a constant of the graph

    def call(self, inputs):
        flat = [ops.reshape(level, (-1, h * w, level.shape[-1])) for level, (h, w) in zip(inputs, self.grids)]
        x = ops.concatenate(flat, axis=1)
        classes = x.shape[-1] - 5
        logits, distances, centerness = x[..., :classes], x[..., classes:classes + 4], x[..., classes + 4:]
        points = ops.convert_to_tensor(self._points, dtype=x.dtype)
        y, x_ = points[:, 0], points[:, 1]
        t, l, b, r = (distances[..., i] for i in range(4))
        boxes = ops.stack([y - t, x_ - l, y + b, x_ + r], axis=-1)
        return ops.concatenate([logits, boxes, centerness], axis=-1)

    def compute_output_shape(self, input_shapes):
        count = sum(int(s[1]) * int(s[2]) for s in input_shapes)
        return (input_shapes[0][0], count, input_shapes[0][-1])

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """The locations ``[N, 2]`` and their strides ``[N]`` (after the model is built)."""
        return level_points(self.grids, self.strides)

    def get_config(self):
        return {**super().get_config(), "strides": self.strides}


@keras.saving.register_keras_serializable(package="kcnn")
class LevelScale(keras.layers.Layer):
    """A learnable scalar per pyramid level multiplying the shared head's regression output (FCOS, section 3.2)."""

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(), initializer="ones")

    def call(self, inputs):
        return inputs * ops.cast(self.scale, inputs.dtype)


@keras.saving.register_keras_serializable(package="kcnn")
class ExpStride(keras.layers.Layer):
    """``exp(x) * stride``: positive distances on the level's scale (the exponent is capped at 10 against overflow)."""

    def __init__(self, stride: int, **kwargs):
        super().__init__(**kwargs)
        self.stride = int(stride)

    def call(self, inputs):
        return ops.exp(ops.minimum(inputs, 10.0)) * float(self.stride)

    def get_config(self):
        return {**super().get_config(), "stride": self.stride}


def decoder_of(model) -> FCOSDecode:
    """The model's FCOSDecode layer; a clear error for a model that is not an FCOS detector."""
    for layer in model.layers:
        if isinstance(layer, FCOSDecode):
            return layer
    raise ValueError(f"model {model.name!r} has no FCOS detection head (build it with head='fcos')")


def split_outputs(outputs, num_classes: int):
    """``[B, N, classes + 5]`` -> class logits ``[B, N, K]``, boxes ``[B, N, 4]``, centerness logits ``[B, N]``."""
    return outputs[..., :num_classes], outputs[..., num_classes:num_classes + 4], outputs[..., num_classes + 4]


def scores(outputs, num_classes: int):
    """Detection scores ``[B, N, K]``: ``sqrt(sigmoid(class) * sigmoid(centerness))``, the paper's ranking
    (class score times centerness), kept on the probabilities' scale by the square root."""
    logits, _, centerness = split_outputs(outputs, num_classes)
    return ops.sqrt(ops.sigmoid(logits) * ops.sigmoid(centerness)[..., None])


def assign_targets(points, strides, ranges, boxes, classes, center_radius: float = CENTER_RADIUS):
    """FCOS targets of a batch: class ``[B, N]`` (-1: background), box ``[B, N, 4]``, centerness ``[B, N]``.

    ``points`` ``[N, 2]`` and ``strides`` ``[N]`` (numpy, from ``FCOSDecode.points``); ``ranges``: each
    location's ``(low, high]`` as ``[N, 2]``; ``boxes`` ``[B, M, 4]`` pixels and ``classes`` ``[B, M]``
    int (padding: class -1).
    """
    boxes = ops.cast(boxes, "float32")
    classes = ops.cast(classes, "int32")
    py = ops.convert_to_tensor(points[None, :, 0, None], "float32")  # [1, N, 1]
    px = ops.convert_to_tensor(points[None, :, 1, None], "float32")
    radius = ops.convert_to_tensor(strides[None, :, None] * center_radius, "float32")
    low = ops.convert_to_tensor(ranges[None, :, 0, None], "float32")
    high = ops.convert_to_tensor(ranges[None, :, 1, None], "float32")
    ymin, xmin, ymax, xmax = (boxes[:, None, :, i] for i in range(4))  # [B, 1, M]
    top, left, bottom, right = py - ymin, px - xmin, ymax - py, xmax - px  # [B, N, M]
    cy, cx = (ymin + ymax) / 2, (xmin + xmax) / 2
    in_center = ((py > ops.maximum(cy - radius, ymin)) & (py < ops.minimum(cy + radius, ymax))
                 & (px > ops.maximum(cx - radius, xmin)) & (px < ops.minimum(cx + radius, xmax)))
    largest = ops.maximum(ops.maximum(top, bottom), ops.maximum(left, right))
    valid = in_center & (largest > low) & (largest <= high) & (classes[:, None, :] >= 0)
    area = (ymax - ymin) * (xmax - xmin)
    masked = ops.where(valid, area, INFINITY)
    choice = ops.argmin(masked, axis=-1)  # [B, N]: the smallest box that claims the location
    positive = ops.min(masked, axis=-1) < INFINITY
    one_hot = ops.one_hot(choice, ops.shape(boxes)[1], dtype="float32")  # [B, N, M]
    target_boxes = ops.einsum("bnm,bmk->bnk", one_hot, boxes)
    target_classes = ops.sum(one_hot * ops.cast(classes[:, None, :], "float32"), axis=-1)
    target_classes = ops.where(positive, ops.cast(ops.round(target_classes), "int32"), -1)
    return target_classes, target_boxes, centerness_target(points, target_boxes, positive)


def centerness_target(points, target_boxes, positive):
    """``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` of each location's box (0 where negative)."""
    py = ops.convert_to_tensor(points[None, :, 0], "float32")
    px = ops.convert_to_tensor(points[None, :, 1], "float32")
    top, left = py - target_boxes[..., 0], px - target_boxes[..., 1]
    bottom, right = target_boxes[..., 2] - py, target_boxes[..., 3] - px
    tiny = 1e-6
    vertical = ops.minimum(top, bottom) / ops.maximum(ops.maximum(top, bottom), tiny)
    horizontal = ops.minimum(left, right) / ops.maximum(ops.maximum(left, right), tiny)
    value = ops.sqrt(ops.clip(vertical, 0.0, 1.0) * ops.clip(horizontal, 0.0, 1.0))
    return ops.where(positive, value, 0.0)


def box_area(boxes):
    return ops.maximum(boxes[..., 2] - boxes[..., 0], 0.0) * ops.maximum(boxes[..., 3] - boxes[..., 1], 0.0)


def _overlap_and_union(predicted, target):
    top_left = ops.maximum(predicted[..., :2], target[..., :2])
    bottom_right = ops.minimum(predicted[..., 2:], target[..., 2:])
    overlap = ops.prod(ops.maximum(bottom_right - top_left, 0.0), axis=-1)
    return overlap, box_area(predicted) + box_area(target) - overlap


def iou(predicted, target):
    """IoU of paired boxes ``[..., 4]``."""
    overlap, union = _overlap_and_union(predicted, target)
    return overlap / ops.maximum(union, 1e-6)


def giou(predicted, target):
    """Generalised IoU of paired boxes ``[..., 4]`` (Rezatofighi et al., 2019): IoU minus the share of the
    smallest enclosing box that neither covers; in [-1, 1], 1 only for equal boxes."""
    overlap, union = _overlap_and_union(predicted, target)
    enclosing = ops.prod(ops.maximum(ops.maximum(predicted[..., 2:], target[..., 2:])
                                     - ops.minimum(predicted[..., :2], target[..., :2]), 0.0), axis=-1)
    return overlap / ops.maximum(union, 1e-6) - (enclosing - union) / ops.maximum(enclosing, 1e-6)


def sigmoid_focal_loss(logits, targets, alpha: float = FOCAL_ALPHA, gamma: float = FOCAL_GAMMA):
    """Per element ``-alpha_t (1 - p_t)^gamma log(p_t)`` (Lin et al., 2017, eq. 5), from logits; same shape."""
    probability = ops.sigmoid(logits)
    cross_entropy = ops.maximum(logits, 0.0) - logits * targets + ops.log1p(ops.exp(-ops.abs(logits)))
    p_t = probability * targets + (1.0 - probability) * (1.0 - targets)
    alpha_t = alpha * targets + (1.0 - alpha) * (1.0 - targets)
    return alpha_t * ops.power(1.0 - p_t, gamma) * cross_entropy


def binary_cross_entropy(logits, targets):
    return ops.maximum(logits, 0.0) - logits * targets + ops.log1p(ops.exp(-ops.abs(logits)))


def fcos_loss(outputs, boxes, classes, points, strides, ranges, num_classes: int,
              center_radius: float = CENTER_RADIUS) -> dict:
    """The three FCOS losses of a batch as per-image terms ``[B]`` whose mean is the paper's batch loss.

    Each loss is normalised over the whole batch, as the paper does (focal and centerness by the
    number of positive locations, GIoU by the sum of their centerness targets): image ``i``'s term is
    its own sum times ``B`` over the batch's normaliser, so ``mean(total)`` equals
    ``focal / positives + giou / centerness sum + centerness bce / positives``.
    Returns ``{"total", "focal", "giou", "centerness", "positives"}``, each ``[B]``.
    """
    outputs = ops.cast(outputs, "float32")
    logits, predicted_boxes, centerness_logits = split_outputs(outputs, num_classes)
    target_classes, target_boxes, target_centerness = assign_targets(points, strides, ranges, boxes, classes,
                                                                     center_radius)
    positive = ops.cast(target_classes >= 0, "float32")  # [B, N]
    batch = ops.cast(ops.shape(outputs)[0], "float32")
    positives = ops.maximum(ops.sum(positive), 1.0)
    weight_sum = ops.maximum(ops.sum(target_centerness), 1e-6)
    one_hot = ops.one_hot(ops.maximum(target_classes, 0), num_classes) * positive[..., None]
    focal = ops.sum(sigmoid_focal_loss(logits, one_hot), axis=[1, 2]) * batch / positives
    box = ops.sum((1.0 - giou(predicted_boxes, target_boxes)) * target_centerness, axis=1) * batch / weight_sum
    center = ops.sum(binary_cross_entropy(centerness_logits, target_centerness) * positive, axis=1) * batch / positives
    return {"total": focal + box + center, "focal": focal, "giou": box, "centerness": center,
            "positives": ops.sum(positive, axis=1)}


def positive_iou(outputs, boxes, classes, points, strides, ranges, num_classes: int,
                 center_radius: float = CENTER_RADIUS):
    """Per image: the mean IoU of the boxes predicted at its positive locations with their targets (0 if none)."""
    outputs = ops.cast(outputs, "float32")
    _, predicted_boxes, _ = split_outputs(outputs, num_classes)
    target_classes, target_boxes, _ = assign_targets(points, strides, ranges, boxes, classes, center_radius)
    positive = ops.cast(target_classes >= 0, "float32")
    return ops.sum(iou(predicted_boxes, target_boxes) * positive, axis=1) / ops.maximum(ops.sum(positive, axis=1), 1.0)
