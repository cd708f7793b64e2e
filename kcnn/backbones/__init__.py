"""Backbones: registered builders returning a functional model of multi-level feature maps.

Each family lives in its own module; importing this package registers them all.
``kcnn.backbones.mobilenet_v1(width=0.5)`` calls a builder directly.
"""

from kcnn.backbones.alexnet import alexnet
from kcnn.backbones.base import BACKBONES, register
from kcnn.backbones.convnet import convnet
from kcnn.backbones.densenet import densenet121
from kcnn.backbones.efficientnet import (
    efficientnet_b0, efficientnet_b1, efficientnet_b2, efficientnet_b3, efficientnet_b4, efficientnet_b5,
    efficientnet_b6, efficientnet_b7,
)
from kcnn.backbones.fractalnet import fractalnet_cifar
from kcnn.backbones.googlenet import googlenet
from kcnn.backbones.lenet import lenet5
from kcnn.backbones.mobilenet import mobilenet_v1, mobilenet_v2
from kcnn.backbones.mobilenet_v3 import (
    mobilenet_v3_large, mobilenet_v3_large_minimalistic, mobilenet_v3_small, mobilenet_v3_small_minimalistic,
)
from kcnn.backbones.nfnet import nfnet_f0, nfnet_f1, nfnet_f2
from kcnn.backbones.regnet import (
    regnetx_002, regnetx_004, regnetx_006, regnetx_008, regnetx_016, regnetx_032,
    regnetx_040, regnetx_064, regnetx_080, regnetx_120, regnetx_160, regnetx_320,
    regnety_002, regnety_004, regnety_006, regnety_008, regnety_016, regnety_032,
    regnety_040, regnety_064, regnety_080, regnety_120, regnety_160, regnety_320,
)
from kcnn.backbones.resnet import resnet18, resnet34, resnet50
from kcnn.backbones.squeezenet import squeezenet1_0, squeezenet1_1
from kcnn.backbones.vgg import vgg11, vgg13, vgg16, vgg19

__all__ = [
    "BACKBONES", "register", "alexnet", "convnet", "densenet121", "googlenet", "lenet5", "mobilenet_v1", "mobilenet_v2",
    "resnet18", "resnet34", "resnet50", "squeezenet1_0", "squeezenet1_1", "vgg11", "vgg13", "vgg16", "vgg19",
    "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_b4",
    "efficientnet_b5", "efficientnet_b6", "efficientnet_b7",
    "mobilenet_v3_large", "mobilenet_v3_small", "mobilenet_v3_large_minimalistic", "mobilenet_v3_small_minimalistic",
    "regnetx_002", "regnetx_004", "regnetx_006", "regnetx_008", "regnetx_016", "regnetx_032",
    "regnetx_040", "regnetx_064", "regnetx_080", "regnetx_120", "regnetx_160", "regnetx_320",
    "regnety_002", "regnety_004", "regnety_006", "regnety_008", "regnety_016", "regnety_032",
    "regnety_040", "regnety_064", "regnety_080", "regnety_120", "regnety_160", "regnety_320",
    "nfnet_f0", "nfnet_f1", "nfnet_f2", "fractalnet_cifar",
]
