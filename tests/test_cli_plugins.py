"""``crnn pipeline`` is a plugin (entry-point group ``crnn.commands``): the library imports nothing of the pipeline,
and a plugin that cannot load breaks only its own command."""

import re
import sys
from pathlib import Path

from crnn.cli import _parser, main

CRNN = Path(__file__).parent.parent / "crnn"


def test_the_library_imports_nothing_of_the_pipeline():
    imports = re.compile(r"^\s*(?:from|import)\s+(?:pipelines|components)\b", re.MULTILINE)
    assert [path for path in CRNN.rglob("*.py") if imports.search(path.read_text())] == []


def test_the_pipeline_commands_come_from_the_plugin():
    for command in ("run", "compile", "submit"):
        args = _parser().parse_args(["pipeline", command, *(["--host", "h"] if command == "submit" else [])])
        assert args.handler.__module__ == "pipelines.cli"


def test_a_plugin_that_cannot_load_fails_its_command_in_one_line(monkeypatch, capsys):
    monkeypatch.delitem(sys.modules, "pipelines.cli", raising=False)
    monkeypatch.setitem(sys.modules, "kfp", None)  # as if kfp were not installed
    assert main(["catalog"]) == 0
    assert "mjsynth" in capsys.readouterr().out
    assert main(["pipeline", "compile", "--target", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err == ("crnn pipeline: error: plugin pipeline (pipelines.cli:add_commands) failed to load: "
                   "ModuleNotFoundError: No module named 'kfp'\n")
