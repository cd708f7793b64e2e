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
from kcnn.weights.preprocessing import CAFFE, KERAS_TORCH, TF, TORCH, TORCH_TF, Preprocessing

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
    file_hash: str  # keras: the md5 keras.applications checks; torchvision: the sha256 prefix in the file name
    top1: float  # ImageNet-1k top-1 (%) as the source library reports it
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
