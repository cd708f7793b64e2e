"""Deep Compression for Keras 3 models (Han et al., 2016): pruning, trained quantisation, Huffman coding.

Backend-agnostic (keras, keras.ops and numpy). The steps, each usable alone::

    pruned = prune(model, "squeezenet_table1")            # masks as non-trainable weights
    pruned.fit(..., callbacks=[PruningCallback()])          # retrain; pruned weights stay zero
    model = strip_pruning(pruned)
    codes = quantise(model, bits=6)                         # k-means weight sharing; or {"conv": 8, "fc": 5}
    finetune_centroids(model, codes, batches, optimizer=centroid_optimizer(60))  # codes fixed, centroids trained
    report = write_artefact(model, codes, "model.kcnn.zip") # sparse + Huffman; per-layer sizes
    restored = load_artefact("model.kcnn.zip")              # a normal Keras model
    served = fold_batch_norm(model)                         # inference: BN folded into the convolutions
"""

from kcnn.compress.artefact import encode_model, load_artefact, size_report, write_artefact
from kcnn.compress.folding import fold_batch_norm, foldable_pairs
from kcnn.compress.pruning import (MaskedConv2D, MaskedDense, PolynomialDensity, PruningCallback, apply_masks,
                                   density_report, kernel_variable, magnitude_mask, prune, resolve_densities,
                                   strip_pruning)
from kcnn.compress.quantize import (LayerCode, centroid_optimizer, finetune_centroids, kmeans_linear, quantise,
                                    resolve_bits)
from kcnn.compress.tables import TABLE_BITS, TABLES

__all__ = [
    "LayerCode", "MaskedConv2D", "MaskedDense", "PolynomialDensity", "PruningCallback", "TABLES", "TABLE_BITS",
    "apply_masks", "centroid_optimizer", "density_report", "encode_model", "finetune_centroids", "fold_batch_norm",
    "foldable_pairs", "kernel_variable",
    "kmeans_linear", "load_artefact", "magnitude_mask", "prune", "quantise", "resolve_bits", "resolve_densities",
    "size_report", "strip_pruning", "write_artefact",
]
