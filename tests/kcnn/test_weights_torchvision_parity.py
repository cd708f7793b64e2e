"""kcnn.weights against torchvision itself: the same weights give the same logits.

``torchvision_reference/reference.json`` was written by ``make_reference.py`` with
PyTorch 2.14.1 and torchvision 0.29.1 (its header records the versions): every
torchvision model that kcnn.weights maps, built with ``weights=None``, filled with
deterministic values (``seeded.py``), run in eval mode on images normalised as
torchvision's ImageClassification preset does. Here the same state dict is drawn
again with numpy, written as ``.safetensors``, loaded into the model that
``kcnn.build`` makes with the checkpoint's options, run on the same images through
``kcnn.weights.preprocessing(name, "torchvision")``, and kcnn's logits must equal
torchvision's. PyTorch is not needed to run this test.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from safetensors.numpy import save_file

import kcnn
from kcnn.weights import catalog, load_weights, preprocessing
from tests.kcnn.torchvision_reference import seeded

with open(os.path.join(os.path.dirname(__file__), "torchvision_reference", "reference.json")) as _handle:
    REFERENCE = json.load(_handle)
# The flatten-head and the deepest models cost the most to build, fill and run at their sizes.
HEAVY = {"vgg13", "vgg16", "vgg19"}


def _logits(model):
    """kcnn's heads end in a softmax; torchvision's models return what goes into it."""
    import keras

    last = model.layers[-1]
    assert last.name == "predictions" and last.activation is keras.activations.softmax
    return keras.Model(model.inputs, last.input)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n
                                  for n in sorted(REFERENCE["models"])])
def test_kcnn_logits_equal_torchvisions(name, tmp_path):
    reference = REFERENCE["models"][name]
    tensors = seeded.state_dict(REFERENCE["seed"], reference["tensors"])
    assert seeded.digest(tensors) == reference["digest"], (
        "numpy drew other values than when reference.json was written; rerun make_reference.py")
    path = str(tmp_path / f"{name}.safetensors")
    save_file(tensors, path)
    del tensors

    spec = catalog.find(name, "torchvision")
    size = reference["size"]
    model = kcnn.build(name, input_shape=(size, size, 3), backbone_kwargs=spec.builder_kwargs)
    load_weights(model, path)
    images = seeded.images(REFERENCE["seed"], reference["batch"], size)
    prep = preprocessing(name, "torchvision")
    ours = np.asarray(_logits(model)(prep.normalize(images), training=False), dtype=np.float64)
    theirs = np.asarray(reference["logits"])

    assert ours.shape == theirs.shape
    scale = np.abs(theirs).max()
    error = np.abs(ours - theirs).max()
    # float32 sums in another order: differences of a few ulps of the largest logit, never more.
    assert error <= 2e-5 * scale, f"{name}: max |kcnn - torchvision| = {error:.3g} (logit scale {scale:.3g})"
    assert (ours.argmax(-1) == theirs.argmax(-1)).all()
