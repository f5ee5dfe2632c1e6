"""The MLflow UI, in a real headless browser, shows what a reviewer needs of a pipeline run."""

import re

import pytest

from tests.browser import render

pytestmark = pytest.mark.pipeline


def _text(dom: str) -> str:
    """The visible text, roughly: the DOM without its tags."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


def test_the_run_page_renders_the_pipeline_run(tracked_pipeline, tmp_path):
    server, _, summary = tracked_pipeline
    run = server.api("runs/get", run_id=summary["run_id"])["run"]
    url = f"{server.url}/#/experiments/{run['info']['experiment_id']}/runs/{summary['run_id']}"
    screenshot = tmp_path / "run-page.png"
    text = _text(render(url, tmp_path / "profile", screenshot))
    # Rendered by the page's scripts, not in the HTML the server sends: the run's name, its description (the
    # results and the gate), its metrics.
    assert run["info"]["run_name"] in text
    assert "Gate: rejected" in text and "IIIT5K" in text and "evaluate-SVT" in text
    assert "accuracy/average" in text
    assert screenshot.stat().st_size > 20_000  # a page, not a blank window


def test_the_model_version_page_shows_its_tags(tracked_pipeline, tmp_path):
    server, _, summary = tracked_pipeline
    url = f"{server.url}/#/models/crnn/versions/{summary['model_version']}"
    text = _text(render(url, tmp_path / "profile", tmp_path / "version-page.png"))
    assert "gate.decision" in text and "rejected" in text
    assert "accuracy/IIIT5K" in text and "git_commit" in text
