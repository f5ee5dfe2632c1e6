"""A pipeline run reviewed in the MLflow UI (3.17, headless Chromium): the runs table, the steps in order, the
parent run, the training charts, an evaluate run, the logged model and the registered version, each checked for
what a reviewer must find there, each page's screenshot kept (``$CRNN_TEST_ARTIFACTS/mlflow-review``, by default
``outputs/test-artifacts/mlflow-review``; ``make review-screenshots`` copies two into docs/images/)."""

import json
import re

import pytest
from mlflow.tracking import MlflowClient
from playwright.sync_api import expect

from crnn.run_views import PIPELINE_RUNS_VIEW, SHARED_VIEW_TAG_PREFIX, pipeline_runs_link
from tests.browser import artifacts_dir, browser, open_page

pytestmark = pytest.mark.pipeline
# The UI fills its panels one request after another, slower on 2 loaded cores than Playwright's 5 s default.
expect.set_options(timeout=30_000)


@pytest.fixture(scope="module")
def review(tracked_pipeline):
    """(browser, server, the run tree by step name, the logged model's id, the screenshot folder)."""
    server, _, summary = tracked_pipeline
    client = MlflowClient(server.url)
    parent = client.get_run(summary["run_id"])
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    runs = {"parent": parent} | {run.info.run_name: run for run in children}
    [output] = client.get_run(runs["train"].info.run_id).outputs.model_outputs
    with browser() as launched:
        yield launched, server, runs, output.model_id, artifacts_dir("mlflow-review")


def _run_url(server, run, tab: str = "") -> str:
    return f"{server.url}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}{tab}"


def _seconds(duration: str) -> tuple[float, float]:
    """The runs table's duration ("114ms", "5.2s", "1.3min", "2.0h") in seconds, and half its last digit's
    worth: how far from the run's span it may be."""
    value, unit = re.fullmatch(r"([\d.]+)\s*(ms|s|min|h)", duration.strip()).groups()
    scale = {"ms": 0.001, "s": 1, "min": 60, "h": 3600}[unit]
    decimals = len(value.partition(".")[2])
    return float(value) * scale, scale * 10 ** -decimals / 2 + 0.001


def _cells(page, column: str) -> dict[int, str]:
    """The runs table's cells of one column by row (ag-grid splits a row across pinned and scrolled parts), each
    its last line (a run's name comes after its colour's)."""
    return {int(index): text.strip().split("\n")[-1] for index, text in page.evaluate(
        "column => [...document.querySelectorAll(`[role=row][row-index] [col-id=\"${column}\"]`)]"
        ".map(cell => [cell.closest('[row-index]').getAttribute('row-index'), cell.innerText])", column)}


def test_the_pipeline_runs_view_shows_time_and_accuracy_as_columns(review):
    launched, server, runs, _, shots = review
    parent = runs["parent"]
    view = MlflowClient(server.url).get_experiment(parent.info.experiment_id).tags[
        SHARED_VIEW_TAG_PREFIX + PIPELINE_RUNS_VIEW]
    wanted = ["duration", "attributes.`Version`", "metrics.`pipeline_time_s`", "metrics.`accuracy/average`"]
    assert json.loads(json.loads(view)["state"])["columnOrder"][:4] == wanted
    page = open_page(launched, f"{server.url}/{pipeline_runs_link(parent.info.experiment_id)}",
                     f"text={parent.info.run_name}")
    expect(page.locator("[col-id='metrics.`accuracy/average`']").first).to_be_visible()
    # As shown, left to right: ag-grid's DOM order is the order it rendered the cells in, not theirs on screen.
    headers = page.evaluate("[...document.querySelectorAll('[role=columnheader][col-id]')]"
                            ".sort((a, b) => a.getBoundingClientRect().left - b.getBoundingClientRect().left)"
                            ".map(header => header.getAttribute('col-id'))")
    # Duration, the commit, the pipeline's time, then the accuracies: in that order, without opening a menu.
    assert [column for column in headers if column in wanted] == wanted
    assert {"metrics.`accuracy/HeldOut`", "metrics.`accuracy/IIIT5K`"} <= set(headers)
    names = _cells(page, "attributes.`Run Name`")
    assert list(names.values()) == [parent.info.run_name]  # the pipeline runs alone, not their steps
    assert float(_cells(page, "metrics.`pipeline_time_s`")[0]) == parent.data.metrics["pipeline_time_s"]
    assert parent.data.tags["mlflow.source.git.commit"].startswith(_cells(page, "attributes.`Version`")[0])
    page.screenshot(path=shots / "runs-table.png", clip={"x": 0, "y": 0, "width": 1800, "height": 400})  # one row


def test_the_steps_are_listed_in_the_order_they_ran_with_their_durations(review):
    launched, server, runs, _, shots = review
    note = runs["parent"].data.tags["mlflow.note.content"]
    link = re.search(r"\[in the runs table\]\((#/experiments/[^)]+)\)", note).group(1)  # the description's link
    page = open_page(launched, f"{server.url}/{link}", "text=register")
    expect(page.locator("[col-id=duration]").nth(len(runs) - 1)).to_be_visible()
    names = [name for _, name in sorted(_cells(page, "attributes.`Run Name`").items())]
    assert sorted(names) == sorted(set(runs) - {"parent"})
    steps = [runs[name] for name in names]
    starts = [run.info.start_time for run in steps]
    assert starts == sorted(starts)  # (the evaluate tasks start together: their own order is the clock's)
    assert names[0] == "download" and names[-1] == "register"
    assert names.index("convert-merge") < names.index("train") < min(
        index for index, name in enumerate(names) if name.startswith("evaluate-"))
    durations = _cells(page, "duration")
    for row, run in enumerate(steps):  # the run's span, as the table rounds it, holds the step's own time
        span = (run.info.end_time - run.info.start_time) / 1000
        shown, tolerance = _seconds(durations[row])
        assert shown == pytest.approx(span, abs=tolerance), run.info.run_name
        assert span >= run.data.metrics["step_time_s"] - 0.01, run.info.run_name
    page.screenshot(path=shots / "steps.png")


def test_the_parent_run_says_where_each_score_came_from(review):
    launched, server, runs, model_id, shots = review
    parent = runs["parent"]
    page = open_page(launched, _run_url(server, parent), "text=Description")
    page.get_by_text("Show more").first.click()
    description = page.locator("table").first
    heldout = parent.data.tags["crnn.manifest_sha256/HeldOut"]
    expect(description).to_contain_text("HeldOut (synthetic)")
    expect(description).to_contain_text(f"synthetic, manifest {heldout[:16]}")
    version = parent.data.tags["crnn.model_version"]
    expect(page.locator(f"a[href='#/models/crnn/versions/{version}']").first).to_be_visible()
    expect(page.get_by_text("mjsynth/train").first).to_be_visible()  # the Datasets panel
    expect(page.locator(f"a[href*='/models/{model_id}']").first).to_be_visible()  # its Logged models
    page.screenshot(path=shots / "parent-run.png", full_page=True)


def test_the_train_run_charts_start_with_the_training_curves_and_hold_a_validation_curve(review):
    launched, server, runs, _, shots = review
    train = runs["train"]
    page = open_page(launched, _run_url(server, train, "/model-metrics"), "text=val_accuracy")
    sections = page.locator("[data-testid=experiment-view-compare-runs-section-header]")
    expect(sections.first).to_contain_text("Model metrics")  # loss, learning rate, validation...: first
    history = MlflowClient(server.url).get_metric_history(train.info.run_id, "val_accuracy")
    assert len(history) >= 2  # a curve: one point at every checkpoint
    card = page.locator("[data-testid=experiment-view-compare-runs-card]", has_text="val_accuracy").first
    expect(card.locator("path.point")).to_have_count(len(history))
    for key in ("loss", "learning_rate", "val_loss"):
        expect(page.locator("[data-testid=experiment-view-compare-runs-card]", has_text=key).first).to_be_visible()
    page.screenshot(path=shots / "train-charts.png")


def test_an_evaluate_run_names_the_model_it_scored_and_its_data(review):
    launched, server, runs, model_id, shots = review
    evaluate = runs["evaluate-SVT"]
    page = open_page(launched, _run_url(server, evaluate), "text=Description")
    manifest = evaluate.data.params["manifest_sha256/SVT"]
    expect(page.locator("table").first).to_contain_text("SVT (synthetic)")
    expect(page.locator("table").first).to_contain_text(f"synthetic, manifest {manifest[:16]}")
    expect(page.locator(f"a[href*='/models/{model_id}']").first).to_be_visible()
    expect(page.get_by_text(f"SVT ({manifest[:16]})").first).to_be_visible()  # the Datasets panel
    page.screenshot(path=shots / "evaluate-run.png", full_page=True)


def test_the_logged_model_holds_its_scores_parameters_and_source_run(review):
    launched, server, runs, model_id, shots = review
    train = runs["train"]
    page = open_page(launched, f"{server.url}/#/experiments/{train.info.experiment_id}/models/{model_id}",
                     "text=Source run")
    expect(page.locator(f"a[href$='/runs/{train.info.run_id}']").first).to_have_text("train")
    for step in ("evaluate-SVT", "evaluate-HeldOut"):
        expect(page.locator(f"a[href$='/runs/{runs[step].info.run_id}']").first).to_be_visible()
    expect(page.get_by_text("accuracy/HeldOut").first).to_be_visible()
    expect(page.get_by_text("model.lstm_units").first).to_be_visible()
    page.screenshot(path=shots / "logged-model.png", full_page=True)


def test_the_model_version_links_its_source_run_and_model(review):
    launched, server, runs, model_id, shots = review
    train, version = runs["train"], runs["parent"].data.tags["crnn.model_version"]
    page = open_page(launched, f"{server.url}/#/models/crnn/versions/{version}", "text=Source Run")
    expect(page.locator(f"a[href*='/runs/{train.info.run_id}']").first).to_have_text("train")
    expect(page.locator(f"a[href*='/models/{model_id}']").first).to_be_visible()
    expect(page.get_by_text("Gate: rejected").first).to_be_visible()
    expect(page.get_by_text("IC13 (synthetic)").first).to_be_visible()  # its scores with their data's source
    expect(page.get_by_text("Inputs (1)")).to_be_visible()  # the signature
    page.screenshot(path=shots / "model-version.png")


def test_the_registry_list_shows_the_model_and_its_aliases_plainly(review):
    launched, server, _, _, shots = review
    page = open_page(launched, f"{server.url}/#/models", "text=Registered Models")
    row = page.locator("tr, [role=row]", has_text="candidate").first
    expect(row).to_contain_text("crnn")
    expect(page.get_by_text("```")).to_have_count(0)  # a description's first line, never a code fence
    expect(page.get_by_text("gate-lock")).to_have_count(0)  # the gate's lock is gone once it decided
    page.screenshot(path=shots / "registry.png")
