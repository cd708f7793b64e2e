"""docs/analysis.md's worked examples: every command and snippet runs, and prints what the page shows."""

from __future__ import annotations

import contextlib
import io
import pathlib
import re
import shlex

import pytest

from kcnn import cli
from kcnn.analysis import worked_examples

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "analysis.md"
BLOCK = re.compile(r"```(console|python)\n(.*?)```", re.S)


def blocks(kind: str) -> list[str]:
    return [body for found, body in BLOCK.findall(DOC.read_text()) if found == kind]


def console_commands() -> list[tuple[list[str], str]]:
    """(argv, expected output) for every ``$ command`` in the page's console blocks."""
    commands = []
    for body in blocks("console"):
        for chunk in ("\n" + body).split("\n$ ")[1:]:
            command, _, output = chunk.partition("\n")
            commands.append((shlex.split(command), output))
    return commands


def test_the_page_has_its_examples():
    """Every worked example is saved and then analysed on the page."""
    names = [argv[-1] if argv[0] == "python" else argv[3] for argv, _ in console_commands()]
    assert names == ["notes_models"] + [f"notes_models/{name}.keras" for name, _, _ in worked_examples.EXAMPLES]
    assert len(blocks("python")) == 6


def test_every_console_command_prints_what_the_page_shows(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for argv, expected in console_commands():
        if argv[:3] == ["python", "-m", "kcnn.analysis.worked_examples"]:
            assert worked_examples.main(argv[3:]) == 0
        else:
            assert argv[0] == "kcnn", argv
            assert cli.main(argv[1:]) == 0, argv
        printed = capsys.readouterr().out
        assert printed == expected, " ".join(argv)


@pytest.mark.parametrize("index", range(6))
def test_every_python_snippet_prints_what_its_comments_say(index):
    code = blocks("python")[index]
    expected = [line[len("# => "):] for line in code.splitlines() if line.startswith("# => ")]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"docs/analysis.md python block {index}", "exec"), {})
    assert out.getvalue().splitlines() == expected
