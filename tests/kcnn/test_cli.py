"""The kcnn command line: help, summary in every format, saved models, and user errors."""

from __future__ import annotations

import json
import subprocess
import sys

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
