"""The kcnn command line: help, summary in every format, saved models, and user errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import kcnn
from kcnn import cli


def test_help_lists_every_subcommand():
    result = subprocess.run([sys.executable, "-m", "kcnn.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    subcommands = cli.build_parser()._subparsers._group_actions[0].choices
    for name in subcommands:
        assert name in result.stdout
    assert "summary" in subcommands


def test_summary_json_for_squeezenet(capsys):
    assert cli.main(["summary", "squeezenet1_0", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == "squeezenet1_0"
    assert data["input_shape"] == [227, 227, 3]
    assert data["total_params"] == 1_248_424
    assert data["layers"][0]["output_shape"] == [111, 111, 96]


def test_summary_options_and_saved_model(capsys, tmp_path):
    assert cli.main(["summary", "mobilenet_v1", "--head", "fully_conv", "--input-size", "96", "--classes", "10",
                     "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("name,type,kernel")
    assert any(line.startswith("conv_scores,Conv2D") for line in lines)
    path = tmp_path / "m.keras"
    kcnn.build("squeezenet1_1", num_classes=3, input_shape=(None, None, 3)).save(path)
    assert cli.main(["summary", "--model", str(path), "--input-size", "64", "--format", "markdown"]) == 0
    assert "| fire9_concat | Concatenate | 3x3x512 |" in capsys.readouterr().out


def test_summary_user_errors_exit_2_with_the_fix(capsys):
    assert cli.main(["summary", "vgg_16"]) == 2
    assert "unknown backbone 'vgg_16'. Did you mean 'vgg16'?" in capsys.readouterr().err
    assert cli.main(["summary", "vgg16", "--input-size", "20"]) == 2
    assert "pass input_shape=(32, 32, 3) or larger" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="filter does not fit"):
        cli.main(["summary", "alexnet", "--strict"])


def run_quietly(code: str):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)


def test_help_version_and_argument_errors_import_neither_keras_nor_tensorflow():
    probe = textwrap.dedent("""
        import sys
        from kcnn import cli
        for argv in (["--help"], ["--version"], ["train", "--help"], ["evaluate"], ["models", "--classes", "x"]):
            try:
                cli.main(argv)
            except SystemExit as exit:
                print("exit", exit.code)
        print("heavy", sorted({m.split(".")[0] for m in sys.modules} & {"keras", "tensorflow", "jax"}))
    """)
    result = run_quietly(probe)
    assert "heavy []" in result.stdout, result.stdout
    assert result.stdout.count("exit 0") == 3 and result.stdout.count("exit 2") == 2
    assert "kcnn 0.1.0" in result.stdout
    # Only argparse's two usage errors on stderr: no TensorFlow start-up lines.
    errors = [line for line in result.stderr.splitlines() if line and not line.startswith("usage:")
              and not line.startswith(" ")]
    assert errors == ["kcnn evaluate: error: the following arguments are required: run_dir",
                      "kcnn models: error: argument --classes: invalid int value: 'x'"]


def test_every_command_and_every_flag_has_help():
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0]
    helps = {choice.dest: choice.help for choice in commands._choices_actions}
    missing = [name for name in commands.choices if not helps.get(name)]
    for name, sub in commands.choices.items():
        assert sub.description, f"kcnn {name} has no description"
        missing += [f"{name} {action.option_strings or action.dest}" for action in sub._actions
                    if not action.help and action.dest != "help"]
    assert missing == []


def test_import_kcnn_is_lazy_and_the_names_still_work():
    result = run_quietly(textwrap.dedent("""
        import sys
        import kcnn
        print("before", "keras" in sys.modules)
        model = kcnn.build("lenet5", num_classes=3)
        import keras
        print("lrn", "kcnn>LocalResponseNormalization" in keras.saving.get_custom_objects())
        print("names", callable(kcnn.assemble), "resnet18" in kcnn.backbones.BACKBONES, kcnn.__version__)
    """))
    assert "before False" in result.stdout and "lrn True" in result.stdout and "names True True 0.1.0" in \
        result.stdout, result.stdout + result.stderr
    with pytest.raises(AttributeError, match="module 'kcnn' has no attribute 'bild'"):
        kcnn.bild


def test_version_matches_pyproject_and_summary_formats_match_the_renderer():
    import re

    from kcnn.analysis.format import FORMATS

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(f"{root}/pyproject.toml") as handle:
        assert re.search(r'^version = "([^"]+)"', handle.read(), re.M).group(1) == kcnn.__version__
    assert cli.SUMMARY_FORMATS == FORMATS


def test_models_lists_matching_architectures_with_parameters_and_paper(capsys):
    assert cli.main(["models", "squeezenet*"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:3] == ["name", "input", "head"]
    row = next(line for line in lines if line.startswith("squeezenet1_0 "))
    # 1,248,424 parameters: the count the summary test pins (Iandola et al. 2016, Table 1 gives 1.25M)
    assert "227x227x3" in row and "fully_conv" in row and "1,248,424" in row and "Iandola" in row
    assert len(lines) == 3  # header, squeezenet1_0, squeezenet1_1
    assert cli.main(["models", "nothing*"]) == 2
    assert capsys.readouterr().err.strip() == ("kcnn models: error: no architecture matches 'nothing*'; run "
                                               "`kcnn models` to list them all")


def test_a_command_that_loads_tensorflow_prints_no_start_up_log_lines():
    result = run_quietly("from kcnn import cli; raise SystemExit(cli.main(['models', 'lenet5', '--no-params']))")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines()[1].startswith("lenet5 ")


def test_command_line_choices_are_the_implementations_own():
    """Choices written out for a fast parser must equal the tuples the code checks against."""
    from pipelines import choices
    from serving.config import VERSION_POLICIES
    from serving.export import IMAGE_DTYPES

    commands = cli.build_parser()._subparsers._group_actions[0].choices

    def options(command, flag):
        return tuple(next(a for a in commands[command]._actions if flag in a.option_strings).choices)

    assert options("export", "--image-dtype") == IMAGE_DTYPES
    assert options("serving-config", "--version-policy") == VERSION_POLICIES
    assert options("evaluate", "--tta") == choices.TTA_MODES
    assert options("augment-preview", "--preset") == choices.AUGMENT_PRESETS
