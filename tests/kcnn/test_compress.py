"""kcnn.compress: Deep Compression (Han et al., ICLR 2016) reproducing SqueezeNet's Table 1 and Han's Tables 4 and 5.

Sources of the pinned figures: Iandola et al., "SqueezeNet: AlexNet-level accuracy with 50x fewer
parameters and <0.5MB model size", arXiv:1602.07360, Table 1 ("#parameter before/after pruning",
per-module densities, 6-bit weights) and Table 2 (SqueezeNet + Deep Compression: 0.47MB); Han, Mao
and Dally, "Deep Compression: Compressing Deep Neural Networks with Pruning, Trained Quantization
and Huffman Coding", ICLR 2016 (arXiv:1510.00149), Table 4 (AlexNet) and Table 5 (VGG-16):
"#Weights" and "Weights% (P)" per layer and in total, 8-bit conv and 5-bit fc weights.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import kcnn
from kcnn import compress
from kcnn.compress import huffman, sparse
from kcnn.compress.tables import (HAN_ALEXNET_LAYERS, HAN_ALEXNET_TABLE4, HAN_ALEXNET_TABLE4_TOTAL, HAN_VGG16_LAYERS,
                                  HAN_VGG16_TABLE5, HAN_VGG16_TABLE5_TOTAL, SQUEEZENET_TABLE1_PARAMS,
                                  SQUEEZENET_TABLE1_TOTAL, squeezenet_module)

MEGABYTE = 2 ** 20  # Table 2's 4.8MB for 1,248,424 float32 weights is 4.76 MiB: the paper's MB is 2**20 bytes


@pytest.fixture(scope="module")
def squeezenet_compressed():
    model = kcnn.build("squeezenet1_0")
    pruned = compress.prune(model, "squeezenet_table1")
    stripped = compress.strip_pruning(pruned)
    codes = compress.quantise(stripped, bits=6)
    encoded = compress.encode_model(stripped, codes)
    return model, pruned, stripped, codes, encoded


def test_squeezenet_table1_nonzero_parameters_match_the_paper_per_module(squeezenet_compressed):
    model, pruned, *_ = squeezenet_compressed
    before, after = {}, {}
    for row in compress.density_report(pruned):
        module = squeezenet_module(row["layer"])
        before[module] = before.get(module, 0) + row["params"]
        after[module] = after.get(module, 0) + row["params_after"]
    assert set(after) == set(SQUEEZENET_TABLE1_PARAMS)
    for module, (paper_before, paper_after) in SQUEEZENET_TABLE1_PARAMS.items():
        assert before[module] == paper_before, module
        assert abs(after[module] - paper_after) <= 0.005 * paper_after, (module, after[module], paper_after)
    total = sum(after.values())
    assert sum(before.values()) == SQUEEZENET_TABLE1_TOTAL[0] == model.count_params()
    assert abs(total - SQUEEZENET_TABLE1_TOTAL[1]) <= 0.005 * SQUEEZENET_TABLE1_TOTAL[1]


def test_squeezenet_at_6_bits_is_under_half_a_megabyte(squeezenet_compressed):
    _, _, stripped, codes, encoded = squeezenet_compressed
    report = compress.size_report(stripped, codes, encoded)
    assert report["dense_bytes"] == 4 * 1_248_424
    assert report["total_bytes"] < 0.5 * MEGABYTE  # the paper: 0.47MB
    assert report["bytes_before_huffman"] > report["total_bytes"]  # Huffman coding saves space
    assert report["compression"] > 4.8 / 0.5
    conv10 = next(r for r in report["layers"] if r["layer"] == "conv_scores")
    assert conv10["params_after"] == 103_400 and conv10["bits"] == 6


def test_pruned_kernels_keep_the_largest_magnitudes_and_biases_are_untouched(squeezenet_compressed):
    model, pruned, *_ = squeezenet_compressed
    source = model.get_layer("fire9_expand3x3_conv")
    target = pruned.get_layer("fire9_expand3x3_conv")
    kernel = keras.ops.convert_to_numpy(source.kernel)
    kept = keras.ops.convert_to_numpy(target.kernel)
    assert np.count_nonzero(kept) == round(0.30 * kernel.size)
    assert np.abs(kernel[kept == 0]).max() <= np.abs(kernel[kept != 0]).min()
    np.testing.assert_array_equal(kept[kept != 0], kernel[kept != 0])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(target.bias), keras.ops.convert_to_numpy(source.bias))


def test_unknown_table_and_unmatched_pattern_are_clear_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match="unknown density table 'alexnet'; known tables: han_alexnet_table4, "
                                         "han_vgg16_table5, squeezenet_table1$"):
        compress.prune(model, "alexnet")
    with pytest.raises(ValueError, match=r"density pattern 'fire\*' matches no Conv2D or Dense layer"):
        compress.prune(model, {"fire*": 0.5})
    with pytest.raises(ValueError, match=r"density for 'conv' must be in \(0, 1\], got 0.0"):
        compress.prune(model, {"conv": 0})
    callback = compress.PruningCallback()
    callback.set_model(model)
    with pytest.raises(ValueError, match=r"PruningCallback needs a model from kcnn.compress.prune\(\)"):
        callback.on_train_begin()


def published(count: int, paper: int) -> bool:
    """``count`` as the paper prints it: 35K, 1M, 103M (its roundings are not all to nearest, e.g. 663,552 as 663K)."""
    unit = 1_000_000 if paper >= 1_000_000 else 1_000
    return abs(count - paper) < unit


def kernel_sizes(model) -> dict[str, int]:
    return {layer.name: int(np.prod(compress.kernel_variable(layer).shape)) for layer in model.layers
            if isinstance(layer, compress.pruning.PRUNABLE)}


def test_han_alexnet_table4_weights_and_pruned_density_match_the_paper():
    # Table 4 is the paper's two-tower AlexNet (conv2, conv4 and conv5 split over two GPUs): kcnn's groups=2.
    model = kcnn.build("alexnet", backbone_kwargs={"groups": 2})
    sizes = kernel_sizes(model)
    for row, (weights, _) in HAN_ALEXNET_TABLE4.items():
        assert published(sizes[HAN_ALEXNET_LAYERS[row]], weights), (row, sizes[HAN_ALEXNET_LAYERS[row]], weights)
    assert published(model.count_params(), HAN_ALEXNET_TABLE4_TOTAL[0]) and model.count_params() == 60_965_224
    report = compress.density_report(compress.prune(model, "han_alexnet_table4"))
    kept = {row["layer"]: row["nonzero_kernel"] for row in report}
    for row, (_, density) in HAN_ALEXNET_TABLE4.items():
        assert kept[HAN_ALEXNET_LAYERS[row]] == round(density * sizes[HAN_ALEXNET_LAYERS[row]])
    density = sum(kept.values()) / sum(sizes.values())
    assert round(density, 2) == HAN_ALEXNET_TABLE4_TOTAL[1] and round(1 / density) == 9  # "11% (9x)"


def test_han_vgg16_table5_weights_and_density_match_the_paper():
    model = kcnn.build("vgg16")
    sizes = kernel_sizes(model)
    for row, (weights, _) in HAN_VGG16_TABLE5.items():
        assert published(sizes[HAN_VGG16_LAYERS[row]], weights), (row, sizes[HAN_VGG16_LAYERS[row]], weights)
    assert published(model.count_params(), HAN_VGG16_TABLE5_TOTAL[0])
    # Pruning keeps round(density * size) weights of each layer (the AlexNet test prunes for real; VGG-16's 138M
    # weights take too long for a unit test). The per-layer percentages are published to the whole point and fc6
    # holds 74% of the weights, so the total is known only to about +-0.4 points: 7.61% against the printed 7.5%.
    densities = compress.resolve_densities(model, "han_vgg16_table5")
    assert set(densities) == set(sizes)
    density = sum(round(densities[name] * size) for name, size in sizes.items()) / sum(sizes.values())
    assert abs(density - HAN_VGG16_TABLE5_TOTAL[1]) < 0.005 and round(1 / density) == 13  # "7.5% (13x)"


def test_magnitude_mask_keeps_the_lowest_indices_among_equal_magnitudes():
    kernel = np.array([1.0, -2.0, 2.0, 0.5, -2.0, 2.0, 3.0], dtype="float32")
    assert compress.magnitude_mask(kernel, 3 / 7).tolist() == [0, 1, 1, 0, 0, 0, 1]
    assert compress.magnitude_mask(kernel, 1.0).tolist() == [1] * 7


def test_per_layer_bits_follow_the_conv_fc_rule_and_round_trip_through_the_artefact(tmp_path):
    images, _ = toy_data(8)
    model = compress.strip_pruning(compress.prune(tiny_model(), {"conv": 0.5, "dense": 0.5}))
    assert compress.resolve_bits(model, {"conv": 8, "fc": 5}) == {"conv": 8, "dense": 5}
    assert compress.resolve_bits(model, {"*": 4, "d*": 3}) == {"conv": 4, "dense": 3}  # the last match wins
    codes = compress.quantise(model, {"conv": 8, "fc": 5})
    assert {name: code.bits for name, code in codes.items()} == {"conv": 8, "dense": 5}
    assert len(np.unique(codes["dense"].kernel())) <= 2 ** 5  # 31 centroids and the zero
    path = str(tmp_path / "mixed.kcnn.zip")
    report = compress.write_artefact(model, codes, path, index_bits={"conv": 8, "fc": 2})
    assert [(r["layer"], r["bits"], r["index_bits"]) for r in report["layers"]] == [("conv", 8, 8), ("dense", 5, 2)]
    restored = compress.load_artefact(path)
    for a, b in zip(restored.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(restored.predict(images, verbose=0), model.predict(images, verbose=0))
    with pytest.raises(ValueError, match="bits key 'fc6' matches no Conv2D or Dense layer of .*keys: conv, fc"):
        compress.quantise(model, {"fc6": 5})
    with pytest.raises(ValueError, match="index bits for 'conv' must be an integer from 1 to 16, got 0"):
        compress.encode_model(model, codes, {"conv": 0})


def test_huffman_code_is_optimal_and_round_trips():
    assert huffman.code_lengths([1, 1, 2, 4]).tolist() == [3, 3, 2, 1]  # textbook example
    assert huffman.code_lengths([0, 7, 0]).tolist() == [0, 1, 0]
    rng = np.random.default_rng(0)
    for symbols in (rng.geometric(0.3, 20_000) - 1, rng.integers(0, 64, 5_000), np.full(9, 5), np.zeros(0, int)):
        symbols = np.minimum(symbols, 255)
        lengths = huffman.code_lengths(np.bincount(symbols, minlength=256))
        data = huffman.encode(symbols, lengths)
        assert len(data) == (huffman.encoded_bits(symbols, lengths) + 7) // 8
        np.testing.assert_array_equal(huffman.decode(data, lengths, symbols.size), symbols)
    counts = np.bincount(np.minimum(rng.geometric(0.3, 20_000) - 1, 255))
    probabilities = counts[counts > 0] / counts.sum()
    entropy = -(probabilities * np.log2(probabilities)).sum()
    lengths = huffman.code_lengths(counts)
    mean = (counts * lengths).sum() / counts.sum()
    assert entropy <= mean < entropy + 1  # Shannon's bound for an optimal prefix code


def test_relative_indices_insert_filler_zeros_when_a_gap_exceeds_the_index_width():
    # Han et al. 2016, Figure 2's scheme with a 3-bit index (gaps up to 8): non-zeros at 3 and 20.
    flat = np.zeros(24, dtype=np.int64)
    flat[3], flat[20] = 5, 7
    gaps, codes, fillers = sparse.relative_entries(flat, index_bits=3)
    assert gaps.tolist() == [4, 8, 8, 1] and codes.tolist() == [5, 0, 0, 7] and fillers == 2
    encoded = sparse.encode_kernel(flat.reshape(4, 6), bits=3, index_bits=3)
    assert encoded.entries == 4 and encoded.raw_bits == 4 * (3 + 3)
    np.testing.assert_array_equal(sparse.decode_kernel(encoded), flat.reshape(4, 6))


def test_kmeans_linear_initialisation_and_shared_kernel():
    centroids, assignment = compress.kmeans_linear(np.array([0.0, 1.0, 10.0, 11.0]), 2)
    np.testing.assert_allclose(centroids, [0.5, 10.5])
    assert assignment.tolist() == [0, 0, 1, 1]
    rng = np.random.default_rng(1)
    kernel = rng.standard_normal((3, 3, 4, 8)).astype("float32")
    kernel[rng.random(kernel.shape) < 0.6] = 0
    code = compress.quantize.quantise_kernel(kernel, bits=4)
    rebuilt = code.kernel()
    np.testing.assert_array_equal(rebuilt == 0, kernel == 0)  # pruned weights stay zero, code 0
    assert len(np.unique(rebuilt[rebuilt != 0])) <= 2 ** 4 - 1
    assert np.abs(rebuilt - kernel).max() < (kernel.max() - kernel.min()) / (2 ** 4 - 2)


def tiny_model(seed: int = 0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv",
                            kernel_regularizer=keras.regularizers.L2(1e-2))(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="dense")(x)
    return keras.Model(inputs, outputs)


def toy_data(count: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.random((count, 8, 8, 1), dtype=np.float32), rng.integers(0, 3, count)


def test_pruned_weights_stay_exactly_zero_through_training_and_resume(tmp_path):
    images, labels = toy_data()
    pruned = compress.prune(tiny_model(), {"conv": 0.25, "dense": 0.5})
    zeros = keras.ops.convert_to_numpy(pruned.get_layer("conv").kernel) == 0
    assert zeros.sum() == 72 - 18
    # Momentum and L2 decay move every weight each step unless the callback re-applies the mask.
    pruned.compile(keras.optimizers.SGD(0.1, momentum=0.9), "sparse_categorical_crossentropy")
    pruned.fit(images, labels, batch_size=16, epochs=2, verbose=0, callbacks=[compress.PruningCallback()])
    kernel_var = compress.kernel_variable(pruned.get_layer("conv"))
    after = keras.ops.convert_to_numpy(kernel_var)
    assert np.all(after[zeros] == 0) and np.all(after[~zeros] != 0)
    path = str(tmp_path / "pruned.keras")
    pruned.save(path)
    resumed = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(resumed.get_layer("conv"), compress.MaskedConv2D)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(resumed.get_layer("conv").kernel_mask), ~zeros)
    resumed.compile(keras.optimizers.SGD(0.1, momentum=0.9), "sparse_categorical_crossentropy")
    resumed.fit(images, labels, batch_size=16, epochs=1, verbose=0, callbacks=[compress.PruningCallback()])
    again = keras.ops.convert_to_numpy(compress.kernel_variable(resumed.get_layer("conv")))
    assert np.all(again[zeros] == 0) and not np.array_equal(again, after)
    stripped = compress.strip_pruning(resumed)
    assert type(stripped.get_layer("conv")) is keras.layers.Conv2D
    np.testing.assert_array_equal(stripped.predict(images, verbose=0), resumed.predict(images, verbose=0))


def test_polynomial_schedule_follows_zhu_and_gupta_and_reaches_the_target():
    schedule = compress.PolynomialDensity(begin_step=0, end_step=8, frequency=2)
    assert schedule.density(0, 0.2) == 1.0
    assert schedule.density(4, 0.2) == pytest.approx(0.2 + 0.8 * 0.5 ** 3)
    assert schedule.density(8, 0.2) == schedule.density(100, 0.2) == pytest.approx(0.2)
    images, labels = toy_data()
    pruned = compress.prune(tiny_model(), {"conv": 0.25}, one_shot=False)
    assert np.all(keras.ops.convert_to_numpy(pruned.get_layer("conv").kernel_mask) == 1)
    pruned.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
    pruned.fit(images, labels, batch_size=16, epochs=2, verbose=0,
               callbacks=[compress.PruningCallback(schedule)])  # 4 steps an epoch: the schedule ends at step 8
    assert np.count_nonzero(keras.ops.convert_to_numpy(pruned.get_layer("conv").kernel)) == 18


def test_centroid_gradient_is_the_sum_of_its_weights_gradients():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", use_bias=False, name="dense")(inputs))
    codes = compress.quantise(model, bits=2)
    x = np.random.default_rng(0).standard_normal((5, 4)).astype("float32")
    y = np.array([0, 1, 2, 1, 0])
    kernel = codes["dense"].kernel()
    logits = x @ kernel
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad = x.T @ (p - np.eye(3)[y]) / len(y)  # d(mean cross-entropy)/d(kernel) for a softmax layer
    expected = codes["dense"].codebook - 0.5 * np.bincount(codes["dense"].index.ravel(), grad.ravel(), minlength=4)
    expected[0] = 0.0
    compress.finetune_centroids(model, codes, [(x, y)], learning_rate=0.5, momentum=0.0)
    np.testing.assert_allclose(codes["dense"].codebook, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.get_layer("dense").kernel), codes["dense"].kernel())


def test_centroid_optimizer_fine_tunes_the_codebooks_and_keeps_the_codes():
    images, labels = toy_data(64)
    model = compress.strip_pruning(compress.prune(tiny_model(), {"conv": 0.5}))
    codes = compress.quantise(model, {"conv": 3, "fc": 3})
    index = {name: code.index.copy() for name, code in codes.items()}
    batches = [(images[i:i + 16], labels[i:i + 16]) for i in range(0, 64, 16)] * 10
    losses = compress.finetune_centroids(model, codes, batches, optimizer=compress.centroid_optimizer(40, 0.05))
    assert np.mean(losses[-4:]) < np.mean(losses[:4])  # 40 steps of Adam on 14 centroids fit the toy labels better
    for name, code in codes.items():
        np.testing.assert_array_equal(code.index, index[name])
        assert code.codebook[0] == 0.0
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(compress.kernel_variable(model.get_layer(name))),
                                      code.kernel())
    with pytest.raises(ValueError, match="steps must be at least 1"):
        compress.centroid_optimizer(0)


def test_decoder_restores_a_model_whose_outputs_equal_the_quantised_model(tmp_path):
    images, _ = toy_data(8)
    model = compress.strip_pruning(compress.prune(tiny_model(), {"conv": 0.3, "dense": 0.5}))
    codes = compress.quantise(model, bits=4)
    path = str(tmp_path / "tiny.kcnn.zip")
    report = compress.write_artefact(model, codes, path, index_bits=2)
    restored = compress.load_artefact(path)
    np.testing.assert_array_equal(restored.predict(images, verbose=0), model.predict(images, verbose=0))
    for a, b in zip(restored.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert report["file_bytes"] > report["total_bytes"] and report["params_after"] == 22 + 8 + 12 + 3
    bad = tmp_path / "bad.zip"
    import zipfile
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("manifest.json", '{"format": "other"}')
    with pytest.raises(ValueError, match="is not a kcnn-deep-compression v1 artefact"):
        compress.load_artefact(str(bad))
