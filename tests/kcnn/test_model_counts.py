"""Every registered backbone's parameter count at its paper's input size, pinned to the published figure.

Each count is Keras' own, of the model built at the paper's size (one build per variant), against the
paper's table or the reference implementation named beside it. Split from test_models.py so that
pytest-xdist's per-module scheduling (loadscope) runs the builds on both workers.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import every_variant

import kcnn

ALL = kcnn.list_backbones()


TEN_CLASSES = {"lenet5", "fractalnet_cifar"}  # MNIST and CIFAR-10 networks
# Total parameters at the paper's input size and 1000 classes (LeNet-5, FractalNet: 10), as Keras counts
# them (batch-norm moving statistics included), and trainable parameters.
PUBLISHED = {
    # LeNet-5 with full C3 connectivity, tanh, softmax output: 156 + 2,416 + 48,120 + 10,164 + 850.
    # The paper's 60,000 (LeCun et al. 1998, section II.B) uses the sparse C3 table and trainable S2/S4.
    "lenet5": (61_706, 61_706),
    # kcnn's plain convnet (no paper): 3x3 convs without bias, 16-32-64 channels, BN (4 values per channel, 2
    # of them moving statistics), 1000-way linear head: 432 + 4,608 + 18,432 + 4 x 112 + 64,000 + 1,000.
    "convnet": (88_920, 88_696),
    # Single-tower AlexNet with its 4096-4096 classifier: the widely cited 62,378,344 ("62.3M").
    "alexnet": (62_378_344, 62_378_344),
    # VGG configurations A, B, D, E (Simonyan and Zisserman 2015, Table 2: 133M, 133M, 138M, 144M);
    # exact counts as torchvision and keras.applications report them.
    "vgg11": (132_863_336, 132_863_336),
    "vgg13": (133_047_848, 133_047_848),
    "vgg16": (138_357_544, 138_357_544),
    "vgg19": (143_667_240, 143_667_240),
    # SqueezeNet Table 1 "#parameter before pruning" column sums to 1,248,424; v1.1 1,235,496 (torchvision).
    "squeezenet1_0": (1_248_424, 1_248_424),
    "squeezenet1_1": (1_235_496, 1_235_496),
    # keras.applications.MobileNet(alpha=1.0): 4,253,864 total, 4,231,976 trainable ("4.2M", paper Table 8).
    "mobilenet_v1": (4_253_864, 4_231_976),
    # keras.applications.MobileNetV2: 3,538,984 total; torchvision mobilenet_v2: 3,504,872 ("3.4M", paper Table 4).
    "mobilenet_v2": (3_538_984, 3_504_872),
    # Trainable counts equal torchvision's resnet18/34/50 and densenet121 (BN gamma/beta, no conv bias);
    # keras.applications.DenseNet121 reports 8,062,504 total.
    "resnet18": (11_699_112, 11_689_512),
    "resnet34": (21_814_696, 21_797_672),
    "resnet50": (25_610_152, 25_557_032),
    "densenet121": (8_062_504, 7_978_856),
    # GoogLeNet as in Table 1 (5x5 branches, biases, no BN, no auxiliary heads); see the test below for
    # the independent derivation. torchvision's 6,624,904 differs: it uses 3x3 kernels in the "5x5" branch and BN.
    "googlenet": (6_998_552, 6_998_552),
    # EfficientNet B0-B7: keras.applications.EfficientNetB0..B7(weights=None) less its Normalization layer's
    # 7 values (test_newer_families.py compares the two; paper Table 2: B0 5.3M ... B7 66M).
    "efficientnet_b0": (5_330_564, 5_288_548),
    "efficientnet_b1": (7_856_232, 7_794_184),
    "efficientnet_b2": (9_177_562, 9_109_994),
    "efficientnet_b3": (12_320_528, 12_233_232),
    "efficientnet_b4": (19_466_816, 19_341_616),
    "efficientnet_b5": (30_562_520, 30_389_784),
    "efficientnet_b6": (43_265_136, 43_040_704),
    "efficientnet_b7": (66_658_680, 66_347_960),
    # keras.applications.MobileNetV3Large/Small(weights=None, minimalistic=...): the same counts.
    "mobilenet_v3_large": (5_507_432, 5_483_032),
    "mobilenet_v3_small": (2_554_968, 2_542_856),
    "mobilenet_v3_large_minimalistic": (3_948_688, 3_924_288),
    "mobilenet_v3_small_minimalistic": (2_056_848, 2_044_736),
    # NFNets (Brock et al. 2021, Table 3: F0 71.5M, F1 132.6M, F2 193.8M); no batch norm, all trainable.
    "nfnet_f0": (71_489_284, 71_489_284),
    "nfnet_f1": (132_634_256, 132_634_256),
    "nfnet_f2": (193_779_228, 193_779_228),
    # RegNetX/Y: equal to Keras 2's keras.applications.RegNetX002 ... RegNetY320 (tf-keras, weights=None), all but
    # Y320 compared in a one-off run when pinned; test_newer_families.py re-compares X002, Y008 and X080.
    "regnetx_002": (2_705_640, 2_684_792),
    "regnetx_004": (5_194_184, 5_157_512),
    "regnetx_006": (6_229_320, 6_196_040),
    "regnetx_008": (7_296_968, 7_259_656),
    "regnetx_016": (9_233_640, 9_190_136),
    "regnetx_032": (15_359_112, 15_296_552),
    "regnetx_040": (22_194_312, 22_118_248),
    "regnetx_064": (26_283_464, 26_209_256),
    "regnetx_080": (39_663_112, 39_572_648),
    "regnetx_120": (46_202_440, 46_106_056),
    "regnetx_160": (54_389_704, 54_278_536),
    "regnetx_320": (107_973_576, 107_811_560),
    "regnety_002": (3_183_844, 3_162_996),
    "regnety_004": (4_371_296, 4_344_144),
    "regnety_006": (6_084_920, 6_055_160),
    "regnety_008": (6_293_056, 6_263_168),
    "regnety_016": (11_255_102, 11_202_430),
    "regnety_032": (19_502_498, 19_436_338),
    "regnety_040": (20_708_928, 20_646_656),
    "regnety_064": (30_665_684, 30_583_252),
    "regnety_080": (39_265_812, 39_180_068),
    "regnety_120": (51_918_928, 51_822_544),
    "regnety_160": (83_712_956, 83_590_140),
    "regnety_320": (145_205_058, 145_046_770),  # its tf-keras build was not finished; its stage table is compared
    # FractalNet for CIFAR-10, B=5, C=3 (20 layers): derived from section 4 in test_newer_families.py; the
    # paper's Table 1 says 38.6M, which its own description does not give.
    "fractalnet_cifar": (33_745_226, 33_724_618),
}


def trainable_count(model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


@pytest.mark.parametrize("name", every_variant(sorted(PUBLISHED)))
def test_parameter_count_matches_published_figure(name):
    model = kcnn.build(name, num_classes=10 if name in TEN_CLASSES else 1000)
    total, trainable = PUBLISHED[name]
    assert model.count_params() == total
    assert trainable_count(model) == trainable


def test_every_backbone_has_a_pinned_count():
    assert set(PUBLISHED) == set(ALL)


def test_squeezenet_table1_per_module_parameters():
    """Iandola et al. 2016, Table 1, "#parameter before pruning" per layer."""
    table1 = {"conv1": 14_208, "fire2": 11_920, "fire3": 12_432, "fire4": 45_344, "fire5": 49_440,
              "fire6": 104_880, "fire7": 111_024, "fire8": 188_992, "fire9": 197_184, "conv_scores": 513_000}
    model = kcnn.build("squeezenet1_0")
    for prefix, expected in table1.items():
        counted = sum(layer.count_params() for layer in model.layers if layer.name.startswith(prefix + "_")
                      or layer.name == prefix)
        assert counted == expected, prefix


def test_googlenet_count_follows_table1():
    """Recompute GoogLeNet's parameters from the filter numbers of Szegedy et al. 2015, Table 1."""
    def conv(k, c_in, c_out):
        return k * k * c_in * c_out + c_out

    total, channels = conv(7, 3, 64) + conv(1, 64, 64) + conv(3, 64, 192), 192
    table1 = [(64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64), (192, 96, 208, 16, 48, 64),
              (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64), (112, 144, 288, 32, 64, 64),
              (256, 160, 320, 32, 128, 128), (256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128)]
    for n1, r3, n3, r5, n5, pp in table1:
        total += (conv(1, channels, n1) + conv(1, channels, r3) + conv(3, r3, n3) + conv(1, channels, r5)
                  + conv(5, r5, n5) + conv(1, channels, pp))
        channels = n1 + n3 + n5 + pp
    total += channels * 1000 + 1000  # the linear classifier on 1024 channels
    assert channels == 1024
    assert kcnn.build("googlenet").count_params() == total == PUBLISHED["googlenet"][0]
