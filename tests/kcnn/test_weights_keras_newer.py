"""kcnn.weights for keras.applications' EfficientNet and MobileNet v3, against keras.applications itself.

Both keras models preprocess inside themselves; kcnn does it outside. So keras gets raw
0-255 pixels and kcnn gets ``kcnn.weights.preprocessing(name, "keras").normalize`` of the
same pixels, which tests the catalog's preprocessing along with the weights. EfficientNet's
keras model is built the way ``weights="imagenet"`` builds it (that adds a Rescaling layer
for the standard deviation, see keras' efficientnet.py), with keras' download replaced by a
file of random weights whose input Normalization holds the published ImageNet values; the
replaced download also proves the catalog's file name, URL and md5 are the ones keras asks for.
keras insists on the checkpoint's own size (224 for B0, 240 for B1...) for EfficientNet's "imagenet"
model with its top, so the full models run at the catalog row's crop size; the backbones
alone run at 40 pixels, so the stride-2 layers see even (40, 20, 10) and odd (5, 3) maps:
keras' ZeroPadding2D(correct_pad) + "valid" is what kcnn's "same" computes at a fixed size.
"""

from __future__ import annotations

import importlib
import re

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

import kcnn
from kcnn.weights import CheckpointError, catalog, keras_apps, load_weights, preprocessing
from tests.kcnn.test_weights_keras import randomise_batch_norm

SIZE = 40
# ImageNet mean and standard deviation as keras' efficientnet.py states them (IMAGENET_STDDEV_RGB).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _randomise(model):
    randomise_batch_norm(model)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Normalization):  # what the published files hold (the stddev quirk)
            layer.adapt_mean.assign(IMAGENET_MEAN)
            layer.adapt_variance.assign(IMAGENET_STD)
            layer.finalize_state()
    return model


def _save_legacy(model, path):
    with h5py.File(path, "w") as h5:
        legacy_h5_format.save_weights_to_hdf5_group(h5, model)
    return str(path)


def _pixels(size):
    return np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")


def _keras_module(name):
    family = "efficientnet" if name.startswith("efficientnet") else "mobilenet_v3"
    return importlib.import_module(f"keras.src.applications.{family}")


def _imagenet_reference(name, monkeypatch, tmp_path, include_top=True):
    """keras.applications' model as ``weights="imagenet"`` builds it, its download replaced by random weights.

    Returns (model, legacy .h5 path, Keras 3 .weights.h5 path) and checks what keras asked to download.
    """
    spec = catalog.find(name, "keras")
    size = spec.preprocessing.crop if include_top else SIZE
    kwargs = dict(input_shape=(size, size, 3), include_top=include_top, **keras_apps.REFERENCE_KWARGS.get(name, {}))
    constructor = getattr(keras.applications, keras_apps.REFERENCE_MODELS[name])
    plain = _randomise(constructor(weights=None, **kwargs))
    legacy = _save_legacy(plain, tmp_path / "legacy.h5")
    keras3 = str(tmp_path / "model.weights.h5")
    plain.save_weights(keras3)
    asked = []

    def fake_get_file(fname, origin, cache_subdir, file_hash):
        asked.append((fname, origin, file_hash))
        return legacy

    monkeypatch.setattr(_keras_module(name).file_utils, "get_file", fake_get_file)
    model = constructor(weights="imagenet", **kwargs)
    if include_top:
        assert asked == [(spec.file_name, spec.url, spec.file_hash)]
    return model, legacy, keras3


def _kcnn(name, size, classes=1000):
    spec = catalog.find(name, "keras")
    return kcnn.build(name, num_classes=classes, input_shape=(size, size, 3), backbone_kwargs=spec.builder_kwargs)


def check_parity(name, monkeypatch, tmp_path):
    reference, legacy, keras3 = _imagenet_reference(name, monkeypatch, tmp_path)
    normalize = preprocessing(name, "keras").normalize
    size = catalog.find(name, "keras").preprocessing.crop
    pixels = _pixels(size)
    expected = keras.ops.convert_to_numpy(reference(pixels))
    for path in (legacy, keras3):
        model = _kcnn(name, size)
        load_weights(model, path)
        got = keras.ops.convert_to_numpy(model(normalize(pixels)))
        assert np.abs(got - expected).max() < 1e-4, path
    # The backbone alone from a "notop" file: kcnn's deepest map is keras.applications' output.
    notop, notop_legacy, _ = _imagenet_reference(name, monkeypatch, tmp_path, include_top=False)
    model = _kcnn(name, SIZE, classes=3)
    load_weights(model, notop_legacy, skip_head=True)
    backbone = keras.Model(model.inputs, model.get_layer("head_pool").input)
    pixels = _pixels(SIZE)
    expected = keras.ops.convert_to_numpy(notop(pixels))
    got = keras.ops.convert_to_numpy(backbone(normalize(pixels)))
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-4


@pytest.mark.parametrize("name", ["efficientnet_b0", "mobilenet_v3_small"])
def test_parity_with_keras_applications(name, monkeypatch, tmp_path):
    check_parity(name, monkeypatch, tmp_path)


# EfficientNet B1-B7 run B0's code with other depths and widths: B0's parity above, the B7 mapping-coverage test
# and every variant's pinned counts cover them (B1 and B2 at 240/260 px cost over a minute of the suite).
SLOW = ["mobilenet_v3_large", "mobilenet_v3_small_minimalistic", "mobilenet_v3_large_minimalistic"]


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_parity_with_keras_applications_larger(name, monkeypatch, tmp_path):
    check_parity(name, monkeypatch, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", [f"efficientnet_b{i}" for i in range(3, 8)])
def test_catalog_is_what_keras_downloads(name, monkeypatch):
    """The biggest variants: keras' own download request (name, URL, md5) is the catalog's row; nothing is run."""
    spec = catalog.find(name, "keras")

    def stop(fname, origin, cache_subdir, file_hash):
        raise RuntimeError((fname, origin, file_hash))

    monkeypatch.setattr(_keras_module(name).file_utils, "get_file", stop)
    with pytest.raises(RuntimeError) as raised:
        getattr(keras.applications, keras_apps.REFERENCE_MODELS[name])(weights="imagenet")
    assert raised.value.args[0] == (spec.file_name, spec.url, spec.file_hash)


@pytest.mark.slow
def test_mobilenet_v3_width_075_keras3_file(tmp_path):
    """keras.applications publishes v3 at alpha 0.75 too; a Keras 3 file of it loads into kcnn's width 0.75."""
    reference = _randomise(keras.applications.MobileNetV3Small(weights=None, alpha=0.75, input_shape=(SIZE, SIZE, 3),
                                                               classes=6))
    path = str(tmp_path / "v3.weights.h5")
    reference.save_weights(path)
    model = kcnn.build("mobilenet_v3_small", num_classes=6, input_shape=(SIZE, SIZE, 3),
                       backbone_kwargs={"width": 0.75})
    load_weights(model, path)
    pixels = _pixels(SIZE)
    got = keras.ops.convert_to_numpy(model(preprocessing("mobilenet_v3_small", "keras").normalize(pixels)))
    assert np.abs(got - keras.ops.convert_to_numpy(reference(pixels))).max() < 1e-4


@pytest.mark.parametrize("name", ["efficientnet_b0", "mobilenet_v3_small",
                                  pytest.param("efficientnet_b7", marks=pytest.mark.slow),
                                  pytest.param("mobilenet_v3_large_minimalistic", marks=pytest.mark.slow)])
def test_mapping_covers_every_keras_weight(name):
    reference = keras_apps.reference_model(name, (32, 32, 3), True, 7, None)
    weighted = [layer.name for layer in reference.layers if layer.weights]
    sources = [pair.source for pair in catalog.find(name, "keras").pairs(name)]
    if name.startswith("efficientnet"):  # the input Normalization, declared by its class name
        weighted = [keras_apps.NORMALIZATION if isinstance(reference.get_layer(n), keras.layers.Normalization)
                    else n for n in weighted]
    assert sorted(sources) == sorted(weighted) and len(set(sources)) == len(sources)


def test_adapted_input_normalization_is_refused(tmp_path):
    """An EfficientNet file whose Normalization is not the published ImageNet one cannot load silently."""
    reference = _randomise(keras.applications.EfficientNetB0(weights=None, input_shape=(32, 32, 3), classes=5))
    layer = next(x for x in reference.layers if isinstance(x, keras.layers.Normalization))
    layer.adapt_mean.assign((0.5, 0.5, 0.5))
    path = _save_legacy(reference, tmp_path / "adapted.h5")
    model = kcnn.build("efficientnet_b0", num_classes=5, input_shape=(32, 32, 3))
    with pytest.raises(CheckpointError, match=r"input Normalization has mean \[0\.5, 0\.5, 0\.5\] and variance "
                                              r"\[0\.229, 0\.224, 0\.225\], not keras\.applications' ImageNet"):
        load_weights(model, path)


def test_preprocessing_rows():
    b3 = preprocessing("efficientnet_b3", "keras")
    assert (b3.mode, b3.mean, b3.std, b3.resize, b3.crop) == ("torch", IMAGENET_MEAN, IMAGENET_STD, 300, 300)
    pixels = np.array([[[[255.0, 0.0, 127.5]]]], dtype="float32")
    got = keras.ops.convert_to_numpy(preprocessing("mobilenet_v3_large", "keras").normalize(pixels))
    # keras.applications.mobilenet_v3's Rescaling(1 / 127.5, offset=-1).
    np.testing.assert_allclose(got, pixels / 127.5 - 1.0, atol=1e-6)


# --- RegNet: Keras 2's keras.applications (kept as tf-keras; Keras 3 has none) --------------------------

def _tf_keras_regnet(name, monkeypatch, tmp_path):
    """tf-keras' RegNet as ``weights="imagenet"`` builds it (224 pixels), its download a random-weights file."""
    import tf_keras
    from tf_keras.src.applications import regnet

    spec = catalog.find(name, "keras")
    constructor = getattr(tf_keras.applications, f"RegNet{name[6].upper()}{name[-3:]}")
    plain = _randomise(constructor(weights=None))
    path = str(tmp_path / "regnet.h5")
    plain.save_weights(path)  # tf-keras writes the legacy layout of the published files
    asked = []

    def fake_get_file(fname, origin, cache_subdir, file_hash):
        asked.append((fname, origin, file_hash))
        return path

    monkeypatch.setattr(regnet.data_utils, "get_file", fake_get_file)
    model = constructor(weights="imagenet")
    assert asked == [(spec.file_name, spec.url, spec.file_hash)]
    return model, path


@pytest.mark.parametrize("name", ["regnetx_002", pytest.param("regnety_008", marks=pytest.mark.slow)])
def test_regnet_parity_with_tf_keras_applications(name, monkeypatch, tmp_path):
    reference, path = _tf_keras_regnet(name, monkeypatch, tmp_path)
    pixels = _pixels(224)
    expected = reference(pixels).numpy()  # logits: tf-keras' RegNet head never applies its softmax
    model = _kcnn(name, 224)
    load_weights(model, path)
    logits = keras.Model(model.inputs, model.get_layer("logits").output)
    got = keras.ops.convert_to_numpy(logits(preprocessing(name, "keras").normalize(pixels)))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # The head's layer name carries tf-keras' session counter; any counter loads.
    with h5py.File(path, "r") as h5:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in h5.attrs["layer_names"]]
    assert [n for n in names if re.fullmatch(r"\d+head_dense", n)], names[-3:]


def test_regnet_catalog_rows_are_tf_keras_own_files():
    """All 24 RegNets: file name, URL and sha256 are those tf-keras' regnet.py passes to get_file."""
    from tf_keras.src.applications import regnet

    rows = {c.model: c for c in catalog.CHECKPOINTS if c.model.startswith("regnet")}
    assert len(rows) == 24
    for key, (top_hash, _) in regnet.WEIGHTS_HASHES.items():
        spec = rows[f"regnet{key[0]}_{key[1:]}"]
        assert (spec.file_name, spec.url, spec.file_hash) == (
            f"regnet{key}.h5", f"{regnet.BASE_WEIGHTS_PATH}regnet{key}.h5", top_hash)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["regnetx_080", "regnety_016"])
def test_regnet_mapping_covers_every_tf_keras_weight(name):
    """Two more shapes of the table: RegNetX-8.0GF's group width capped by its first stage, a deep RegNetY."""
    import tf_keras

    constructor = getattr(tf_keras.applications, f"RegNet{name[6].upper()}{name[-3:]}")
    reference = constructor(weights=None, input_shape=(32, 32, 3), include_top=False)
    weighted = [layer.name for layer in reference.layers if layer.weights]
    sources = [pair.source for pair in catalog.find(name, "keras").pairs(name) if not pair.head]
    assert sorted(sources) == sorted(weighted) and len(set(sources)) == len(sources)


def test_regnet_sha256_is_checked(tmp_path, monkeypatch):
    """tf-keras publishes sha256 (64 digits) for RegNet, md5 elsewhere: a cached file passes by either, as
    keras' get_file accepts it, and a wrong one is named, not loaded."""
    import dataclasses
    import hashlib

    from kcnn.weights import fetch

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    spec = catalog.find("regnetx_002")
    assert len(spec.file_hash) == 64
    (tmp_path / "models").mkdir()
    target = tmp_path / "models" / spec.file_name
    target.write_bytes(b"a stand-in file")
    for digest in (hashlib.sha256, hashlib.md5):
        assert fetch(dataclasses.replace(spec, file_hash=digest(b"a stand-in file").hexdigest())) == str(target)
    with pytest.raises(CheckpointError, match=rf"does not match the published hash {spec.file_hash}; delete it"):
        kcnn.build("regnetx_002", input_shape=(32, 32, 3), weights="imagenet")
