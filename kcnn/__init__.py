"""kcnn: build, analyse, train, export and serve convolutional neural networks with Keras 3.

This package (build and analyse) imports only keras, keras.ops and numpy, so its
builders run on every Keras backend.

``import kcnn`` is cheap: the names below load their module (and Keras) on first
use, so ``kcnn --help`` and ``kcnn --version`` start in a fraction of a second.
Whatever loads first also imports :mod:`kcnn.layers`, which registers kcnn's custom
layers with Keras, so a ``.keras`` file that uses them loads after any kcnn name was
touched (or after ``import kcnn.layers``).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it (a module itself when the name is a subpackage)
_EXPORTS = {
    "backbones": "kcnn.backbones",
    "blocks": "kcnn.blocks",
    "heads": "kcnn.heads",
    "layers": "kcnn.layers",
    "assemble": "kcnn.model",
    "build": "kcnn.model",
    "list_backbones": "kcnn.model",
    "list_heads": "kcnn.model",
    "smallest_input_size": "kcnn.model",
    "Registry": "kcnn.registry",
    "UnknownNameError": "kcnn.registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'kcnn' has no attribute {name!r}")
    importlib.import_module("kcnn.layers")  # custom layers are registered before anything can load a model
    module = importlib.import_module(_EXPORTS[name])
    value = module if module.__name__ == f"kcnn.{name}" else getattr(module, name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
