"""The compressed artefact: write a shared-weight model in Deep Compression's format, read it back.

``write_artefact(model, codes, path)`` stores one zip file (``.kcnn.zip``): ``manifest.json``
(deflated: the Keras model config, and per layer where each weight lives and how it is coded)
and, stored without zip compression so the file size shows the real figure, per coded kernel
its Huffman-coded relative-index and weight-code streams and its codebook, per other weight
(biases, batch norm) its float32 bytes. ``load_artefact(path)`` restores a normal Keras model
whose weights equal the quantised model's bit for bit. ``size_report`` gives the per-layer
accounting of Han et al. (2016).
"""

from __future__ import annotations

import json
import os
import zipfile

import keras
import numpy as np
from keras import ops

from kcnn.compress import sparse
from kcnn.compress.quantize import LayerCode, resolve_bits
from kcnn.files import staged_path

FORMAT = "kcnn-deep-compression"
FORMAT_VERSION = 1
INDEX_BITS = 8  # relative-index width of a coded layer that ``index_bits`` leaves out


def encode_model(model, codes: dict[str, LayerCode], index_bits: int | dict = INDEX_BITS
                 ) -> dict[str, sparse.EncodedKernel]:
    """Sparse + Huffman encoding of every coded kernel of ``model``.

    ``index_bits`` is one relative-index width or a mapping as ``quantize.resolve_bits`` reads it,
    e.g. ``{"conv": 8, "fc": 5}``; coded layers it leaves out take ``INDEX_BITS``.
    """
    widths = resolve_bits(model, index_bits, what="index bits")
    return {name: sparse.encode_kernel(code.index, code.bits, widths.get(name, INDEX_BITS))
            for name, code in codes.items()}


def size_report(model, codes: dict[str, LayerCode], encoded: dict[str, sparse.EncodedKernel]) -> dict:
    """Per coded layer and in total: parameters, non-zeros, bits, bytes before and after Huffman.

    Bytes before Huffman: each stored entry at ``index_bits + bits``; after: the Huffman streams
    and their code-length tables. Both add the codebook (float32, code 0 not stored) and the
    layer's other weights (biases) at float32. ``dense_bytes`` is the whole model at float32;
    ``total_bytes`` adds every uncoded weight (e.g. batch norm) at float32 to the coded layers.
    """
    rows = []
    uncoded_bits = 0
    dense_params = 0
    for layer in model.layers:
        params = sum(int(np.prod(v.shape)) for v in layer.weights)
        dense_params += params
        if layer.name not in codes:
            uncoded_bits += params * sparse.FLOAT_BITS
            continue
        code, enc = codes[layer.name], encoded[layer.name]
        kernel = int(code.index.size)
        other = params - kernel
        extra = enc.codebook_bits + other * sparse.FLOAT_BITS
        nonzero = int(np.count_nonzero(code.index))
        rows.append({"layer": layer.name, "params": params, "params_after": nonzero + other,
                     "density": nonzero / kernel, "bits": code.bits, "index_bits": enc.index_bits,
                     "entries": enc.entries, "fillers": enc.fillers,
                     "bytes_before_huffman": (enc.raw_bits + extra + 7) // 8,
                     "bytes_after_huffman": (enc.huffman_bits + enc.table_bits + extra + 7) // 8})
    coded_after = sum(r["bytes_after_huffman"] for r in rows)
    total = coded_after + (uncoded_bits + 7) // 8
    return {"layers": rows, "params": dense_params,
            "params_after": sum(r["params_after"] for r in rows) + uncoded_bits // sparse.FLOAT_BITS,
            "dense_bytes": dense_params * 4,
            "bytes_before_huffman": sum(r["bytes_before_huffman"] for r in rows) + (uncoded_bits + 7) // 8,
            "total_bytes": total, "compression": dense_params * 4 / max(total, 1)}


def write_artefact(model, codes: dict[str, LayerCode], path: str, *, index_bits: int | dict = INDEX_BITS,
                   encoded: dict | None = None) -> dict:
    """Write the artefact atomically; returns the ``size_report`` plus ``file_bytes``.

    Each coded layer keeps its own weight width (its ``LayerCode.bits``) and relative-index width
    (``index_bits``: one width or a per-layer mapping, see ``encode_model``); both are in the manifest.
    """
    encoded = encoded or encode_model(model, codes, index_bits)
    layers = []
    members = {}
    for layer in model.layers:
        entries = []
        for i, variable in enumerate(layer.weights):
            key = f"{layer.name}/{i}"
            is_kernel = layer.name in codes and variable.name == "kernel"
            if is_kernel:
                enc = encoded[layer.name]
                members[f"{key}.gaps"] = enc.gap_stream
                members[f"{key}.codes"] = enc.code_stream
                members[f"{key}.codebook"] = codes[layer.name].codebook[1:].astype("<f4").tobytes()
                entries.append({"name": variable.name, "coded": {
                    "shape": list(enc.shape), "bits": enc.bits, "index_bits": enc.index_bits,
                    "entries": enc.entries, "gap_lengths": enc.gap_lengths.tolist(),
                    "code_lengths": enc.code_lengths.tolist()}})
            else:
                value = ops.convert_to_numpy(variable).astype("<f4")
                members[f"{key}.f32"] = value.tobytes()
                entries.append({"name": variable.name, "shape": list(value.shape)})
        layers.append({"name": layer.name, "weights": entries})
    manifest = {"format": FORMAT, "version": FORMAT_VERSION, "keras_version": keras.__version__,
                "model": json.loads(model.to_json()), "layers": layers}
    with staged_path(path) as temporary, zipfile.ZipFile(temporary, "w") as archive:
        archive.writestr("manifest.json", json.dumps(manifest), compress_type=zipfile.ZIP_DEFLATED)
        for name, data in members.items():
            archive.writestr(name, data, compress_type=zipfile.ZIP_STORED)
    report = size_report(model, codes, encoded)
    report["file_bytes"] = os.path.getsize(path)
    return report


def load_artefact(path: str):
    """The Keras model stored in an artefact, its kernels rebuilt as ``codebook[index]``."""
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
            raise ValueError(f"{path} is not a {FORMAT} v{FORMAT_VERSION} artefact; write one with `kcnn compress`")
        model = keras.models.model_from_json(json.dumps(manifest["model"]))
        by_name = {layer.name: layer for layer in model.layers}
        for entry in manifest["layers"]:
            values = []
            for i, weight in enumerate(entry["weights"]):
                key = f"{entry['name']}/{i}"
                if "coded" in weight:
                    info = weight["coded"]
                    enc = sparse.EncodedKernel(tuple(info["shape"]), info["bits"], info["index_bits"],
                                               info["entries"], 0, np.asarray(info["gap_lengths"]),
                                               np.asarray(info["code_lengths"]), archive.read(f"{key}.gaps"),
                                               archive.read(f"{key}.codes"))
                    codebook = np.concatenate([[0.0], np.frombuffer(archive.read(f"{key}.codebook"), "<f4")])
                    values.append(codebook.astype(np.float32)[sparse.decode_kernel(enc)])
                else:
                    values.append(np.frombuffer(archive.read(f"{key}.f32"), "<f4").reshape(weight["shape"]))
            by_name[entry["name"]].set_weights(values)
    return model
