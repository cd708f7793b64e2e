"""Heads: registered functions ``head(backbone, num_classes, **kwargs) -> output tensor``."""

from kcnn.heads.base import HEADS
from kcnn.heads.classification import dense, fully_conv, gap_linear
from kcnn.heads.detection import fcos
from kcnn.heads.segmentation import segmentation

__all__ = ["HEADS", "dense", "fcos", "fully_conv", "gap_linear", "segmentation"]
