"""kcnn/ imports only keras, keras.ops and numpy, so its builders run on every Keras backend."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
import textwrap

import kcnn

PACKAGE = pathlib.Path(kcnn.__file__).parent


# The one module allowed to import a backend's autodiff, and only inside its functions (lazily).
AUTODIFF = "autodiff.py"


def test_no_module_in_kcnn_imports_tensorflow():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        lazy_allowed = path.relative_to(PACKAGE).as_posix() == AUTODIFF
        nodes = tree.body if lazy_allowed else ast.walk(tree)  # autodiff: module level only
        for node in nodes:
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(PACKAGE)}: {n}" for n in names if n.split(".")[0] == "tensorflow"]
    assert offenders == []


BLOCKED_TF_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, os, sys

    class BlockTensorFlow(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow" or name.startswith("tensorflow."):
                raise ImportError("tensorflow is blocked in this test")
            return None

    sys.meta_path.insert(0, BlockTensorFlow())
    os.environ["KERAS_BACKEND"] = "jax"
    import numpy as np
    import keras, kcnn
    from kcnn.analysis import analyze
    assert keras.backend.backend() == "jax", keras.backend.backend()
    # Fire modules and the fully convolutional head; residual blocks and FCN upsampling at run-time sizes.
    # (Building is slow on JAX's CPU backend: every initializer shape compiles, about 10 s a model.)
    for name, head, shape in [("squeezenet1_1", None, (32, 32, 3)), ("resnet18", "segmentation", (None, None, 3))]:
        model = kcnn.build(name, num_classes=5, head=head, input_shape=shape)
        out = np.asarray(model(np.random.rand(1, 37, 37, 3).astype("float32") if shape[0] is None
                               else np.random.rand(1, *shape).astype("float32")))
        assert np.all(np.isfinite(out)), name
        np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-4)
    assert out.shape == (1, 37, 37, 5)
    assert analyze(model, input_shape=(64, 64, 3)).total_params == model.count_params()
    lrn = kcnn.layers.LocalResponseNormalization()(np.ones((1, 2, 2, 8), "float32"))
    assert np.all(np.isfinite(np.asarray(lrn)))
    assert not any(m == "tensorflow" or m.startswith("tensorflow.") for m in sys.modules)
    print("OK", keras.backend.backend())
    """
)


def test_builders_run_on_jax_with_tensorflow_blocked():
    result = subprocess.run([sys.executable, "-c", BLOCKED_TF_SCRIPT], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("OK jax")
