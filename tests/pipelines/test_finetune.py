"""Fine-tuning: weights from a previous run, frozen backbone (BatchNorm statistics included), the two-stage rate,
discriminative rates, and resuming across the stage boundary."""

from __future__ import annotations

import csv
import os

import keras
import numpy as np
import pytest

import kcnn
from pipelines import config as C
from pipelines import finetune
from pipelines.data import DataSpec
from pipelines.preprocess import normalize
from pipelines.run_dir import RunDir
from pipelines.train import train

BASE = {"data": {"source": "digits", "image_size": 32, "channels": 1, "batch_size": 16},
        "model": {"name": "mobilenet_v1", "backbone_kwargs": {"width": 0.25}},
        "optimizer": {"name": "sgd", "learning_rate": 0.1, "schedule": "constant"},
        "train": {"epochs": 1, "steps_per_epoch": 3}}


def config(**sections):
    raw = {k: dict(v) for k, v in BASE.items()}
    for section, values in sections.items():
        raw[section] = {**raw[section], **values}
    return C.from_dict(raw)


def weights_by_layer(run_dir):
    model = keras.saving.load_model(os.path.join(run_dir, "model.keras"), safe_mode=True)
    return {layer.name: [np.array(w) for w in layer.get_weights()] for layer in model.layers if layer.weights}


def learning_rates(run_dir):
    with open(os.path.join(run_dir, "history.csv"), newline="") as handle:
        return [float(row["learning_rate"]) for row in csv.DictReader(handle)]


def test_freeze_names_layers_and_bn_stays_frozen_after_unfreezing():
    model = kcnn.build("mobilenet_v1", num_classes=3, input_shape=(32, 32, 1), backbone_kwargs={"width": 0.25})
    cfg = config(model={"freeze": "backbone"}, train={"epochs": 3, "unfreeze_at_epoch": 2})
    finetune.apply_stage(model, cfg, 0)
    assert [w.path for w in model.trainable_weights] == ["logits/kernel", "logits/bias"]
    finetune.apply_stage(model, cfg, 2)
    assert model.get_layer("conv_ds_3_pw_conv").trainable and not model.get_layer("conv_ds_3_pw_bn").trainable
    upto = config(model={"freeze": "conv_ds_2_pw_act"})
    finetune.apply_stage(model, upto, 0)
    assert not model.get_layer("conv_ds_2_pw_conv").trainable and model.get_layer("conv_ds_3_dw_conv").trainable
    with pytest.raises(finetune.FineTuneError, match=r"no layer 'conv_ds_2_pw_ac'\. Did you mean 'conv_ds_2_pw_act'\?"):
        finetune.apply_stage(model, config(model={"freeze": "conv_ds_2_pw_ac"}), 0)


def test_two_stage_rate_switches_at_the_boundary():
    cfg = config(optimizer={"learning_rate": 0.1}, train={"epochs": 4, "unfreeze_at_epoch": 2,
                                                          "unfreeze_learning_rate": 0.01})
    optimizer = finetune.make_stage_optimizer(cfg, steps_per_epoch=5, epochs=4, global_batch=16)
    rates = []
    for step in (0, 9, 10, 19):
        optimizer.iterations.assign(step)
        rates.append(float(optimizer.learning_rate))
    assert rates == pytest.approx([0.1, 0.1, 0.01, 0.01])
    restored = keras.optimizers.schedules.deserialize(optimizer.get_config()["learning_rate"])
    assert isinstance(restored, finetune.TwoStageSchedule) and float(restored(10)) == pytest.approx(0.01)


def test_discriminative_rate_is_sgd_only():
    with pytest.raises(C.ConfigError, match=r"backbone_lr_multiplier scales gradients.*use optimizer\.name=sgd"):
        config(optimizer={"name": "adamw", "backbone_lr_multiplier": 0.1})
    model = kcnn.build("lenet5", num_classes=3)
    scales = finetune.gradient_scales(model, config(optimizer={"backbone_lr_multiplier": 0.1}), model.trainable_weights)
    assert scales == [0.1] * 6 + [1.0] * 4  # c1, c3, c5 at a tenth; fc1 and logits at the head's rate


@pytest.mark.slow
def test_frozen_backbone_from_a_run_then_unfrozen_and_resumed(tmp_path):
    pretrain = str(tmp_path / "pretrain")
    train(config(data={"mean": [0.2], "std": [0.4]}), pretrain, verbose=False)
    before = weights_by_layer(pretrain)

    # A 3-step pretraining leaves BN statistics near their initial values, so clip stage two's updates.
    two_stage = config(model={"weights": pretrain, "freeze": "backbone"}, optimizer={"clip_norm": 1.0},
                       train={"epochs": 3, "unfreeze_at_epoch": 2, "unfreeze_learning_rate": 0.001})
    run_dir = str(tmp_path / "two_stage")

    class StopAtBoundary(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(two_stage, run_dir, callbacks=[StopAtBoundary()], verbose=False)
    # history.csv logs the rate of the next step: stage two's from the end of epoch 2 on.
    assert learning_rates(run_dir) == pytest.approx([0.1, 0.001])
    os.replace(os.path.join(run_dir, "best.keras"), str(tmp_path / "stage_one.keras"))
    stage_one = keras.saving.load_model(str(tmp_path / "stage_one.keras"), safe_mode=True)
    for layer in stage_one.layers:
        if layer.weights:
            same = all(np.array_equal(a, b) for a, b in zip(layer.get_weights(), before[layer.name]))
            assert same == (layer.name != "logits"), layer.name  # BN moving statistics included

    train(two_stage, run_dir, verbose=False)  # resumes at the boundary, in stage two
    assert learning_rates(run_dir) == pytest.approx([0.1, 0.001, 0.001])
    resumed = weights_by_layer(run_dir)
    assert not np.array_equal(resumed["conv_ds_5_pw_conv"][0], before["conv_ds_5_pw_conv"][0])
    for name in ("conv1_bn", "conv_ds_5_pw_bn"):
        assert all(np.array_equal(a, b) for a, b in zip(resumed[name], before[name]))
    # data.mean/std left null: the fine-tuned run normalises (and so exports) as the run it started from.
    assert RunDir(run_dir).preprocessing() == RunDir(pretrain).preprocessing()
    assert RunDir(run_dir).preprocessing().mean == (0.2,)


@pytest.mark.parametrize("mode", ["CAFFE", "TF", "TORCH", "TORCH_TF", "KERAS_TORCH"])
def test_pipelines_normalise_exactly_as_each_checkpoint_expects(mode):
    """The [0, 1]-pixel form (``unit_range``) the pipelines and the serving graph use equals the checkpoint's own
    normalisation of 0-255 pixels (keras.applications.imagenet_utils' caffe/tf/torch modes)."""
    import importlib

    import tensorflow as tf

    from pipelines.preprocess import Preprocessing

    checkpoint = getattr(importlib.import_module("kcnn.weights.preprocessing"), mode)  # the module, not the function
    pixels = np.random.default_rng(0).integers(0, 256, (2, 5, 5, 3)).astype(np.float32)
    unit = checkpoint.unit_range()
    spec = Preprocessing(5, 3, unit["crop_fraction"], unit["mean"], unit["std"], unit["channel_order"])
    ours = normalize(tf.constant(pixels / 255.0), spec).numpy()
    np.testing.assert_allclose(ours, np.asarray(checkpoint.normalize(pixels)), rtol=1e-5, atol=1e-4)


def test_null_normalisation_follows_the_pretrained_weights(tmp_path):
    """data.mean/std/crop_fraction left null take model.weights' values; set ones win; no weights: 0.5/0.5/1."""
    def spec(data=None, model=None):
        cfg = config(data={"channels": 3, **(data or {})}, model=model or {})
        return DataSpec.from_config(cfg.data, model=cfg.model).preprocessing

    assert (spec().mean, spec().std, spec().crop_fraction, spec().channel_order) == ((0.5,), (0.5,), 1.0, "rgb")
    caffe = spec(model={"name": "resnet50", "weights": "imagenet"})  # keras.applications: caffe mode
    assert caffe.channel_order == "bgr" and caffe.std == (1 / 255,) and caffe.crop_fraction == 1.0
    assert caffe.mean == pytest.approx((103.939 / 255, 116.779 / 255, 123.68 / 255))
    checkpoint = tmp_path / "resnet18.safetensors"
    checkpoint.write_bytes(b"")  # only its name is read here: a .safetensors file is a torchvision checkpoint
    torch_like = spec(model={"name": "resnet18", "weights": str(checkpoint)})
    assert (torch_like.mean, torch_like.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert torch_like.crop_fraction == 0.875 and torch_like.channel_order == "rgb"
    chosen = spec(data={"mean": [0.1, 0.2, 0.3], "crop_fraction": 1.0}, model={"name": "resnet18",
                                                                                "weights": str(checkpoint)})
    assert (chosen.mean, chosen.std, chosen.crop_fraction) == ((0.1, 0.2, 0.3), (0.229, 0.224, 0.225), 1.0)
    with pytest.raises(finetune.FineTuneError, match="has no preprocessing.json; point it at a finished run"):
        spec(model={"weights": str(tmp_path)})
    # A grey recipe with RGB weights: the fix is named (it said "mean needs 1 or 1 values (one per channel)").
    with pytest.raises(ValueError, match=r"^mean \(0\.485, 0\.456, 0\.406\) has one value per RGB channel but the "
                                         r"images are grey \(channels 1\); set data\.channels=3"):
        spec(data={"channels": 1}, model={"name": "resnet18", "weights": str(checkpoint)})
