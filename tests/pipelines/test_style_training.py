"""The fast-stylizer recipe: config checks, training from the YAML, export and `kcnn stylize`."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from PIL import Image

from kcnn import cli
from pipelines.config import ConfigError
from pipelines.style import load_style_config, train_style

RECIPE = os.path.join(os.path.dirname(__file__), "..", "..", "pipelines", "configs", "style_fast.yaml")
TINY = ["train.steps=12", "data.image_size=32", "data.batch_size=2", "train.residual_blocks=1",
        "loss.style_size=48"]


def test_recipe_loads_and_misspelt_keys_name_the_closest():
    config = load_style_config(RECIPE)
    assert config.data.source == "photos" and config.loss.style_image == "flower"
    with pytest.raises(ConfigError, match="Did you mean 'style_weight'"):
        load_style_config(RECIPE, ["loss.style_weigth=3"])
    with pytest.raises(ConfigError, match="multiple of 4"):
        load_style_config(RECIPE, ["data.image_size=30"])


def test_a_bad_source_fails_before_the_run_directory_exists(tmp_path):
    config = load_style_config(RECIPE, TINY + ["data.source=nope"])
    with pytest.raises(ValueError, match="unknown source 'nope'"):
        train_style(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_train_export_and_stylize_from_the_command_line(tmp_path, capsys):
    run = str(tmp_path / "run")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        heard = []
        result = train_style(load_style_config(RECIPE, TINY), run, progress=lambda *step: heard.append(step))
    assert result["steps"] == 12 and result["last_loss"] < result["first_loss"]
    assert [(done, total) for done, total, _ in heard] == [(step, 12) for step in range(1, 13)]
    assert heard[0][2] == pytest.approx(result["first_loss"]) and heard[-1][2] == pytest.approx(result["last_loss"])
    assert sorted(os.listdir(run)) == ["config.yaml", "history.csv", "preview.png", "style.png", "stylizer.keras"]
    with pytest.raises(FileExistsError, match="already holds a trained stylizer"):
        train_style(load_style_config(RECIPE, TINY), run)
    # The commands as `kcnn` runs them (kcnn.cli.main, in this process: each subprocess cost a TensorFlow start).
    out = tmp_path / "fast.png"
    assert cli.main(["stylize", "china", "--method", "fast", "--model", run, "--size", "40", "--out", str(out)]) == 0
    assert Image.open(out).size == (40, 27)  # china.jpg is 640x427
    models = tmp_path / "models"
    capsys.readouterr()
    assert cli.main(["export", run, "--base-path", str(models)]) == 0
    assert "stylized_png_bytes" in capsys.readouterr().out and (models / "1" / "saved_model.pb").exists()
    assert cli.main(["stylize", "china", "--method", "gatys", "--out", str(out)]) == 2
    assert "needs a STYLE image" in capsys.readouterr().err
    assert np.asarray(Image.open(tmp_path / "run" / "preview.png")).shape == (32, 64, 3)
