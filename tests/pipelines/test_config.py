"""Training configs: YAML loading, overrides, and errors that name the key and the fix."""

from __future__ import annotations

import glob
import os

import pytest

from pipelines import config as C

CONFIG_DIR = os.path.join(os.path.dirname(C.__file__), "configs")


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(CONFIG_DIR, "*.yaml"))))
def test_every_shipped_recipe_loads_and_round_trips_through_yaml(path, tmp_path):
    if os.path.basename(path).startswith("style_"):  # `kcnn train-style` recipes: pipelines.style's own sections
        from pipelines.style import load_style_config

        config = load_style_config(path)
        copy = tmp_path / "copy.yaml"
        copy.write_text(config.to_yaml())
        assert load_style_config(str(copy)) == config
        return
    config = C.load(path)
    import yaml

    assert C.from_dict(yaml.safe_load(config.to_yaml())) == config


def test_recipe_values_and_overrides():
    config = C.load(os.path.join(CONFIG_DIR, "digits.yaml"), ["train.epochs=3", "optimizer.learning_rate=1",
                                                              "data.mean=[0.1, 0.2, 0.3]", "train.jit_compile=true"])
    assert config.data.source == "digits" and config.model.head == "fully_conv"
    assert config.train.epochs == 3
    assert config.optimizer.learning_rate == 1.0 and isinstance(config.optimizer.learning_rate, float)
    assert config.data.mean == (0.1, 0.2, 0.3)
    assert config.train.jit_compile == "true"
    imagenet = C.load(os.path.join(CONFIG_DIR, "imagenet_resnet50.yaml"))
    assert imagenet.optimizer.step_epochs == (30, 60, 80) and imagenet.train.strategy == "mirrored"


@pytest.mark.parametrize("raw, overrides, message", [
    ({"train": {"epoch": 3}}, [],
     "unknown key in section 'train' 'epoch'. Did you mean 'epochs'? Valid: epochs, seed, precision"),
    ({"optimiser": {}}, [],
     "unknown section 'optimiser'. Did you mean 'optimizer'? Valid: data, model, optimizer, train"),
    ({}, ["data.batchsize=3"], "Did you mean 'batch_size'?"),
    ({}, ["train.epochs"], "override 'train.epochs' must look like section.key=value, e.g. train.epochs=5"),
    ({"train": {"epochs": "ten"}}, [], "train.epochs must be of type int, got 'ten' (str)"),
    ({"train": {"epochs": 0}}, [], "train.epochs must be >= 1, got 0"),
    ({"optimizer": {"momentum": 1.5}}, [], "optimizer.momentum must be in [0, 1], got 1.5"),
    ({"optimizer": {"name": "adam"}}, [], "optimizer.name must be one of sgd, adamw, rmsprop, got 'adam'"),
    ({"train": {"precision": "float16"}}, [],
     "train.precision must be one of auto, float32, mixed_float16, mixed_bfloat16, got 'float16'"),
    ({"optimizer": {"schedule": "step"}}, [], "optimizer.step_epochs must list the epochs where the rate drops"),
    ({"model": {"name": "resnet"}}, [], "unknown backbone 'resnet'"),
    ({"data": {"augment": "randaugment"}}, [], "data.augment must be one of none, cifar, alexnet, inception, strong"),
])
def test_bad_keys_and_values_are_errors_before_any_work(raw, overrides, message):
    with pytest.raises(ValueError) as error:
        C.from_dict(raw, overrides)
    assert message in str(error.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(C.ConfigError, match="does not exist"):
        C.load(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [1, 2\n")
    with pytest.raises(C.ConfigError, match="is not valid YAML"):
        C.load(str(bad))


def test_the_config_reference_is_generated_from_the_dataclasses_and_current():
    import dataclasses

    from pipelines import config_docs

    with open(config_docs.DOC_PATH) as handle:
        assert handle.read() == config_docs.render(), "run `python -m pipelines.config_docs` to regenerate"
    text = config_docs.render()
    for section in C.SECTIONS:
        for item in dataclasses.fields(C._section_class(section)):
            assert item.metadata.get("help"), f"{section}.{item.name} has no description"
            assert f"| `{item.name}` |" in text
    assert "| `label_smoothing` | number | `0.0` | e in targets (1 - e) y + e / K of the cross-entropy |" in text
    assert "| `mix` | string or null | `null` |" in text and "| `step_epochs` | list of integer | `[]` |" in text


def test_license_file_is_the_apache_license_pyproject_declares():
    root = os.path.dirname(os.path.dirname(os.path.abspath(C.__file__)))
    with open(os.path.join(root, "pyproject.toml")) as handle:
        assert 'license = { text = "Apache-2.0" }' in handle.read()
    with open(os.path.join(root, "LICENSE")) as handle:
        text = handle.read()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
