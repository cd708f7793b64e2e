"""Backbones: registered builders returning a functional model of multi-level feature maps.

Each family lives in its own module; importing this package registers them all.
``kcnn.backbones.mobilenet_v1(width=0.5)`` calls a builder directly.
"""

from kcnn.backbones.alexnet import alexnet
from kcnn.backbones.base import BACKBONES, register
from kcnn.backbones.densenet import densenet121
from kcnn.backbones.efficientnet import (
    efficientnet_b0, efficientnet_b1, efficientnet_b2, efficientnet_b3, efficientnet_b4, efficientnet_b5,
    efficientnet_b6, efficientnet_b7,
)
from kcnn.backbones.googlenet import googlenet
from kcnn.backbones.lenet import lenet5
from kcnn.backbones.mobilenet import mobilenet_v1, mobilenet_v2
from kcnn.backbones.mobilenet_v3 import (
    mobilenet_v3_large, mobilenet_v3_large_minimalistic, mobilenet_v3_small, mobilenet_v3_small_minimalistic,
)
from kcnn.backbones.resnet import resnet18, resnet34, resnet50
from kcnn.backbones.squeezenet import squeezenet1_0, squeezenet1_1
from kcnn.backbones.vgg import vgg11, vgg13, vgg16, vgg19

__all__ = [
    "BACKBONES", "register", "alexnet", "densenet121", "googlenet", "lenet5", "mobilenet_v1", "mobilenet_v2",
    "resnet18", "resnet34", "resnet50", "squeezenet1_0", "squeezenet1_1", "vgg11", "vgg13", "vgg16", "vgg19",
    "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_b4",
    "efficientnet_b5", "efficientnet_b6", "efficientnet_b7",
    "mobilenet_v3_large", "mobilenet_v3_small", "mobilenet_v3_large_minimalistic", "mobilenet_v3_small_minimalistic",
]
