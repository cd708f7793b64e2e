"""kcnn: build, analyse, train, export and serve convolutional neural networks with Keras 3.

This package (build and analyse) imports only keras, keras.ops and numpy, so its
builders run on every Keras backend.
"""

from kcnn import backbones, blocks, heads, layers
from kcnn.model import assemble, build, list_backbones, list_heads, smallest_input_size
from kcnn.registry import Registry, UnknownNameError

__version__ = "0.1.0"

__all__ = [
    "Registry",
    "UnknownNameError",
    "assemble",
    "backbones",
    "blocks",
    "build",
    "heads",
    "layers",
    "list_backbones",
    "list_heads",
    "smallest_input_size",
]
