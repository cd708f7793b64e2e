"""`kcnn visualize`: every method writes its PNGs for a saved model or a run directory; user errors are one line."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
from PIL import Image

from kcnn.cli import main
from kcnn.insight_cli import METHODS


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small CNN saved as .keras, a run-directory look-alike holding it, and two image files."""
    root = tmp_path_factory.mktemp("visualize")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inputs)
    x = keras.layers.MaxPooling2D(name="p1")(x)
    x = keras.layers.Conv2D(6, 3, activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="predictions")(x))
    model_path = str(root / "model.keras")
    model.save(model_path)
    run_dir = root / "run"
    run_dir.mkdir()
    model.save(str(run_dir / "model.keras"))
    (run_dir / "preprocessing.json").write_text(json.dumps(
        {"image_size": 16, "channels": 3, "crop_fraction": 1.0, "mean": [0.5], "std": [0.5]}))
    (run_dir / "class_names.json").write_text(json.dumps(["circle", "square", "triangle"]))
    rng = np.random.default_rng(0)
    images = []
    for name, size in (("wide", (40, 24)), ("small", (16, 16))):
        path = root / f"{name}.png"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        images.append(str(path))
    return model_path, str(run_dir), images


EXPECTED = {"filters": ["filters_c1.png"], "maximize": ["maximize_classes.png"],
            "activations": ["activations_c2_wide.png"], "deconvnet": ["deconvnet_c2.png"],
            "guided": ["guided_c2.png"], "smoothgrad": ["smoothgrad_wide.png"],
            "gradcam++": ["gradcampp_wide.png", "gradcampp_small.png"]}


@pytest.mark.parametrize("method", METHODS)
def test_every_method_writes_its_pictures(saved, tmp_path, capsys, method):
    model_path, run_dir, images = saved
    target = run_dir if method in ("gradcam", "maximize") else model_path
    out = tmp_path / "out"
    files = images if method in ("saliency", "gradcam", "gradcam++", "occlusion") else images[:1]  # the slow ones: one
    argv = ["visualize", target, "--method", method, "--out", str(out), "--images", *files]
    if method == "maximize":
        argv += ["--steps", "3", "--units", "0", "2"]
    assert main(argv) == 0
    expected = EXPECTED.get(method, [f"{method}_wide.png", f"{method}_small.png"])
    assert sorted(os.listdir(out)) == sorted(expected)
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if line.startswith("wrote ")] == [f"wrote {out / name}" for name in expected]
    if target == model_path:  # nothing beside the bare file: what was assumed is said, once each
        assert [line for line in lines if line.startswith("note: ")] == [
            f"note: no preprocessing.json beside {model_path}: pixels in [0, 1] are fed as they are (give --mean "
            "and --std if the model was trained on normalised inputs)",
            f"note: no class_names.json beside {model_path}: classes are shown by number"]
    if method in ("maximize", "deconvnet", "guided"):  # the long ones report each unit as it is done
        assert sum(line.startswith(f"{method}: ") for line in lines) == (2 if method == "maximize" else 4)
    for name in expected:
        with Image.open(out / name) as picture:
            assert picture.format == "PNG" and min(picture.size) >= 100


def test_user_errors_are_one_line(saved, tmp_path, capsys):
    model_path, run_dir, images = saved
    out = str(tmp_path / "out")
    assert main(["visualize", model_path, "--method", "gradcam", "--out", out]) == 2
    assert capsys.readouterr().err.strip() == ("kcnn visualize: error: --method gradcam explains images: give one "
                                               "or more with --images FILE...")
    assert main(["visualize", model_path, "--method", "gradcam", "--layer", "c9", "--images", images[0],
                 "--out", out]) == 2
    assert capsys.readouterr().err.strip().startswith(
        "kcnn visualize: error: no layer named 'c9' in model 'functional")
    missing = str(tmp_path / "nothing.keras")
    assert main(["visualize", missing, "--method", "filters", "--out", out]) == 2
    assert capsys.readouterr().err.strip() == (f"kcnn visualize: error: {missing} is neither a run directory nor "
                                               "an existing .keras file")
    assert main(["visualize", model_path, "--method", "saliency", "--images", str(tmp_path), "--out", out]) == 2
    assert capsys.readouterr().err.strip() == (f"kcnn visualize: error: --images {tmp_path}: the directory holds no "
                                               "image files (.png, .jpg, .jpeg, .gif, .bmp, .webp)")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    assert main(["visualize", model_path, "--method", "saliency", "--images", str(text), "--out", out]) == 2
    assert capsys.readouterr().err.strip().startswith(f"kcnn visualize: error: cannot read image {text}")
    assert not os.path.exists(out)


def test_images_are_checked_before_the_model_loads(saved, tmp_path, capsys):
    _, _, images = saved
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"PK not a zip")  # loading it would fail: the missing image must be reported first
    missing = str(tmp_path / "nope.png")
    assert main(["visualize", str(broken), "--method", "gradcam", "--images", images[0], missing,
                 "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == f"kcnn visualize: error: --images {missing}: no such file"


def test_a_keras_file_uses_the_preprocessing_and_class_names_beside_it(saved, tmp_path, capsys):
    from kcnn.insight import render

    _, run_dir, images = saved
    beside = render.load_target(os.path.join(run_dir, "model.keras"))
    whole = render.load_target(run_dir)
    assert beside.class_names == whole.class_names == ["circle", "square", "triangle"]
    assert beside.mean.tolist() == whole.mean.tolist() == [0.5] and beside.std.tolist() == [0.5]
    assert beside.notes == []
    overridden = render.load_target(run_dir, mean=[0.25], std=[2.0])  # explicit flags win over the file
    assert overridden.mean.tolist() == [0.25] and overridden.std.tolist() == [2.0]
    out = tmp_path / "out"
    assert main(["visualize", os.path.join(run_dir, "model.keras"), "--method", "gradcam", "--images", images[1],
                 "--out", str(out)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"wrote {out / 'gradcam_small.png'}"]
