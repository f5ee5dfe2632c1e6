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


def test_pipeline_run_passes_only_the_options_given(monkeypatch, tmp_path):
    """What ``crnn pipeline run`` leaves out keeps the pipeline's default; what it is given reaches the pipeline."""
    import pipelines.local_run

    calls = []
    monkeypatch.setattr(pipelines.local_run, "run_locally", lambda out, **kwargs: calls.append((out, kwargs)))
    assert main(["pipeline", "run", "--out", str(tmp_path)]) == 0
    assert main(["pipeline", "run", "--out", str(tmp_path), "--preset", "tiny", "--steps", "3", "--seed", "7",
                 "--dataset", "IIIT5K", "--benchmark", "IIIT5K/test", "--mirror", "s3://m"]) == 0
    assert calls == [(tmp_path, {"tracking_uri": None}),
                     (tmp_path, {"tracking_uri": None, "preset": "tiny", "steps": 3, "seed": 7, "mirror": "s3://m",
                                 "datasets": ["IIIT5K"], "benchmarks": ["IIIT5K/test"]})]


def test_the_pipeline_defaults_are_what_make_run_trains_with():
    """``make run`` passes no options, so the pipeline's own defaults are the local run's."""
    import inspect

    from crnn.config import PIPELINE_PRESET
    from crnn.data.synthetic import SyntheticSpec
    from pipelines.crnn_pipeline import crnn_pipeline

    defaults = {name: p.default for name, p in inspect.signature(crnn_pipeline.pipeline_func).parameters.items()}
    assert (defaults["preset"], defaults["steps"], defaults["seed"], defaults["mirror"]) == (PIPELINE_PRESET, 0, 0, "")
    assert (defaults["train_size"], defaults["test_size"]) == (SyntheticSpec.train_size, SyntheticSpec.test_size)
