"""Reading checkpoint files into plain numpy arrays: Keras ``.h5`` / ``.weights.h5``, ``.safetensors``, ``.pth``.

Nothing here imports TensorFlow; PyTorch is imported only to read a ``.pth`` file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import numpy as np


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or whose tensors do not fit the model."""


@dataclass
class Checkpoint:
    """The tensors of one checkpoint file.

    ``kind`` is ``"keras"`` (keys ``"{layer}/{index}"``, the layer's weights in
    Keras order), ``"keras3"`` (a Keras 3 ``.weights.h5`` file, read through the
    reference keras.applications model because its keys are per-class counters)
    or ``"torch"`` (a state dict: keys as PyTorch names them, arrays as stored).
    """

    path: str
    kind: str
    tensors: dict[str, np.ndarray] = field(default_factory=dict)


def read_checkpoint(path: str) -> Checkpoint:
    """Open ``path`` by its content and file name; raise CheckpointError naming the file when it cannot."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    if path.endswith(".safetensors"):
        return Checkpoint(path, "torch", _read_safetensors(path))
    if path.endswith((".pth", ".pt", ".bin")):
        return Checkpoint(path, "torch", _read_torch(path))
    if path.endswith((".h5", ".hdf5")):
        return _read_keras_h5(path)
    raise CheckpointError(
        f"checkpoint {path!r}: unknown file type; kcnn reads Keras .h5 / .weights.h5, .safetensors and "
        "(with PyTorch installed) .pth files"
    )


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return dict(load_file(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path!r} is not a readable safetensors file ({error}); "
                              "is it truncated? Download it again") from None


def _read_torch(path: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"checkpoint {path!r} is a PyTorch pickle and PyTorch is not installed; install torch, or convert it "
            "once with safetensors.torch.save_file(torch.load(path), 'model.safetensors') and load that"
        ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        raise CheckpointError(f"checkpoint {path!r} could not be read by torch.load ({error})") from None
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return {name: tensor.detach().cpu().numpy() for name, tensor in state.items()}


def _read_keras_h5(path: str) -> Checkpoint:
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            if "layers" in h5 and "layer_names" not in h5.attrs:
                return Checkpoint(path, "keras3")
            root = h5["model_weights"] if "model_weights" in h5 else h5  # a whole-model legacy file
            if "layer_names" not in root.attrs:
                raise CheckpointError(f"checkpoint {path!r} is an HDF5 file but not a Keras weights file")
            tensors = {}
            for layer in _decode(root.attrs["layer_names"]):
                group = root[layer]
                for index, weight in enumerate(_decode(group.attrs.get("weight_names", []))):
                    # Keras 2 files name some layers "conv1/conv" where Keras 3 says "conv1_conv".
                    tensors[f"{layer.replace('/', '_')}/{index}"] = np.asarray(group[weight])
            return Checkpoint(path, "keras", tensors)
    except OSError as error:
        raise CheckpointError(f"checkpoint {path!r} is not a readable HDF5 file ({error}); "
                              "is it truncated? Download it again") from None


def _decode(names) -> list[str]:
    return [n.decode("utf8") if isinstance(n, bytes) else str(n) for n in names]


# torchvision's DenseNet checkpoints predate a rename ("norm.1" -> "norm1"); torchvision rewrites the keys on load.
_DENSENET_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def normalise_torch_names(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rename legacy torchvision keys to the current ones and drop a ``module.`` (DataParallel) prefix."""
    renamed = {}
    for name, value in tensors.items():
        name = name[len("module."):] if name.startswith("module.") else name
        match = _DENSENET_OLD_KEY.match(name)
        if match:
            name = match.group(1) + match.group(2)
        renamed[name] = value
    return renamed
