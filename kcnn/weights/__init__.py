"""Pretrained weights: map keras.applications and torchvision checkpoints onto kcnn models.

``load_weights(model, path)`` fills a kcnn model from a checkpoint file, using every
tensor once and filling every weight once, or raises naming the first mismatch.
``kcnn.build(name, weights="imagenet")`` builds the checkpoint's variant and loads it.
Only numpy, h5py and safetensors are needed (PyTorch only to read ``.pth`` files).
"""

from __future__ import annotations

import hashlib
import os

import keras

from kcnn.weights import assign as _assign
from kcnn.weights import keras_apps
from kcnn.weights.catalog import CHECKPOINTS, SOURCES, CheckpointSpec, find
from kcnn.weights.preprocessing import Preprocessing
from kcnn.weights.sources import CheckpointError, normalise_torch_names, read_checkpoint

__all__ = ["CHECKPOINTS", "CheckpointError", "CheckpointSpec", "Preprocessing", "builder_hint", "checkpoint_for",
           "checkpoint_spec", "fetch", "load_backbone_weights", "load_weights", "preprocessing"]


def load_weights(model: keras.Model, source, *, skip_head: bool = False, architecture: str | None = None) -> CheckpointSpec:
    """Load the checkpoint file ``source`` into ``model`` (built by kcnn with the checkpoint's options).

    ``architecture`` defaults to ``model.name`` (what ``kcnn.build`` names it).
    ``skip_head=True`` loads the backbone only, for a new head or class count.
    Returns the checkpoint's catalog row. Raises CheckpointError, writing nothing,
    when a tensor is missing, left over or of the wrong shape.

    A Keras 3 ``.weights.h5`` file that ``model.save_weights`` wrote from the same architecture (kcnn's
    own, or any Keras model's) loads as Keras loads it, all or nothing; that returns None (no catalog row).
    """
    name = architecture or model.name
    checkpoint = read_checkpoint(source)
    if checkpoint.kind == "keras3" and not skip_head:
        own_error = _load_same_architecture(model, checkpoint.path)
        if own_error is None:
            return None
    library = "keras" if checkpoint.kind in ("keras", "keras3") else "torchvision"
    try:
        spec = find(name, library)
    except ValueError as error:
        if checkpoint.kind == "keras3" and not skip_head:
            raise CheckpointError(f"{source} is a Keras .weights.h5 file that does not fit model {model.name!r} "
                                  f"({own_error}); load it into the architecture that saved it (the same builder, "
                                  "options, input channels and class count)") from None
        raise CheckpointError(f"{source}: {error}") from None
    pairs = spec.pairs(name)
    if checkpoint.kind == "keras3" or (checkpoint.kind == "keras" and not _names_match(pairs, checkpoint.tensors)):
        tensors = keras_apps.read_through_reference(checkpoint.path, name, model)
    elif checkpoint.kind == "torch":
        tensors = normalise_torch_names(checkpoint.tensors)
    else:
        tensors = keras_apps.unnumbered_head(checkpoint.tensors)
    family = f"{name} from {library} ({os.path.basename(str(source))})"
    if library == "keras":
        keras_apps.check_input_normalization(pairs, tensors, spec.preprocessing, family)
    writes = _assign.plan(model, pairs, tensors, skip_head=skip_head, family=family,
                          bn_epsilon=spec.bn_epsilon, builder_hint=builder_hint(spec))
    _assign.assign(writes)
    return spec


def _load_same_architecture(model: keras.Model, path: str) -> str | None:
    """Load a ``save_weights`` file into a clone of ``model``, then copy it over: None when every variable
    loaded, else Keras' reason (the model is left untouched)."""
    import warnings

    clone = keras.models.clone_model(model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras warns per nested container while matching groups
            clone.load_weights(path)
    except (ValueError, KeyError, TypeError) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        detail = next((line for line in lines if "shape" in line), lines[0] if lines else type(error).__name__)
        return detail.split(" Target variable")[0]
    model.set_weights(clone.get_weights())
    return None


def load_backbone_weights(backbone: keras.Model, name: str, weights, source: str | None = None) -> CheckpointSpec:
    """Load ``weights`` (``"imagenet"``, fetched into the Keras cache, or a checkpoint file) into a backbone
    built alone, without a head (``kcnn.backbones.vgg19(...)``: style transfer's feature extractor).

    ``name`` is the catalog's architecture (``"vgg19"``); a checkpoint with a classifier (a
    keras.applications file with its top, a torchvision state dict) gives its backbone tensors only.
    """
    _, path = checkpoint_for(name, weights, source)
    return load_weights(backbone, path, skip_head=True, architecture=name)


def checkpoint_spec(name: str, weights: str, source: str | None = None) -> CheckpointSpec:
    """The catalog row ``weights`` ("imagenet" or a checkpoint file) stands for; nothing is read or fetched.

    A file's source library follows from its name (``.h5``: keras.applications, else
    torchvision) unless ``source`` says otherwise; "imagenet" means keras.applications'
    checkpoint where it has one.
    """
    if source is not None and source not in SOURCES:
        raise ValueError(f"weights_source must be one of {SOURCES}, got {source!r}")
    if weights != "imagenet" and source is None:
        source = "keras" if os.fspath(weights).endswith((".h5", ".hdf5")) else "torchvision"
    return find(name, source)


def checkpoint_for(name: str, weights: str, source: str | None = None) -> tuple[CheckpointSpec, str]:
    """``weights`` ("imagenet" or a file) as (catalog row, local path); "imagenet" is fetched into the cache."""
    spec = checkpoint_spec(name, weights, source)
    if weights == "imagenet":
        return spec, fetch(spec)
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise CheckpointError(f"weights must be 'imagenet' or a checkpoint file; {path!r} does not exist")
    return spec, path


def _names_match(pairs, tensors) -> bool:
    """Whether a legacy Keras file names its layers as today's keras.applications does."""
    layers = {key.rsplit("/", 1)[0] for key in tensors}
    return all(pair.source in layers for pair in pairs if not pair.head and pair.kind not in _assign.UNUSED_KINDS)


def builder_hint(spec: CheckpointSpec) -> str:
    """The ``kcnn.build`` arguments that reproduce a checkpoint's architecture, as source text."""
    return f", backbone_kwargs={spec.builder_kwargs!r}" if spec.builder_kwargs else ""


def preprocessing(name: str, source: str | None = None) -> Preprocessing:
    """The preprocessing the ``source`` checkpoint of ``name`` expects (mode, mean/std, resize and crop)."""
    return find(name, source).preprocessing


def cache_dir() -> str:
    """Where ``keras.utils.get_file`` keeps downloads: ``$KERAS_HOME/models`` or ``~/.keras/models``."""
    return os.path.join(os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras")), "models")


def fetch(spec: CheckpointSpec) -> str:
    """The local path of ``spec``'s file, downloaded into the Keras cache if it is not there yet."""
    target = os.path.join(cache_dir(), spec.file_name)
    place = f"download {spec.url} and place it at {target}"
    if os.path.exists(target):
        if not _hash_ok(target, spec):
            raise CheckpointError(f"{target} does not match the published hash {spec.file_hash}; "
                                  f"delete it and {place}")
        return target
    try:
        path = keras.utils.get_file(spec.file_name, spec.url, cache_subdir="models",
                                    file_hash=spec.file_hash if spec.source == "keras" and spec.file_hash else None)
    except Exception as error:  # get_file raises plain Exception when offline
        reason = " ".join(str(error).split())[:160] or error.__class__.__name__
        raise CheckpointError(f"could not download {spec.model} weights ({reason}): is this machine offline? "
                              f"{place[0].upper()}{place[1:]}{_torch_hint(spec, target)}") from None
    if not _hash_ok(path, spec):
        os.remove(path)
        raise CheckpointError(f"{spec.url} downloaded but does not match the published hash {spec.file_hash}; {place}")
    return path


def _torch_hint(spec: CheckpointSpec, target: str) -> str:
    """For a PyTorch pickle on a machine without PyTorch: how to get a file kcnn reads without it."""
    if not spec.file_name.endswith((".pth", ".pt")):
        return ""
    try:
        import importlib.util

        if importlib.util.find_spec("torch") is not None:
            return ""
    except (ImportError, ValueError):
        pass
    converted = os.path.splitext(spec.file_name)[0] + ".safetensors"
    return (f". It is a PyTorch .pth file and PyTorch is not installed here: on a machine with torch, convert it "
            f"with python -c \"import torch, safetensors.torch as st; st.save_file(torch.load('{spec.file_name}'), "
            f"'{converted}')\" and give the .safetensors file as the weights (or pip install torch)")


def _hash_ok(path: str, spec: CheckpointSpec) -> bool:
    if not spec.file_hash:
        return True
    # keras.applications' get_file takes a 64-digit hash as sha256 (RegNet's), else md5.
    digest = hashlib.md5() if spec.source == "keras" and len(spec.file_hash) != 64 else hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest().startswith(spec.file_hash)
