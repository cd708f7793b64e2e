"""Which public checkpoint maps onto which kcnn model: URL, hash, builder options, preprocessing, reported top-1.

One ``Checkpoint`` row per (kcnn model, source library). ``builder_kwargs`` are the
options that make kcnn's model the checkpoint's architecture (documented per family
in the builders); ``bn_epsilon`` is checked against every BatchNormalization layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from kcnn.backbones.efficientnet import VARIANTS
from kcnn.weights import keras_apps, torchvision
from kcnn.weights.preprocessing import CAFFE, KERAS_TORCH, TF, TORCH, TORCH_TF, UNIT, Preprocessing

KERAS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/"
KERAS_EFFICIENTNET_BASE = "https://storage.googleapis.com/keras-applications/"  # keras' efficientnet.py
TORCH_BASE = "https://download.pytorch.org/models/"


@dataclass(frozen=True)
class CheckpointSpec:
    """A published checkpoint of a kcnn model."""

    model: str
    source: str  # "keras" (keras.applications) or "torchvision"
    pairs: Callable[[str], list]
    url: str
    file_hash: str  # keras: the md5 (sha256 for RegNet) keras.applications checks; torchvision: the sha256 prefix
    top1: float | None  # ImageNet-1k top-1 (%) as the source library reports it; None where it reports none
    preprocessing: Preprocessing
    builder_kwargs: dict = field(default_factory=dict)
    bn_epsilon: float | None = None
    classes: int = 1000

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def _keras(model, pairs, path, md5, top1, prep, base=KERAS_BASE, **kwargs):
    return CheckpointSpec(model, "keras", pairs, base + path, md5, top1, prep, **kwargs)


# keras.applications' efficientnet.py: file "efficientnetb{i}.h5" and its md5; top-1 from the keras.applications table.
_EFFICIENTNET = [("902e53a9f72be733fc0bcb005b3ebbac", 77.1), ("1d254153d4ab51201f1646940f018540", 79.1),
                 ("b15cce36ff4dcbd00b6dd88e7857a6ad", 80.1), ("ffd1fdc53d0ce67064dc6a9c7960ede0", 81.6),
                 ("18c95ad55216b8f92d7e70b3a046e2fc", 82.9), ("ace28f2a6363774853a83a0b21b9421a", 83.6),
                 ("165f6e37dce68623721b423839de8be5", 84.0), ("8c03f828fec3ef71311cd463b6759d99", 84.3)]


def _efficientnet(index):
    name = f"efficientnet_b{index}"
    size = VARIANTS[name][2]
    # Its model rescales to [0, 1] and normalises with the ImageNet mean/std itself; kcnn does that outside.
    prep = Preprocessing("torch", mean=TORCH.mean, std=TORCH.std, resize=size, crop=size)
    md5, top1 = _EFFICIENTNET[index]
    return _keras(name, keras_apps.efficientnet_pairs, f"efficientnetb{index}.h5", md5, top1, prep,
                  base=KERAS_EFFICIENTNET_BASE, bn_epsilon=1e-3)


# keras.applications' mobilenet_v3.py: file names and md5s; top-1 from its docstring's table. Its model
# scales 0-255 pixels to [-1, 1] itself (a Rescaling layer without weights): the "tf" mode.
_MOBILENET_V3 = {
    "mobilenet_v3_large": ("large_224_1.0_float", "59e551e166be033d707958cf9e29a6a7", 75.6),
    "mobilenet_v3_small": ("small_224_1.0_float", "8768d4c2e7dee89b9d02b2d03d65d862", 68.1),
    "mobilenet_v3_large_minimalistic": ("large_minimalistic_224_1.0_float", "675e7b876c45c57e9e63e6d90a36599c", 72.3),
    "mobilenet_v3_small_minimalistic": ("small_minimalistic_224_1.0_float", "99cd97fb2fcdad2bf028eb838de69e37", 61.9),
}


def _mobilenet_v3(name):
    tag, md5, top1 = _MOBILENET_V3[name]
    return _keras(name, keras_apps.mobilenet_v3_pairs, f"mobilenet_v3/weights_mobilenet_v3_{tag}.h5", md5, top1, TF,
                  bn_epsilon=1e-3)


def _torch(model, pairs, file, top1, prep=TORCH, **kwargs):
    sha_prefix = file.rsplit("-", 1)[-1].split(".")[0]
    return CheckpointSpec(model, "torchvision", pairs, TORCH_BASE + file, sha_prefix, top1, prep, **kwargs)


# RegNet came with Keras 2's keras.applications (kept as tf-keras; Keras 3 has none): its regnet.py's
# file "regnet{x|y}{flops}.h5" and sha256. Its model only rescales pixels to [0, 1]; it reports no top-1.
_REGNET_SHA256 = {
    "x002": "49fb46e56cde07fdaf57bffd851461a86548f6a3a4baef234dd37290b826c0b8",
    "x004": "3523c7f5ac0dbbcc2fd6d83b3570e7540f7449d3301cc22c29547302114e4088",
    "x006": "340216ef334a7bae30daac9f414e693c136fac9ab868704bbfcc9ce6a5ec74bb",
    "x008": "8f145d6a5fae6da62677bb8d26eb92d0b9dfe143ec1ebf68b24a57ae50a2763d",
    "x016": "31c386f4c7bfef4c021a583099aa79c1b3928057ba1b7d182f174674c5ef3510",
    "x032": "6c025df1409e5ea846375bc9dfa240956cca87ef57384d93fef7d6fa90ca8c7f",
    "x040": "ba128046c588a26dbd3b3a011b26cb7fa3cf8f269c184c132372cb20b6eb54c1",
    "x064": "0f4489c3cd3ad979bd6b0324213998bcb36dc861d178f977997ebfe53c3ba564",
    "x080": "76320e43272719df648db37271a247c22eb6e810fe469c37a5db7e2cb696d162",
    "x120": "5cafc461b78897d5e4f24e68cb406d18e75f31105ef620e7682b611bb355eb3a",
    "x160": "8093f57a5824b181fb734ea21ae34b1f7ee42c5298e63cf6d587c290973195d2",
    "x320": "91fb3e6f4e9e44b3687e80977f7f4412ee9937c0c704232664fc83e4322ea01e",
    "y002": "1e8091c674532b1a61c04f6393a9c570113e0197f22bd1b98cc4c4fe800c6465",
    "y004": "752fdbad21c78911bf1dcb8c513e5a0e14697b068e5d9e73525dbaa416d18d8e",
    "y006": "98942e07b273da500ff9699a1f88aca78dfad4375faabb0bab784bb0dace80a9",
    "y008": "1b099377cc9a4fb183159a6f9b24bc998e5659d25a449f40c90cbffcbcfdcae4",
    "y016": "b7ce1f5e223f0941c960602de922bcf846288ce7a4c33b2a4f2e4ac4b480045b",
    "y032": "6a6a545cf3549973554c9b94f0cd40e25f229fffb1e7f7ac779a59dcbee612bd",
    "y040": "98d00118b335162bbffe8f1329e54e5c8e75ee09b2a5414f97b0ddfc56e796f6",
    "y064": "65c948c7a18aaecaad2d1bd4fd978987425604ba6669ef55a1faa0069a2804b7",
    "y080": "7a2c62da2982e369a4984d3c7c3b32d6f8d3748a71cb37a31156c436c37f3e95",
    "y120": "a96ab0d27d3ae35a422ee7df0d789069b3e3217a99334e0ce861a96595bc5986",
    "y160": "45067240ffbc7ca2591313fee2f80dbdda6d66ec1a7451446f9a6d00d8f7ac6e",
    "y320": "b05e173e4ae635cfa22d06392ee3741284d17dadfee68f2aa6fd8cb2b7561112",
}


def _regnet(key):
    return _keras(f"regnet{key[0]}_{key[1:]}", keras_apps.regnet_pairs, f"regnet/regnet{key}.h5", _REGNET_SHA256[key],
                  None, UNIT, bn_epsilon=1e-5)


# keras.applications md5s are those its own builders pass to get_file (MobileNets publish none);
# top-1 from the keras.applications documentation table and torchvision's Weights metadata.
CHECKPOINTS: list[CheckpointSpec] = [
    _keras("vgg16", keras_apps.vgg_pairs, "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels.h5",
           "64373286793e3c8b2b4e3219cbf3544b", 71.3, CAFFE),
    _keras("vgg19", keras_apps.vgg_pairs, "vgg19/vgg19_weights_tf_dim_ordering_tf_kernels.h5",
           "cbe5617147190e668d6c5d5026f83318", 71.3, CAFFE),
    _keras("resnet50", keras_apps.resnet50_pairs, "resnet/resnet50_weights_tf_dim_ordering_tf_kernels.h5",
           "2cb95161c43110f7111970584f804107", 74.9, CAFFE,
           builder_kwargs={"conv_bias": True, "bn_epsilon": 1.001e-5}, bn_epsilon=1.001e-5),
    _keras("mobilenet_v1", keras_apps.mobilenet_v1_pairs, "mobilenet/mobilenet_1_0_224_tf.h5", "", 70.4, TF,
           builder_kwargs={"activation": "relu6"}, bn_epsilon=1e-3),
    _keras("mobilenet_v2", keras_apps.mobilenet_v2_pairs,
           "mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5", "", 71.3, TF,
           bn_epsilon=1e-3),
    _keras("densenet121", keras_apps.densenet_pairs, "densenet/densenet121_weights_tf_dim_ordering_tf_kernels.h5",
           "9d60b8095a5708f2dcce2bca79d332c7", 75.0, KERAS_TORCH, bn_epsilon=1.001e-5),
    *[_efficientnet(i) for i in range(8)],
    *[_mobilenet_v3(name) for name in _MOBILENET_V3],
    *[_regnet(key) for key in _REGNET_SHA256],
    _torch("alexnet", torchvision.alexnet_pairs, "alexnet-owt-7be5be79.pth", 56.522,
           builder_kwargs={"filters": (64, 192, 384, 256, 256), "lrn": False}),
    _torch("vgg11", torchvision.vgg_pairs, "vgg11-8a719046.pth", 69.020),
    _torch("vgg13", torchvision.vgg_pairs, "vgg13-19584684.pth", 69.928),
    _torch("vgg16", torchvision.vgg_pairs, "vgg16-397923af.pth", 71.592),
    _torch("vgg19", torchvision.vgg_pairs, "vgg19-dcbb9e9d.pth", 72.376),
    _torch("resnet18", torchvision.resnet_basic_pairs, "resnet18-f37072fd.pth", 69.758,
           builder_kwargs={"bn_epsilon": 1e-5}, bn_epsilon=1e-5),
    _torch("resnet34", torchvision.resnet_basic_pairs, "resnet34-b627a593.pth", 73.314,
           builder_kwargs={"bn_epsilon": 1e-5}, bn_epsilon=1e-5),
    _torch("squeezenet1_0", torchvision.squeezenet_pairs, "squeezenet1_0-b66bff10.pth", 58.092,
           builder_kwargs={"ceil_mode": True}),
    _torch("squeezenet1_1", torchvision.squeezenet_pairs, "squeezenet1_1-b8a52dc0.pth", 58.178,
           builder_kwargs={"ceil_mode": True}),
    _torch("densenet121", torchvision.densenet_pairs, "densenet121-a639ec97.pth", 74.434,
           builder_kwargs={"bn_epsilon": 1e-5}, bn_epsilon=1e-5),
    # torchvision builds GoogLeNet for these weights with transform_input=True, which turns its ImageNet
    # mean/std normalisation into (x / 255 - 0.5) / 0.5: the "tf" mode, exactly.
    _torch("googlenet", torchvision.googlenet_pairs, "googlenet-1378be20.pth", 69.778, prep=TORCH_TF,
           builder_kwargs={"batch_norm": True, "lrn": False, "symmetric_padding": True, "ceil_mode": True,
                           "last_pool_size": 2, "kernel_5x5": 3}, bn_epsilon=1e-3),
    _torch("mobilenet_v2", torchvision.mobilenet_v2_pairs, "mobilenet_v2-b0353104.pth", 71.878,
           builder_kwargs={"bn_epsilon": 1e-5, "symmetric_padding": True}, bn_epsilon=1e-5),
]
SOURCES = ("keras", "torchvision")


def find(model: str, source: str | None = None) -> CheckpointSpec:
    """The checkpoint of ``model`` from ``source`` (default: keras.applications' where it has one)."""
    rows = [c for c in CHECKPOINTS if c.model == model and (source is None or c.source == source)]
    if not rows:
        known = sorted({f"{c.model} ({c.source})" for c in CHECKPOINTS})
        wanted = f"{model!r}" + (f" from {source!r}" if source else "")
        raise ValueError(f"no pretrained checkpoint for {wanted}; available: {', '.join(known)}")
    return rows[0]
