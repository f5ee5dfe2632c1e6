"""The runs-table views' contents (tests/test_mlflow_review.py shows MLflow's UI applying them)."""

import json
from urllib.parse import parse_qs

from crnn.run_views import STARTED_AT_TAG, metric_order, pipeline_runs_view, steps_link


def _state(view: str) -> dict:
    return json.loads(json.loads(view)["state"])


def test_columns_read_time_then_accuracy_then_the_steps_as_they_ran():
    keys = {"step_time_s/register", "accuracy/SVT", "pipeline_time_s", "accuracy/average", "step_time_s/train",
            "accuracy/weighted_average", "accuracy/IC13", "loss", "step_time_s/evaluate-old"}
    assert metric_order(keys, steps=["download", "train", "register"]) == [
        "pipeline_time_s", "accuracy/average", "accuracy/IC13", "accuracy/SVT", "accuracy/weighted_average",
        "step_time_s/train", "step_time_s/register", "step_time_s/evaluate-old"]  # another run's step: last


def test_the_view_shows_its_columns_in_order_with_duration_first():
    state = _state(pipeline_runs_view(["pipeline_time_s", "accuracy/SVT"]))
    assert state["selectedColumns"] == ["attributes.`Version`", "metrics.`pipeline_time_s`", "metrics.`accuracy/SVT`"]
    assert state["columnOrder"] == ["duration", *state["selectedColumns"]]  # left out, the table would hide it
    assert state["searchFilter"] == "tags.`crnn.step` = 'pipeline'" and state["orderByAsc"] is False
    assert set(state["columnWidths"]) == set(state["selectedColumns"][1:])


def test_the_steps_link_filters_one_runs_steps_sorted_by_their_start():
    page, query = steps_link("7", "abc123").split("?", 1)
    assert page == "#/experiments/7/runs"
    assert parse_qs(query) == {"searchFilter": ["tags.`mlflow.parentRunId` = 'abc123'"],
                      "orderByKey": [f"tags.`{STARTED_AT_TAG}`"], "orderByAsc": ["true"]}
