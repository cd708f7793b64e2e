"""kcnn.weights with torchvision state dicts (PyTorch is not needed: synthetic dicts written with safetensors).

Each synthetic state dict has torchvision's tensor names and shapes: its parameter
count equals the ``num_params`` torchvision publishes in each model's Weights
metadata, and literal names and shapes read off torchvision's model definitions are
spot-checked. Loading must use every tensor once and put each value at the index
the layout change says (OIHW -> HWIO, depthwise, Linear transpose, CHW flatten).
"""

from __future__ import annotations

import sys

import keras
import numpy as np
import pytest
from safetensors.numpy import save_file

import kcnn
from kcnn.weights import CheckpointError, catalog, load_weights

# torchvision's Weights.meta["num_params"] for each IMAGENET1K_V1 checkpoint.
TORCHVISION_NUM_PARAMS = {
    "squeezenet1_0": 1_248_424, "squeezenet1_1": 1_235_496, "resnet18": 11_689_512, "resnet34": 21_797_672,
    "mobilenet_v2": 3_504_872, "densenet121": 7_978_856, "alexnet": 61_100_840, "vgg11": 132_863_336,
}
# Names and shapes as torchvision's model definitions create them.
TORCHVISION_TENSORS = {
    "squeezenet1_0": {"features.0.weight": (96, 3, 7, 7), "features.12.squeeze.weight": (64, 512, 1, 1),
                      "features.7.expand3x3.bias": (128,), "classifier.1.weight": (1000, 512, 1, 1)},
    "squeezenet1_1": {"features.0.weight": (64, 3, 3, 3), "features.3.squeeze.weight": (16, 64, 1, 1),
                      "features.12.expand3x3.weight": (256, 64, 3, 3), "classifier.1.bias": (1000,)},
    "resnet18": {"conv1.weight": (64, 3, 7, 7), "layer2.0.downsample.0.weight": (128, 64, 1, 1),
                 "layer4.1.bn2.running_var": (512,), "fc.weight": (1000, 512)},
    "resnet34": {"layer3.5.conv2.weight": (256, 256, 3, 3), "layer4.0.downsample.1.weight": (512,)},
    "mobilenet_v2": {"features.0.0.weight": (32, 3, 3, 3), "features.1.conv.0.0.weight": (32, 1, 3, 3),
                     "features.1.conv.1.weight": (16, 32, 1, 1), "features.2.conv.1.0.weight": (96, 1, 3, 3),
                     "features.17.conv.2.weight": (320, 960, 1, 1), "features.18.0.weight": (1280, 320, 1, 1),
                     "classifier.1.weight": (1000, 1280)},
    "densenet121": {"features.conv0.weight": (64, 3, 7, 7), "features.denseblock1.denselayer1.conv1.weight":
                    (128, 64, 1, 1), "features.denseblock4.denselayer16.conv2.weight": (32, 128, 3, 3),
                    "features.transition3.conv.weight": (512, 1024, 1, 1), "features.norm5.weight": (1024,),
                    "classifier.weight": (1000, 1024)},
    "alexnet": {"features.0.weight": (64, 3, 11, 11), "features.3.weight": (192, 64, 5, 5),
                "features.10.weight": (256, 256, 3, 3), "classifier.1.weight": (4096, 9216),
                "classifier.6.weight": (1000, 4096)},
    "vgg11": {"features.0.weight": (64, 3, 3, 3), "features.3.weight": (128, 64, 3, 3),
              "features.18.weight": (512, 512, 3, 3), "classifier.0.weight": (4096, 25088)},
}
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def torch_layout(model, pairs, seed=0) -> dict:
    """A state dict with random values in PyTorch's layout for ``model``'s mapped layers."""
    rng = np.random.default_rng(seed)
    state = {}
    for pair in pairs:
        layer = model.get_layer(pair.layer)
        shapes = [tuple(w.shape) for w in layer.weights]
        if pair.kind == "bn":
            for suffix, shape in zip(("weight", "bias", "running_mean", "running_var"), shapes):
                state[f"{pair.source}.{suffix}"] = rng.uniform(0.5, 1.5, shape).astype("float32")
            state[f"{pair.source}.num_batches_tracked"] = np.array(100, dtype="int64")
            continue
        kernel = shapes[0]
        torch_shape = {"conv": lambda s: (s[3], s[2], s[0], s[1]), "depthwise": lambda s: (s[2], 1, s[0], s[1]),
                       "linear": lambda s: (s[1], s[0]), "flatten_linear": lambda s: (s[1], s[0])}[pair.kind](kernel)
        state[f"{pair.source}.weight"] = rng.normal(0, 0.1, torch_shape).astype("float32")
        if len(shapes) > 1:
            state[f"{pair.source}.bias"] = rng.normal(0, 0.1, shapes[1]).astype("float32")
    return state


def _build(name, size, **kwargs):
    spec = catalog.find(name, "torchvision")
    return kcnn.build(name, input_shape=(size, size, 3), backbone_kwargs=dict(spec.builder_kwargs), **kwargs)


def check_family(name, size, tmp_path):
    model = _build(name, size)
    state = torch_layout(model, catalog.find(name, "torchvision").pairs(name))
    params = sum(v.size for k, v in state.items() if k.rsplit(".", 1)[-1] not in BUFFERS)
    assert params == TORCHVISION_NUM_PARAMS[name]
    for key, shape in TORCHVISION_TENSORS[name].items():
        assert state[key].shape == shape, key
    path = str(tmp_path / f"{name}.safetensors")
    save_file(state, path)
    load_weights(model, path)
    return model, state


def _value(model, layer, index=0):
    return keras.ops.convert_to_numpy(model.get_layer(layer).weights[index])


@pytest.mark.parametrize("name, size", [("squeezenet1_1", 64), ("resnet18", 32), ("mobilenet_v2", 32)])
def test_torchvision_names_shapes_and_layout(name, size, tmp_path):
    model, state = check_family(name, size, tmp_path)
    if name == "squeezenet1_1":
        torch_weight = state["features.12.expand3x3.weight"]  # (out, in, kH, kW)
        assert _value(model, "fire9_expand3x3_conv")[2, 0, 17, 200] == torch_weight[200, 17, 2, 0]
        assert np.array_equal(_value(model, "conv_scores", 1), state["classifier.1.bias"])
    if name == "resnet18":
        assert _value(model, "conv3_block1_shortcut_conv")[0, 0, 63, 127] == \
            state["layer2.0.downsample.0.weight"][127, 63, 0, 0]
        assert np.array_equal(_value(model, "conv5_block2_2_bn", 3), state["layer4.1.bn2.running_var"])
        assert _value(model, "logits")[511, 999] == state["fc.weight"][999, 511]
    if name == "mobilenet_v2":
        depthwise = state["features.2.conv.1.0.weight"]  # (C, 1, kH, kW)
        assert _value(model, "block_1_dw_conv")[0, 2, 95, 0] == depthwise[95, 0, 0, 2]
        assert np.array_equal(_value(model, "block_16_project_bn", 1), state["features.17.conv.3.bias"])


@pytest.mark.slow
@pytest.mark.parametrize("name, size", [("squeezenet1_0", 64), ("resnet34", 32), ("densenet121", 32),
                                        ("alexnet", 224), ("vgg11", 224)])
def test_torchvision_names_shapes_and_layout_large(name, size, tmp_path):
    model, state = check_family(name, size, tmp_path)
    assert np.array_equal(_value(model, "logits" if "squeeze" not in name else "conv_scores", -1),
                          state[[k for k in state if k.endswith("bias")][-1]])


@pytest.mark.slow
def test_densenet_checkpoint_keys_before_torchvision_rename(tmp_path):
    """torchvision's published DenseNet file still says "norm.1"; torchvision renames on load, and so does kcnn."""
    model = _build("densenet121", 32)
    state = torch_layout(model, catalog.find("densenet121", "torchvision").pairs("densenet121"))
    old = {k.replace("denselayer1.norm1.", "denselayer1.norm.1.").replace("denselayer1.conv2.", "denselayer1.conv.2."):
           v for k, v in state.items()}
    assert "features.denseblock2.denselayer1.norm.1.weight" in old
    save_file(old, str(tmp_path / "old.safetensors"))
    load_weights(model, tmp_path / "old.safetensors")
    assert np.array_equal(_value(model, "dense2_layer1_1_bn"), state["features.denseblock2.denselayer1.norm1.weight"])


def test_flatten_then_dense_reorders_chw_to_hwc(tmp_path):
    """fc1 after Flatten sees (H, W, C) in kcnn and (C, H, W) in PyTorch: the layer computes the same function."""
    model = _build("vgg11", 64, num_classes=5, head_kwargs={"hidden": (8, 8)})
    state = torch_layout(model, catalog.find("vgg11", "torchvision").pairs("vgg11"))
    save_file(state, str(tmp_path / "vgg.safetensors"))
    load_weights(model, tmp_path / "vgg.safetensors")
    images = np.random.default_rng(0).uniform(0, 1, (2, 64, 64, 3)).astype("float32")
    pool5 = keras.ops.convert_to_numpy(keras.Model(model.inputs, model.get_layer("block5_pool").output)(images))
    torch_flat = np.transpose(pool5, (0, 3, 1, 2)).reshape(2, -1)  # torch.flatten of an NCHW map
    expected = np.maximum(torch_flat @ state["classifier.0.weight"].T + state["classifier.0.bias"], 0)
    got = keras.ops.convert_to_numpy(keras.Model(model.inputs, model.get_layer("fc1").output)(images))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_wrong_architecture_extra_tensor_and_epsilon_are_named(tmp_path):
    squeezenet1_1 = _build("squeezenet1_1", 64)
    state = torch_layout(squeezenet1_1, catalog.find("squeezenet1_1", "torchvision").pairs("squeezenet1_1"))
    save_file(state, str(tmp_path / "sq11.safetensors"))
    squeezenet1_0 = _build("squeezenet1_0", 64)
    with pytest.raises(CheckpointError, match=r"checkpoint tensor 'features\.0\.weight' has shape \(64, 3, 3, 3\) but "
                                              r"conv1_conv/kernel expects \(7, 7, 3, 96\)"):
        load_weights(squeezenet1_0, tmp_path / "sq11.safetensors")
    save_file({**state, "features.13.squeeze.weight": np.zeros((1, 1, 1, 1), "float32")},
              str(tmp_path / "extra.safetensors"))
    with pytest.raises(CheckpointError, match=r"checkpoint tensor 'features\.13\.squeeze\.weight' \(shape "
                                              r"\(1, 1, 1, 1\)\) has no place in the model \(1 unused in all\)"):
        load_weights(squeezenet1_1, tmp_path / "extra.safetensors")
    resnet18 = _build("resnet18", 32)
    save_file(torch_layout(resnet18, catalog.find("resnet18", "torchvision").pairs("resnet18")),
              str(tmp_path / "r18.safetensors"))
    default_epsilon = kcnn.build("resnet18", input_shape=(32, 32, 3))
    with pytest.raises(CheckpointError, match=r"conv1_bn has BatchNorm epsilon 0\.001 but the checkpoint was trained "
                                              r"with 1e-05; build the model with kcnn\.build\('resnet18', "
                                              r"backbone_kwargs=\{'bn_epsilon': 1e-05\}\)"):
        load_weights(default_epsilon, tmp_path / "r18.safetensors")


def test_truncated_safetensors_and_pth_without_torch(tmp_path, monkeypatch):
    model = _build("squeezenet1_1", 64)
    state = torch_layout(model, catalog.find("squeezenet1_1", "torchvision").pairs("squeezenet1_1"))
    save_file(state, str(tmp_path / "full.safetensors"))
    data = (tmp_path / "full.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors' is not a readable safetensors file .*is it truncated"):
        load_weights(model, tmp_path / "cut.safetensors")
    (tmp_path / "model.pth").write_bytes(b"PK")
    monkeypatch.setitem(sys.modules, "torch", None)  # as on a machine without PyTorch
    with pytest.raises(CheckpointError, match=r"is a PyTorch pickle and PyTorch is not installed"):
        load_weights(model, tmp_path / "model.pth")


def test_skip_head_loads_the_backbone_for_new_classes(tmp_path):
    model = _build("squeezenet1_1", 64)
    state = torch_layout(model, catalog.find("squeezenet1_1", "torchvision").pairs("squeezenet1_1"))
    save_file(state, str(tmp_path / "sq.safetensors"))
    ten = kcnn.build("squeezenet1_1", num_classes=10, input_shape=(64, 64, 3), weights=str(tmp_path / "sq.safetensors"))
    assert ten.output_shape == (None, 10)
    assert _value(ten, "conv1_conv")[1, 2, 0, 5] == state["features.0.weight"][5, 0, 1, 2]


def test_offline_download_names_the_cause_the_file_and_a_pth_fix(tmp_path, monkeypatch):
    """No network: the error gives get_file's reason, where to put the file, and (no PyTorch here) how to turn
    torchvision's .pth into a .safetensors file that kcnn reads without PyTorch."""
    from kcnn import weights

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://download.pytorch.org/models/resnet18-f37072fd.pth: None -- "
                        "[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(keras.utils, "get_file", offline)
    monkeypatch.setitem(sys.modules, "torch", None)  # as on a machine without PyTorch
    spec = catalog.find("resnet18", "torchvision")
    with pytest.raises(CheckpointError) as raised:
        weights.fetch(spec)
    target = str(tmp_path / "models" / "resnet18-f37072fd.pth")
    assert str(raised.value) == (
        "could not download resnet18 weights (URL fetch failure on https://download.pytorch.org/models/"
        "resnet18-f37072fd.pth: None -- [Errno -3] Temporary failure in name resolution): is this machine offline? "
        f"Download https://download.pytorch.org/models/resnet18-f37072fd.pth and place it at {target}. It is a "
        "PyTorch .pth file and PyTorch is not installed here: on a machine with torch, convert it with python -c "
        "\"import torch, safetensors.torch as st; st.save_file(torch.load('resnet18-f37072fd.pth'), "
        "'resnet18-f37072fd.safetensors')\" and give the .safetensors file as the weights (or pip install torch)")


def test_a_save_weights_file_loads_back_into_its_architecture_and_only_there(tmp_path):
    """kcnn's own model.save_weights file (Keras 3 layout) loads whole into the same build; into another
    class count it is refused with the mismatched shape, and the model keeps its weights."""
    keras.utils.set_random_seed(0)
    saved = kcnn.build("resnet18", num_classes=10, input_shape=(32, 32, 3))
    path = str(tmp_path / "r18.weights.h5")
    saved.save_weights(path)
    same = kcnn.build("resnet18", num_classes=10, input_shape=(32, 32, 3))
    assert load_weights(same, path) is None
    assert all(np.array_equal(a, b) for a, b in zip(same.get_weights(), saved.get_weights()))
    other = kcnn.build("resnet18", num_classes=5, input_shape=(32, 32, 3))
    before = other.get_weights()
    with pytest.raises(CheckpointError, match=r"r18\.weights\.h5 is a Keras \.weights\.h5 file that does not fit "
                                              r"model 'resnet18' \(.*variable\.shape=\(512, 5\), Received: "
                                              r"value\.shape=\(512, 10\)\.\); load it into the architecture"):
        load_weights(other, path)
    assert all(np.array_equal(a, b) for a, b in zip(other.get_weights(), before))
