"""kcnn train prunes while training from the config (train.prune_*), and pruned weights stay exactly zero."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_run import TINY

from kcnn import compress
from kcnn.compress.pruning import masked_layers
from pipelines import config as C
from pipelines.train import train


def tiny(*overrides):
    return C.from_dict({k: dict(v) for k, v in TINY.items()}, ["train.epochs=2", "train.steps_per_epoch=3",
                                                                *overrides])


def densities(model) -> dict:
    return {layer.name: float(np.mean(np.asarray(compress.kernel_variable(layer)) != 0))
            for layer in masked_layers(model)}


@pytest.mark.slow
@pytest.mark.parametrize("gradual", [False, True])
def test_training_prunes_to_the_density_and_keeps_the_zeros(tmp_path, gradual):
    overrides = ["train.prune_density=0.25"] + (["train.prune_end_epoch=2"] if gradual else [])
    run_dir = str(tmp_path / "run")
    train(tiny(*overrides), run_dir, verbose=False)
    import keras

    model = keras.saving.load_model(f"{run_dir}/model.keras", safe_mode=True)
    found = densities(model)
    assert set(found) == {layer.name for layer in model.layers if type(layer).__name__ in ("MaskedConv2D",
                                                                                             "MaskedDense")}
    for name, density in found.items():  # magnitude pruning keeps round(0.25 * n) weights of each layer
        assert density == pytest.approx(0.25, abs=0.02), (name, density)
        layer = model.get_layer(name)
        kernel, mask = np.asarray(compress.kernel_variable(layer)), np.asarray(layer.kernel_mask)
        assert np.all(kernel[mask == 0] == 0)  # exactly zero after the last step, not merely small


def test_pruning_keys_are_checked():
    assert C.from_dict({"train": {"prune_table": "squeezenet_table1"}}).train.prune_table == "squeezenet_table1"
    with pytest.raises(C.ConfigError, match="prune_table must be one of han_alexnet_table4, han_vgg16_table5, squeezenet_table1"):
        C.from_dict({"train": {"prune_table": "alexnet_table"}})
    with pytest.raises(C.ConfigError, match="both set"):
        C.from_dict({"train": {"prune_table": "squeezenet_table1", "prune_density": 0.5}})
    with pytest.raises(C.ConfigError, match=r"prune_density must be in \(0, 1\]"):
        C.from_dict({"train": {"prune_density": 0.0}})
    with pytest.raises(C.ConfigError, match="prune_end_epoch must be between 1 and train.epochs"):
        C.from_dict({"train": {"prune_density": 0.5, "epochs": 3, "prune_end_epoch": 4}})
