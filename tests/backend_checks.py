"""Backend-agnostic checks: each runs in the test process (TensorFlow) and, all of them in one process, on JAX.

Each check builds what it needs, asserts what must hold on any backend and returns
the arrays to compare across backends. ``python tests/backend_checks.py OUT NAME...``
runs the named checks on JAX with TensorFlow blocked (an import of it raises), one
process for all of them, because a JAX process costs seconds to start and compiles
every initializer shape anew; conftest's ``on_jax`` fixture runs it once per test
session with the checks that the selected tests name (``@pytest.mark.on_jax(NAME)``).
For each check OUT gets ``NAME.npz`` and ``status.json`` records whether it passed,
with the traceback when it did not, and whether TensorFlow stayed out of the process.
"""

from __future__ import annotations

import importlib.abc
import json
import os
import sys
import time
import traceback

import numpy as np

CHECKS = {}


def check(function):
    CHECKS[function.__name__] = function
    return function


def tensorflow_modules() -> list:
    return sorted(m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow."))


@check
def builders() -> dict:
    """Fire modules and the fully convolutional head; residual blocks and FCN upsampling at run-time sizes."""
    import keras

    import kcnn
    from kcnn.analysis import analyze

    outputs = {}
    for name, head, shape in [("squeezenet1_1", None, (32, 32, 3)), ("resnet18", "segmentation", (None, None, 3))]:
        model = kcnn.build(name, num_classes=5, head=head, input_shape=shape)
        images = np.random.default_rng(0).random((1, *(shape if shape[0] else (37, 37, 3))), dtype=np.float32)
        out = keras.ops.convert_to_numpy(model(images))
        assert np.all(np.isfinite(out)), name
        np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-4)
        outputs[name] = out
    assert outputs["resnet18"].shape == (1, 37, 37, 5)
    assert analyze(model, input_shape=(64, 64, 3)).total_params == model.count_params()
    lrn = keras.ops.convert_to_numpy(kcnn.layers.LocalResponseNormalization()(np.ones((1, 2, 2, 8), "float32")))
    assert np.all(np.isfinite(lrn))
    return {"segmentation": outputs["resnet18"], "lrn": lrn}


@check
def autodiff_gradient() -> dict:
    """kcnn.autodiff's value and input gradient of one class score of a seeded conv net."""
    import keras

    from kcnn.autodiff import value_and_grad

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 3, activation="relu", name="conv")(inputs)
    outputs = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(1)
    model.set_weights([rng.standard_normal(w.shape).astype("float32") for w in model.get_weights()])
    image = rng.standard_normal((1, 6, 6, 2)).astype("float32")
    value, (grad,) = value_and_grad(lambda t: keras.ops.sum(model(t)[:, 2]), image)
    return {"value_and_grad": np.concatenate([[np.asarray(value)], np.asarray(grad).ravel()])}


@check
def insight_maps() -> dict:
    """Input gradients, Grad-CAM's activation gradients and a deconvnet projection of a seeded model."""
    import keras

    from kcnn import insight

    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", kernel_initializer="zeros", name="c1")(inputs)
    x = keras.layers.MaxPooling2D(name="p1")(x)
    x = keras.layers.Conv2D(6, 3, padding="same", kernel_initializer="zeros", name="c2")(x)
    x = keras.layers.ReLU(name="r2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", kernel_initializer="zeros")(x))
    # Zero initialisers, then random weights: JAX compiles every random initializer shape (slow on CPU).
    rng = np.random.default_rng(1)
    model.set_weights([rng.standard_normal(w.shape).astype("float32") * 0.5 for w in model.get_weights()])
    images = rng.standard_normal((2, 12, 12, 3)).astype("float32")
    grad, _ = insight.input_gradients(model, images, class_index=[0, 2])
    activations, cam_grad, _ = insight.activation_gradients(model, "r2", images, class_index=[0, 2])
    deconv, _ = insight.deconvnet(model, "r2", 1, images[0])
    return {"grad": grad, "cam_grad": cam_grad, "activations": activations, "deconv": deconv}


@check
def compress_round_trip() -> dict:
    """Prune while fitting, strip, quantise, fine-tune the centroids, write and read the artefact."""
    import tempfile

    import keras

    from kcnn import compress

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="dense")(x))
    rng = np.random.default_rng(0)
    images, labels = rng.random((32, 8, 8, 1), dtype=np.float32), rng.integers(0, 3, 32)
    pruned = compress.prune(model, {"conv": 0.25})
    zeros = keras.ops.convert_to_numpy(pruned.get_layer("conv").kernel) == 0
    pruned.compile(keras.optimizers.SGD(0.1, momentum=0.9), "sparse_categorical_crossentropy")
    pruned.fit(images, labels, batch_size=8, epochs=1, verbose=0, callbacks=[compress.PruningCallback()])
    stripped = compress.strip_pruning(pruned)
    kernel = keras.ops.convert_to_numpy(stripped.get_layer("conv").kernel)
    assert np.all(kernel[zeros] == 0)
    codes = compress.quantise(stripped, bits=4)
    compress.finetune_centroids(stripped, codes, [(images[:8], labels[:8])])
    path = os.path.join(tempfile.mkdtemp(), "m.kcnn.zip")
    compress.write_artefact(stripped, codes, path)
    restored = compress.load_artefact(path)
    restored_out = keras.ops.convert_to_numpy(restored(images))
    assert np.array_equal(restored_out, keras.ops.convert_to_numpy(stripped(images)))
    return {"pruned_zeros": zeros, "restored": restored_out}


@check
def newer_blocks() -> dict:
    """MBConv, the RegNet and NFNet blocks and a fractal block with its path sampler, in and out of training."""
    import keras

    from kcnn import blocks
    from kcnn.layers import FractalPathSampler

    images = keras.Input((16, 16, 8))
    code = FractalPathSampler(2, global_ratio=0.5, seed=0)(images)
    x = blocks.mbconv(images, 8, 3, expanded=16, se_channels=4, drop_rate=0.2, name="mb")
    x = blocks.regnet_block(x, 16, 2, group_width=8, se_ratio=0.25, name="rg")
    x = blocks.nf_block(x, 16, beta=1.0, group_width=8, drop_rate=0.1, name="nf")
    x = blocks.fractal_block(x, 8, 2, code, name="fr")
    model = keras.Model(images, x)
    batch = np.random.default_rng(0).random((2, 16, 16, 8), dtype=np.float32)
    outputs = {}
    for training in (False, True):
        out = keras.ops.convert_to_numpy(model(batch, training=training))
        assert out.shape == (2, 8, 8, 8) and np.all(np.isfinite(out)), training
        outputs[f"training_{training}"] = out
    return outputs


@check
def super_resolution() -> dict:
    """ESPCN, SRCNN and bicubic upscale x3, and PixelShuffle rearranges as depth_to_space does."""
    import keras

    from kcnn.layers import PixelShuffle
    from kcnn.superres import SUPER_RESOLUTION

    x = np.random.default_rng(0).random((1, 5, 6, 1), dtype=np.float32)
    for name in SUPER_RESOLUTION:
        out = keras.ops.convert_to_numpy(SUPER_RESOLUTION.get(name)(scale=3)(x))
        assert out.shape == (1, 15, 18, 1) and np.all(np.isfinite(out)), name
    z = np.arange(2 * 3 * 4 * 8, dtype=np.float32).reshape(2, 3, 4, 8)
    return {"shuffled": keras.ops.convert_to_numpy(PixelShuffle(2)(z)),
            "bicubic": keras.ops.convert_to_numpy(SUPER_RESOLUTION.get("bicubic")(scale=3)(x))}


class _BlockTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError("tensorflow is blocked in this test")
        return None


def run_on_jax(out_dir: str, names) -> dict:
    """Run ``names`` in this process on JAX with TensorFlow blocked; write each result and status.json."""
    sys.meta_path.insert(0, _BlockTensorFlow())
    os.environ["KERAS_BACKEND"] = "jax"
    import keras

    assert keras.backend.backend() == "jax", keras.backend.backend()
    status = {}
    for name in names:
        started = time.perf_counter()
        try:
            np.savez(os.path.join(out_dir, f"{name}.npz"), **CHECKS[name]())
            leaked = tensorflow_modules()
            status[name] = {"ok": not leaked, "error": f"TensorFlow was imported: {leaked}" if leaked else None}
        except Exception:  # one failing check must not hide the others' results
            status[name] = {"ok": False, "error": traceback.format_exc()}
        status[name]["seconds"] = round(time.perf_counter() - started, 1)
    with open(os.path.join(out_dir, "status.json"), "w") as handle:
        json.dump({"backend": keras.backend.backend(), "checks": status}, handle)
    return status


if __name__ == "__main__":
    run_on_jax(sys.argv[1], sys.argv[2:] or list(CHECKS))
