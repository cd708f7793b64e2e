"""kcnn.weights against keras.applications' own definition of its checkpoints.

Each keras.applications model is built with ``weights=None`` (random weights, with
BatchNorm statistics randomised too so they matter), saved in the legacy ``.h5``
layout the published files use and in Keras 3's ``.weights.h5``, loaded into kcnn's
model, and both run on the same input. Weights do not depend on the input size, so
small inputs keep this fast; the larger families are marked slow.
"""

from __future__ import annotations

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

import kcnn
from kcnn.weights import CheckpointError, catalog, keras_apps, load_weights

SIZE = 32  # the smallest input keras.applications accepts

# kcnn name, keras.applications width argument, kcnn width argument.
FAST = [("mobilenet_v1", {"alpha": 0.25}, {"width": 0.25})]
SLOW = [("mobilenet_v2", {"alpha": 0.35}, {"width": 0.35}), ("vgg16", {}, {}), ("resnet50", {}, {}), ("densenet121", {}, {})]


def _reference(name, include_top=True, classes=7, **kwargs):
    model = keras_apps.reference_model(name, (SIZE, SIZE, 3), include_top, classes, None) if not kwargs else \
        getattr(keras.applications, keras_apps.REFERENCE_MODELS[name])(
            include_top=include_top, weights=None, input_shape=(SIZE, SIZE, 3), classes=classes, **kwargs)
    randomise_batch_norm(model)
    return model


def randomise_batch_norm(model, seed=1):
    """Non-trivial BN offsets and statistics, so a swapped or missing BN tensor shows in the outputs."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.beta.assign(rng.normal(0, 0.1, layer.beta.shape))
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, layer.moving_variance.shape))


def save_legacy_h5(model, path):
    """The layout of keras.applications' published files: one group per layer, "layer_names" and "weight_names"."""
    with h5py.File(path, "w") as h5:
        legacy_h5_format.save_weights_to_hdf5_group(h5, model)
    return str(path)


@pytest.fixture(scope="module")
def v1_file(tmp_path_factory):
    """A MobileNet (alpha 0.25, 7 classes) keras.applications model and its legacy .h5 file."""
    reference = _reference("mobilenet_v1", alpha=0.25)
    return reference, save_legacy_h5(reference, tmp_path_factory.mktemp("v1") / "v1.h5")


def _kcnn_model(name, kcnn_kwargs, classes=7, **build):
    spec = catalog.find(name, "keras")
    return kcnn.build(name, num_classes=classes, input_shape=(SIZE, SIZE, 3),
                      backbone_kwargs={**spec.builder_kwargs, **kcnn_kwargs}, **build)


def _inputs():
    return np.random.default_rng(0).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype("float32")


def check_parity(name, keras_kwargs, kcnn_kwargs, tmp_path):
    reference = _reference(name, **keras_kwargs)
    files = [save_legacy_h5(reference, tmp_path / "legacy.h5"), str(tmp_path / "model.weights.h5")]
    reference.save_weights(files[1])
    expected = keras.ops.convert_to_numpy(reference(_inputs()))
    for path in files:
        model = _kcnn_model(name, kcnn_kwargs)
        load_weights(model, path)
        got = keras.ops.convert_to_numpy(model(_inputs()))
        assert np.abs(got - expected).max() < 1e-4, path
    # The backbone alone, from a "_notop" file: kcnn's deepest feature map is keras.applications' output.
    notop = _reference(name, include_top=False, **keras_kwargs)
    path = save_legacy_h5(notop, tmp_path / "notop.h5")
    model = _kcnn_model(name, kcnn_kwargs, classes=3)
    load_weights(model, path, skip_head=True)
    head_input = "head_flatten" if name.startswith("vgg") else "head_pool"
    backbone = keras.Model(model.inputs, model.get_layer(head_input).input)
    expected = keras.ops.convert_to_numpy(notop(_inputs()))
    got = keras.ops.convert_to_numpy(backbone(_inputs()))
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-4


@pytest.mark.parametrize("name, keras_kwargs, kcnn_kwargs", FAST, ids=[f[0] for f in FAST])
def test_parity_with_keras_applications(name, keras_kwargs, kcnn_kwargs, tmp_path):
    check_parity(name, keras_kwargs, kcnn_kwargs, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name, keras_kwargs, kcnn_kwargs", SLOW, ids=[s[0] for s in SLOW])
def test_parity_with_keras_applications_large(name, keras_kwargs, kcnn_kwargs, tmp_path):
    check_parity(name, keras_kwargs, kcnn_kwargs, tmp_path)


def test_keras2_layer_names_fall_back_to_keras_own_loader(tmp_path):
    """Files written before a rename (Keras 2's "conv1/conv") load by layer order, as Keras loads them."""
    reference = _reference("mobilenet_v1", alpha=0.25)
    path = save_legacy_h5(reference, tmp_path / "old.h5")
    with h5py.File(path, "r+") as h5:
        names = [n.decode() if isinstance(n, bytes) else n for n in h5.attrs["layer_names"]]
        h5.move("conv1", "conv1_old")
        h5.attrs["layer_names"] = [("conv1_old" if n == "conv1" else n).encode() for n in names]
    model = _kcnn_model("mobilenet_v1", {"width": 0.25})
    load_weights(model, path)
    expected = keras.ops.convert_to_numpy(reference(_inputs()))
    assert np.abs(keras.ops.convert_to_numpy(model(_inputs())) - expected).max() < 1e-4


@pytest.mark.parametrize("name", ["mobilenet_v1", pytest.param("vgg19", marks=pytest.mark.slow)])
def test_mapping_covers_every_keras_weight(name):
    """Every keras.applications layer with weights is mapped once (VGG19 shares VGG16's tested table walker)."""
    for pairs in [catalog.find(name, "keras").pairs]:
        reference = keras_apps.reference_model(name, (SIZE, SIZE, 3), True, 7, 0.5 if "mobilenet" in name else None)
        weighted = [layer.name for layer in reference.layers if layer.weights]
        sources = [pair.source for pair in pairs(name)]
        assert sorted(sources) == sorted(weighted) and len(set(sources)) == len(sources)


def test_other_architecture_and_head_mismatch_are_named(v1_file):
    path = v1_file[1]
    wide = kcnn.build("mobilenet_v1", num_classes=7, input_shape=(SIZE, SIZE, 3),
                      backbone_kwargs={"width": 0.5, "activation": "relu6"})
    with pytest.raises(CheckpointError, match=r"checkpoint tensor 'conv1/0' has shape \(3, 3, 3, 8\) but "
                                              r"conv1_conv/kernel expects \(3, 3, 3, 16\)"):
        load_weights(wide, path)
    other_classes = _kcnn_model("mobilenet_v1", {"width": 0.25}, classes=5)
    before = [keras.ops.convert_to_numpy(w) for w in other_classes.weights]
    with pytest.raises(CheckpointError, match=r"'conv_preds/0' has shape \(1, 1, 256, 7\) but logits/kernel "
                                              r"expects \(256, 5\)"):
        load_weights(other_classes, path)
    after = [keras.ops.convert_to_numpy(w) for w in other_classes.weights]
    assert all(np.array_equal(a, b) for a, b in zip(before, after)), "a failed load must write nothing"
    load_weights(other_classes, path, skip_head=True)


def test_truncated_file(tmp_path, v1_file):
    data = open(v1_file[1], "rb").read()
    with open(tmp_path / "cut.h5", "wb") as handle:
        handle.write(data[: len(data) // 3])
    model = _kcnn_model("mobilenet_v1", {"width": 0.25})
    with pytest.raises(CheckpointError, match=r"is not a readable HDF5 file .*is it truncated\? Download it again"):
        load_weights(model, tmp_path / "cut.h5")


def test_build_imagenet_uses_the_cache_and_names_url_and_file(tmp_path, monkeypatch):
    """``weights="imagenet"`` reads keras.applications' file from the Keras cache; offline it says what to place."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    spec = catalog.find("mobilenet_v1")
    target = tmp_path / "models" / "mobilenet_1_0_224_tf.h5"
    with pytest.raises(CheckpointError, match=rf"\(URL fetch failure\): is this machine offline\? Download {spec.url} "
                                              rf"and place it at {target}$"):
        kcnn.build("mobilenet_v1", input_shape=(SIZE, SIZE, 3), weights="imagenet")
    reference = _reference("mobilenet_v1", alpha=1.0, classes=1000)
    target.parent.mkdir()
    save_legacy_h5(reference, target)
    model = kcnn.build("mobilenet_v1", input_shape=(SIZE, SIZE, 3), weights="imagenet")
    expected = keras.ops.convert_to_numpy(reference(_inputs()))
    assert np.abs(keras.ops.convert_to_numpy(model(_inputs())) - expected).max() < 1e-4
    assert model.get_layer("conv1_act").get_config()["activation"] == "relu6"
    head_only_new = kcnn.build("mobilenet_v1", num_classes=4, input_shape=(SIZE, SIZE, 3), weights="imagenet")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(head_only_new.get_layer("conv1_conv").kernel),
                                  keras.ops.convert_to_numpy(reference.get_layer("conv1").kernel))


def test_hash_mismatch_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    spec = catalog.find("vgg16")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / spec.file_name).write_bytes(b"not the published file")
    with pytest.raises(CheckpointError, match=rf"does not match the published hash {spec.file_hash}; delete it and "
                                              rf"download {spec.url}"):
        kcnn.build("vgg16", input_shape=(SIZE, SIZE, 3), weights="imagenet")


def test_preprocessing_per_checkpoint():
    from kcnn.weights import preprocessing

    pixels = np.array([[[[255.0, 0.0, 127.5]]]], dtype="float32")
    caffe = keras.ops.convert_to_numpy(preprocessing("resnet50").normalize(pixels))
    # keras.applications.imagenet_utils "caffe": RGB -> BGR, minus the BGR ImageNet mean.
    expected = keras.applications.imagenet_utils.preprocess_input(pixels.copy(), mode="caffe")
    np.testing.assert_allclose(caffe, expected, atol=1e-4)
    for name, mode in [("mobilenet_v2", "tf"), ("densenet121", "torch")]:
        got = keras.ops.convert_to_numpy(preprocessing(name).normalize(pixels))
        np.testing.assert_allclose(got, keras.applications.imagenet_utils.preprocess_input(pixels.copy(), mode=mode),
                                   atol=1e-4)
    torch = preprocessing("resnet18", "torchvision")
    assert (torch.mode, torch.resize, torch.crop) == ("torch", 256, 224)
